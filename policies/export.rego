# Bulk data ($export): only backend services (`system/` scopes with read on every type), and only
# asynchronously (`Prefer: respond-async`, FHIR Bulk Data kick-off request).
package phigate.authz

export_requested if {
	some op in ops
	op.operation == "export"
}

system_read if {
	some g in grants
	g.context == "system"
	g.type == "*"
	"r" in g.letters
}

export_deny contains "scope_insufficient" if {
	export_requested
	not system_read
}

export_deny contains "export_requires_async" if {
	export_requested
	not "respond-async" in input.request.prefer
}
