# Patient access (HIPAA minimum necessary): who may touch which patients.
#   patient_context  a patient-facing app (SMART `patient` context or fhirUser Patient/X): that patient
#   care_team        roles granting `care_team`: the patients in data.care_teams[tenant][sub]
#   tenant           roles granting `tenant`, and backend services (`system/` scopes): the tenant's patients
#   none             nobody's data
# Break-glass widens any mode to the tenant's patients.
#
# Tenant-wide access is judged patient by patient through data.patients[p].tenant and never by
# listing the tenant's patients: a tenant holds millions of them, and a decision must not grow
# with the tenant (a set of 50,000 made one decision take 90 ms, past the evaluation limit). Its
# responses are checked by tenant (obligation `permitted_tenant`), and its searches are not
# narrowed; a restricted principal is narrowed to, and checked against, its few patients.
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

# Every patient of the tenant may be touched (tenant-wide roles, backend services, break-glass).
tenant_scoped if break_glass

tenant_scoped if mode == "tenant"

# The patients a principal that is not tenant-scoped may touch.
effective := {context_patient} if {
	mode == "patient_context"
} else := care_team if {
	mode == "care_team"
} else := set()

# Restricted principals are held to the patients they can name.
restricted if {
	mode in {"patient_context", "care_team"}
	not break_glass
}

deny contains "patient_not_permitted" if {
	not tenant_scoped
	some p in input.request.patients
	not p in effective
}

# A patient the data does not know belongs to no tenant, so to no tenant-scoped principal.
deny contains "patient_not_permitted" if {
	tenant_scoped
	some p in input.request.patients
	not data.patients[p].tenant == input.principal.tenant
}

deny contains "patient_not_permitted" if {
	not tenant_scoped
	count(effective) == 0
	patient_data
}

# A chained or _has parameter can reach patients nobody named: refused for restricted principals.
# The rare condition is tested first, so the common request stops at the first line.
deny contains r if {
	some op in ops
	count(op.unresolved) > 0
	restricted
	some r in ["patient_not_permitted", "unresolved_params"]
}

deny contains r if {
	count(input.request.fhir.unresolved) > 0
	restricted
	some r in ["patient_not_permitted", "unresolved_params"]
}

deny contains "patient_param_required" if refuse_unnarrowed

# A conditional update, patch or delete (`DELETE Observation?code=x`) names no resource: the
# server picks its targets by search criteria among every patient's records, and no narrowing
# applies to a write. Refused for restricted principals.
deny contains r if {
	some op in ops
	op.interaction in {"update", "patch", "delete"}
	not op.id
	patient_type(op.resource_type)
	restricted
	some r in ["conditional_write", "patient_not_permitted"]
}

# Resources of these types belong to a patient: the R4 Patient compartment, and the few types
# outside it that name their patient (data.fhir.patient_linked: a Device affixed to her).
patient_type(t) if data.fhir.patient_compartment[t]

patient_type(t) if data.fhir.patient_linked[t]

# Whether the request reaches patient data at all (for principals who may reach none).
patient_data if count(input.request.patients) > 0

patient_data if {
	some op in ops
	patient_type(op.resource_type)
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

# A compartment-type search without a patient: narrowed to the permitted patients, or refused
# when the tenant says so.
needs_narrowing if {
	input.request.fhir.interaction == "search-type"
	count(input.request.patients) == 0
	patient_type(input.request.fhir.resource_type)
}

refuse_unnarrowed if {
	needs_narrowing
	restricted
	data.tenants[input.principal.tenant].restricted_search == "refuse"
}

# System-wide searches and type-level history cannot be narrowed by a patient parameter. A
# further page of a search the server keeps (`continuation`, HAPI's `_getpages` links) is not a
# new search: the search it continues was judged (and narrowed) when it was made, and this page
# is verified like any result, entry by entry.
refuse_unnarrowed if {
	input.request.fhir.interaction in {"search-system", "history"}
	count(input.request.patients) == 0
	not input.request.fhir.id
	not input.request.fhir.continuation
	restricted
}

care_team contains p if some p in data.care_teams[input.principal.tenant][input.principal.sub]

tenant_wide if "tenant" in role_access

tenant_wide if {
	some s in input.principal.scopes
	startswith(s, "system/")
}
