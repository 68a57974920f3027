# Shared test inputs (a test-only module: loaded with the tests, never served).
package phigate.fixtures

clinician_a := {"sub": "clinician_a", "tenant": "tenant-a", "roles": ["clinician"], "scopes": ["user/*.rs"]}

clinician_b := {"sub": "clinician_b", "tenant": "tenant-b", "roles": ["clinician"], "scopes": ["user/*.rs"]}

writer_a := {"sub": "clinician_a", "tenant": "tenant-a", "roles": ["clinician"], "scopes": ["user/*.cruds"]}

er_doctor_a := {"sub": "er_doctor_a", "tenant": "tenant-a", "roles": ["clinician", "break_glass"], "scopes": ["user/*.rs"]}

scraper_a := {"sub": "scraper_a", "tenant": "tenant-a", "roles": ["analyst"], "scopes": ["user/*.read"]}

admin_a := {"sub": "admin_a", "tenant": "tenant-a", "roles": ["admin"], "scopes": ["user/*.read"]}

patient_app := {"sub": "app_user", "tenant": "tenant-a", "roles": [], "patient": "a-p3", "scopes": ["patient/*.read"]}

bulk_client := {"sub": "bulk", "tenant": "tenant-a", "roles": [], "scopes": ["system/*.read"]}

op(interaction, type, patients) := {"interaction": interaction, "resource_type": type, "patients": patients, "unresolved": [], "entries": []}

read_patient(id) := object.union(op("read", "Patient", [id]), {"id": id})

search(type, patients) := op("search-type", type, patients)

req(principal, method, fhir) := {
	"v": 1,
	"principal": principal,
	"request": {
		"method": method, "route": "fhir", "tenant": principal.tenant,
		"fhir": fhir, "patients": fhir.patients, "prefer": [],
	},
}

get(principal, fhir) := req(principal, "GET", fhir)

with_request(input_doc, extra) := object.union(input_doc, {"request": object.union(input_doc.request, extra)})
