# Sensitive records (HL7 security labels). FHIR servers mark restricted or sensitive resources
# with `meta.security` codings: confidentiality `R` (restricted) or `V` (very restricted),
# sensitivity codes such as `PSY` (psychiatry), `ETH` (substance use, 42 CFR Part 2), `HIV`.
# data.security_labels lists the labels this deployment enforces; the decision says which of them
# the principal is cleared for (`cleared_labels`), and the gateway withholds the others wherever
# it verifies responses: such entries are left out of search results (an outcome entry says
# results were withheld), anything else carrying one is refused with 403
# `security_label_not_permitted`, and so is a write to a stored record carrying one. A patient
# can carry labels too (data.patients[id].security, a restricted or VIP chart): every record
# naming her then counts as carrying them for principals who reach her through their tenant
# (her care team and her own app reach her by name, and see her chart).
#
# Cleared: the labels a role lists in data.role_grants[role].labels; for the patient's own app,
# the labels marked `patient_access`; under break-glass, every label (break-glass is alerted).
package phigate.authz

cleared_labels contains l if {
	some r in input.principal.roles
	some l in data.role_grants[r].labels
}

cleared_labels contains l if {
	context_patient
	some l, label in data.security_labels
	label.patient_access
}

cleared_labels contains l if {
	break_glass
	some l, _ in data.security_labels
}
