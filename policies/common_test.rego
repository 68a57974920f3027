package phigate.common_test

import data.phigate.authz
import data.phigate.fixtures as f

test_batch_ops_are_its_entries if {
	batch := object.union(f.op("batch", null, []), {"entries": [f.read_patient("a-p1"), f.search("Observation", [])]})
	count(authz.ops) == 2 with input as f.req(f.clinician_a, "POST", batch)
}

test_single_request_is_one_op if {
	count(authz.ops) == 1 with input as f.get(f.clinician_a, f.read_patient("a-p1"))
}

test_context_patient_from_fhir_user if {
	p := {"sub": "x", "tenant": "tenant-a", "fhir_user": "Patient/a-p2"}
	authz.context_patient == "a-p2" with input as f.get(p, f.read_patient("a-p2"))
}

test_practitioner_fhir_user_is_no_patient_context if {
	p := {"sub": "x", "tenant": "tenant-a", "fhir_user": "Practitioner/1"}
	not authz.context_patient with input as f.get(p, f.read_patient("a-p2"))
}
