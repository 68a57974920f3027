package phigate.break_glass_test

import data.phigate.authz
import data.phigate.fixtures as f

emergency(principal, patient) := f.with_request(f.get(principal, f.read_patient(patient)), {"break_glass_reason": "unconscious patient in ED"})

test_break_glass_role_reaches_patient_outside_care_team if {
	d := authz.decision with input as emergency(f.er_doctor_a, "a-p5")
	d.allow
	d.obligations.break_glass == true
	d.obligations.alert == "break_glass_access"
	"break_glass" in d.reasons
}

test_break_glass_without_role_denied if {
	d := authz.decision with input as emergency(f.clinician_a, "a-p5")
	not d.allow
	"break_glass_not_permitted" in d.reasons
}

test_break_glass_role_without_reason_stays_in_care_team if {
	d := authz.decision with input as f.get(f.er_doctor_a, f.read_patient("a-p5"))
	not d.allow
	d.reasons == ["patient_not_permitted"]
}

test_blank_reason_denied if {
	i := f.with_request(f.get(f.er_doctor_a, f.read_patient("a-p5")), {"break_glass_reason": "   "})
	d := authz.decision with input as i
	"break_glass_not_permitted" in d.reasons
}

test_break_glass_role_is_configurable if {
	d := authz.decision with input as emergency(f.er_doctor_a, "a-p5")
		with data.gateway.break_glass_role as "emergency"
	not d.allow
}

test_break_glass_response_checked_by_tenant if {
	d := authz.decision with input as emergency(f.er_doctor_a, "a-p5")
	d.obligations.permitted_tenant == "tenant-a"
	d.obligations.permitted_patients == null
}
