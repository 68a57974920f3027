# Helpers shared by the phigate policies: the FHIR operations a request performs and the
# principal's patient launch context. See README.md for the input schema (input.v = 1).
package phigate.authz

fhir := input.request.fhir

# A batch or transaction is judged entry by entry: one foreign entry refuses the whole Bundle.
ops := fhir.entries if {
	fhir.interaction in {"batch", "transaction"}
} else := [fhir] if {
	fhir
}

# Search parameters the gateway could not resolve to patients (chains, _has, _include, ...).
unresolved contains name if {
	some op in ops
	some name in op.unresolved
}

unresolved contains name if {
	some name in fhir.unresolved
}

# SMART patient launch context, else a fhirUser that is a Patient: a patient-facing app.
context_patient := input.principal.patient if {
	input.principal.patient
} else := substring(fu, 8, -1) if {
	fu := input.principal.fhir_user
	startswith(fu, "Patient/")
}

searching if fhir.interaction in {"search-type", "search-system", "search-compartment", "history"}
