package phigate.labels_test

import data.phigate.authz
import data.phigate.fixtures as f

psy := "http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY"

very_restricted := "http://terminology.hl7.org/CodeSystem/v3-Confidentiality|V"

psychiatrist_a := object.union(f.clinician_a, {"roles": ["psychiatrist"]})

test_a_clinician_is_cleared_for_no_label if {
	d := authz.decision with input as f.get(f.clinician_a, f.read_patient("a-p1"))
	d.allow
	count(d.obligations.cleared_labels) == 0
}

test_a_role_clears_the_labels_it_lists if {
	d := authz.decision with input as f.get(psychiatrist_a, f.read_patient("a-p1"))
	d.allow
	d.obligations.cleared_labels == {psy}
}

test_labels_cleared_by_several_roles_add_up if {
	p := object.union(f.clinician_a, {"roles": ["clinician", "psychiatrist", "hiv_clinic"]})
	grants := object.union(data.role_grants, {"hiv_clinic": {"patient_access": "care_team", "labels": ["urn:x|HIV"]}})
	d := authz.decision with input as f.get(p, f.read_patient("a-p1")) with data.role_grants as grants
	d.obligations.cleared_labels == {psy, "urn:x|HIV"}
}

test_the_patients_own_app_sees_the_labels_open_to_patients if {
	d := authz.decision with input as f.get(f.patient_app, f.read_patient("a-p3"))
	d.allow
	psy in d.obligations.cleared_labels
	not very_restricted in d.obligations.cleared_labels
}

test_break_glass_clears_every_label if {
	i := f.with_request(f.get(f.er_doctor_a, f.read_patient("a-p5")), {"break_glass_reason": "unconscious patient in ED"})
	d := authz.decision with input as i
	d.allow
	very_restricted in d.obligations.cleared_labels
	count(d.obligations.cleared_labels) == count(data.security_labels)
}

test_the_break_glass_role_alone_clears_nothing if {
	d := authz.decision with input as f.get(f.er_doctor_a, f.read_patient("a-p1"))
	count(d.obligations.cleared_labels) == 0
}
