package phigate.tenant_test

import data.phigate.authz
import data.phigate.fixtures as f

test_own_tenant_patient_allowed if {
	not "tenant_mismatch" in authz.deny with input as f.get(f.clinician_a, f.read_patient("a-p1"))
}

test_other_tenant_patient_denied if {
	d := authz.decision with input as f.get(f.clinician_a, f.read_patient("b-p1"))
	not d.allow
	"tenant_mismatch" in d.reasons
}

test_addressed_tenant_mismatch_denied if {
	i := f.with_request(f.get(f.clinician_b, f.search("Observation", ["b-p1"])), {"tenant": "tenant-a"})
	"tenant_mismatch" in authz.deny with input as i
}

test_principal_without_tenant_denied if {
	base := object.remove(f.get(f.clinician_a, f.read_patient("a-p1")), ["principal"])
	i := object.union(base, {"principal": object.remove(f.clinician_a, ["tenant"])})
	"tenant_mismatch" in authz.deny with input as i
}

test_unknown_tenant_denied if {
	p := object.union(f.clinician_a, {"tenant": "tenant-z"})
	"tenant_mismatch" in authz.deny with input as f.get(p, f.read_patient("a-p1"))
}

test_break_glass_never_crosses_tenants if {
	i := f.with_request(f.get(f.er_doctor_a, f.read_patient("b-p1")), {"break_glass_reason": "cardiac arrest"})
	d := authz.decision with input as i
	not d.allow
	"tenant_mismatch" in d.reasons
}
