# Bulk data ($export): only backend services (`system/` scopes with read on every type), and only
# asynchronously (`Prefer: respond-async`, FHIR Bulk Data kick-off request).
package phigate.authz

# One pass over the ops finds an export; what is wrong with it is then listed below.
deny contains r if {
	some op in ops
	op.operation == "export"
	some r in export_refusals
}

export_refusals contains "scope_insufficient" if not system_read

export_refusals contains "export_requires_async" if not "respond-async" in input.request.prefer

system_read if {
	some raw in input.principal.scopes
	startswith(raw, "system/*.")
	not contains(raw, "?")
	"r" in data.smart.permissions[substring(raw, 9, -1)]
}
