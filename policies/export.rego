# Bulk data ($export): only backend services (`system/` scopes with read on every type), and only
# asynchronously (`Prefer: respond-async`, FHIR Bulk Data kick-off request); the same for the
# export's status and files.
package phigate.authz

# An export's status URL and its files, reached through the URLs the gateway issued
# (`input.request.bulk`: "status" or "file"), need what the kick-off needed. (The gateway itself
# refuses them to anyone but the principal that started the export.)
deny contains "scope_insufficient" if {
	input.request.bulk
	not system_read
}

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
