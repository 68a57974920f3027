# Patient access (HIPAA minimum necessary): who may touch which patients.
#   patient_context  a patient-facing app (SMART `patient` context or fhirUser Patient/X): that patient
#   care_team        roles granting `care_team`: the patients in data.care_teams[tenant][sub]
#   tenant           roles granting `tenant`, and backend services (`system/` scopes): the tenant's patients
#   none             nobody's data
# Break-glass widens any mode to the tenant's patients.
package phigate.authz

role_access contains a if {
	some r in input.principal.roles
	a := data.role_grants[r].patient_access
}

default mode := "none"

mode := "patient_context" if {
	context_patient
} else := "tenant" if {
	tenant_wide
} else := "care_team" if {
	"care_team" in role_access
}

tenant_patients := {p | some p, info in data.patients; info.tenant == input.principal.tenant}

# The patients this request may touch.
effective := tenant_patients if {
	break_glass
} else := {context_patient} if {
	mode == "patient_context"
} else := care_team if {
	mode == "care_team"
} else := tenant_patients if {
	mode == "tenant"
} else := set()

# Restricted principals are held to the patients they can name.
restricted if {
	mode in {"patient_context", "care_team"}
	not break_glass
}

deny contains "patient_not_permitted" if {
	some p in input.request.patients
	not p in effective
}

deny contains "patient_not_permitted" if {
	count(effective) == 0
	patient_data
}

# A chained or _has parameter can reach patients nobody named: refused for restricted principals.
deny contains r if {
	restricted
	unresolved_params
	some r in ["patient_not_permitted", "unresolved_params"]
}

deny contains "patient_param_required" if refuse_unnarrowed

# A conditional update, patch or delete (`DELETE Observation?code=x`) names no resource: the
# server picks its targets by search criteria among every patient's records, and no narrowing
# applies to a write. Refused for restricted principals.
deny contains r if {
	restricted
	conditional_write
	some r in ["conditional_write", "patient_not_permitted"]
}

conditional_write if {
	some op in ops
	op.interaction in {"update", "patch", "delete"}
	not op.id
	data.fhir.patient_compartment[op.resource_type]
}

# Whether the request reaches patient data at all (for principals who may reach none).
patient_data if count(input.request.patients) > 0

patient_data if {
	some op in ops
	data.fhir.patient_compartment[op.resource_type]
}

patient_data if {
	some op in ops
	not op.resource_type
	op.interaction in {"search-system", "history"}
}

patient_data if {
	some op in ops
	op.operation in {"everything", "export"}
}

# Search parameters the gateway could not resolve to patients (chains, _has, _include, ...).
unresolved_params if {
	some op in ops
	count(op.unresolved) > 0
}

unresolved_params if count(input.request.fhir.unresolved) > 0

# A compartment-type search without a patient: narrowed to the permitted patients, or refused
# when the tenant says so.
needs_narrowing if {
	input.request.fhir.interaction == "search-type"
	count(input.request.patients) == 0
	data.fhir.patient_compartment[input.request.fhir.resource_type]
}

refuse_unnarrowed if {
	needs_narrowing
	restricted
	data.tenants[input.principal.tenant].restricted_search == "refuse"
}

# System-wide searches and type-level history cannot be narrowed by a patient parameter.
refuse_unnarrowed if {
	input.request.fhir.interaction in {"search-system", "history"}
	count(input.request.patients) == 0
	not input.request.fhir.id
	restricted
}

care_team contains p if some p in data.care_teams[input.principal.tenant][input.principal.sub]

tenant_wide if "tenant" in role_access

tenant_wide if {
	some s in input.principal.scopes
	startswith(s, "system/")
}
