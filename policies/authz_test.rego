package phigate.authz_test

import data.phigate.authz
import data.phigate.fixtures as f

test_care_team_read_allowed if {
	d := authz.decision with input as f.get(f.clinician_a, f.read_patient("a-p1"))
	d.allow
	d.obligations.permitted_patients == ["a-p1", "a-p2"]
}

test_default_deny_without_principal if {
	d := authz.decision with input as {"v": 1, "request": {"method": "GET", "route": "fhir", "patients": [], "prefer": [], "fhir": f.read_patient("a-p1")}}
	not d.allow
	"unauthenticated" in d.reasons
}

test_non_fhir_route_without_grant_denied if {
	d := authz.decision with input as {"v": 1, "principal": f.clinician_a, "request": {"method": "GET", "route": "admin", "patients": [], "prefer": []}}
	not d.allow
	d.reasons == ["no_grant"]
}

test_non_fhir_route_with_role_allowed if {
	d := authz.decision with input as {"v": 1, "principal": f.admin_a, "request": {"method": "GET", "route": "admin", "patients": [], "prefer": []}}
		with data.routes as {"admin": {"roles": ["admin"]}}
	d.allow
}

test_unknown_input_version_denied if {
	d := authz.decision with input as object.union(f.get(f.clinician_a, f.read_patient("a-p1")), {"v": 2})
	not d.allow
}

test_capabilities_allowed_for_any_principal if {
	d := authz.decision with input as f.get(f.admin_a, f.op("capabilities", null, []))
	d.allow
}

anonymous(method, fhir) := {"v": 1, "request": {"method": method, "route": "fhir", "patients": [], "prefer": [], "fhir": fhir}}

test_capabilities_public_without_principal if {
	d := authz.decision with input as anonymous("GET", f.op("capabilities", null, []))
	d.allow
	"public_discovery" in d.reasons
	d.obligations.permitted_patients == null
}

test_only_reading_capabilities_is_public if {
	d := authz.decision with input as anonymous("POST", f.op("capabilities", null, []))
	not d.allow
	d.reasons == ["unauthenticated"]
	e := authz.decision with input as object.union(anonymous("GET", f.op("capabilities", null, [])), {"v": 2})
	not e.allow
}

test_search_gets_page_size_cap if {
	d := authz.decision with input as f.get(f.clinician_a, f.search("Observation", ["a-p1"]))
	d.allow
	d.obligations.max_page_size == 100
}
