# Patient access (HIPAA minimum necessary): who may touch which patients.
#   patient_context  a patient-facing app (SMART `patient` context or fhirUser Patient/X): that patient
#   care_team        roles granting `care_team`: the patients in data.care_teams[tenant][sub]
#   tenant           roles granting `tenant`, and backend services (`system/` scopes): the tenant's patients
#   none             nobody's data
# Break-glass widens care_team / patient_context to the tenant's patients.
package phigate.authz

role_access contains a if {
	some r in input.principal.roles
	a := data.role_grants[r].patient_access
}

system_client if {
	some s in input.principal.scopes
	startswith(s, "system/")
}

tenant_wide if "tenant" in role_access

tenant_wide if system_client

default mode := "none"

mode := "patient_context" if {
	context_patient
} else := "tenant" if {
	tenant_wide
} else := "care_team" if {
	"care_team" in role_access
}

tenant_patients contains p if {
	some p, info in data.patients
	info.tenant == principal_tenant
}

care_team contains p if some p in data.care_teams[principal_tenant][input.principal.sub]

permitted := {context_patient} if {
	mode == "patient_context"
} else := care_team if {
	mode == "care_team"
} else := tenant_patients if {
	mode == "tenant"
} else := set()

effective := tenant_patients if {
	break_glass_active
} else := permitted

# Restricted principals are held to the patients they can name.
restricted if {
	mode in {"patient_context", "care_team"}
	not break_glass_active
}

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

foreign contains p if {
	some p in input.request.patients
	not p in effective
}

patient_deny contains "patient_not_permitted" if count(foreign) > 0

patient_deny contains "patient_not_permitted" if {
	patient_data
	count(effective) == 0
}

# A chained or _has parameter can reach patients nobody named: refused for restricted principals.
patient_deny contains "patient_not_permitted" if {
	restricted
	count(unresolved) > 0
}

patient_deny contains "unresolved_params" if {
	restricted
	count(unresolved) > 0
}

# A compartment-type search without a patient: narrowed to the permitted patients, or refused
# when the tenant says so.
needs_narrowing if {
	fhir.interaction == "search-type"
	data.fhir.patient_compartment[fhir.resource_type]
	count(input.request.patients) == 0
}

refuse_unnarrowed if {
	needs_narrowing
	restricted
	data.tenants[principal_tenant].restricted_search == "refuse"
}

# System-wide searches and type-level history cannot be narrowed by a patient parameter.
refuse_unnarrowed if {
	restricted
	fhir.interaction in {"search-system", "history"}
	not fhir.id
	count(input.request.patients) == 0
}

patient_deny contains "patient_param_required" if refuse_unnarrowed

# A conditional update, patch or delete (`DELETE Observation?code=x`) names no resource: the
# server picks its targets by search criteria among every patient's records, and no narrowing
# applies to a write. Refused for restricted principals.
conditional_write if {
	some op in ops
	op.interaction in {"update", "patch", "delete"}
	not op.id
	data.fhir.patient_compartment[op.resource_type]
}

patient_deny contains "patient_not_permitted" if {
	restricted
	conditional_write
}

patient_deny contains "conditional_write" if {
	restricted
	conditional_write
}

narrow := sort(effective) if {
	needs_narrowing
	not refuse_unnarrowed
}

# Every FHIR response is checked against this set (read-by-id, searches, _include leaks).
verify_patients := sort(effective) if {
	fhir
	not fhir.interaction == "capabilities"
	not fhir.operation == "export"
}
