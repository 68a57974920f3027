package phigate.scopes_test

import data.phigate.authz
import data.phigate.fixtures as f

test_v2_letters_parsed if {
	data.smart.permissions.rs == ["r", "s"]
	data.smart.permissions.cruds == ["c", "r", "u", "d", "s"]
	not data.smart.permissions.sr
	not data.smart.permissions.x
}

test_v1_read_allows_read if {
	p := object.union(f.clinician_a, {"scopes": ["user/Patient.read"]})
	d := authz.decision with input as f.get(p, f.read_patient("a-p1"))
	d.allow
}

test_scope_for_other_type_denied if {
	p := object.union(f.clinician_a, {"scopes": ["user/Observation.rs"]})
	d := authz.decision with input as f.get(p, f.read_patient("a-p1"))
	not d.allow
	d.reasons == ["scope_insufficient"]
}

test_no_scopes_denied if {
	p := object.union(f.clinician_a, {"scopes": []})
	d := authz.decision with input as f.get(p, f.read_patient("a-p1"))
	"scope_insufficient" in d.reasons
}

test_write_needs_write_scope if {
	create := f.op("create", "Observation", ["a-p1"])
	d := authz.decision with input as f.req(f.clinician_a, "POST", create)
	not d.allow
	"scope_insufficient" in d.reasons
	e := authz.decision with input as f.req(f.writer_a, "POST", create)
	e.allow
}

test_v1_write_scope_allows_delete if {
	p := object.union(f.clinician_a, {"scopes": ["user/Observation.write"]})
	del := object.union(f.op("delete", "Observation", ["a-p1"]), {"id": "o1"})
	d := authz.decision with input as f.req(p, "DELETE", del)
	d.allow
}

test_patient_scope_needs_patient_context if {
	p := object.union(f.clinician_a, {"scopes": ["patient/*.read"]})
	d := authz.decision with input as f.get(p, f.read_patient("a-p1"))
	"scope_insufficient" in d.reasons
}

test_granular_scope_with_query_grants_nothing if {
	p := object.union(f.clinician_a, {"scopes": ["user/Observation.rs?category=laboratory"]})
	d := authz.decision with input as f.get(p, f.search("Observation", ["a-p1"]))
	"scope_insufficient" in d.reasons
}

test_unknown_interaction_denied if {
	d := authz.decision with input as f.get(f.clinician_a, f.op("teleport", "Patient", []))
	not d.allow
	"unknown_interaction" in d.reasons
}
