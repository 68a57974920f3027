# Helpers shared by the phigate policies: the FHIR operations a request performs and the
# principal's patient launch context. See README.md for the input schema (input.v = 1) and for
# why these policies read `input` directly and keep helper rules few.
package phigate.authz

# A batch or transaction is judged entry by entry: one foreign entry refuses the whole Bundle.
ops := input.request.fhir.entries if {
	input.request.fhir.interaction in {"batch", "transaction"}
} else := [input.request.fhir] if {
	input.request.fhir
}

# SMART patient launch context, else a fhirUser that is a Patient: a patient-facing app.
context_patient := input.principal.patient if {
	input.principal.patient
} else := substring(fu, 8, -1) if {
	fu := input.principal.fhir_user
	startswith(fu, "Patient/")
}
