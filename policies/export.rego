# Bulk data ($export): only backend services (`system/` scopes with read on every type), and only
# asynchronously (`Prefer: respond-async`, FHIR Bulk Data kick-off request).
package phigate.authz

deny contains "scope_insufficient" if {
	some op in ops
	op.operation == "export"
	not system_read
}

deny contains "export_requires_async" if {
	some op in ops
	op.operation == "export"
	not "respond-async" in input.request.prefer
}

system_read if {
	some raw in input.principal.scopes
	startswith(raw, "system/*.")
	not contains(raw, "?")
	"r" in data.smart.permissions[substring(raw, 9, -1)]
}
