# Bulk data ($export): only backend services (`system/` scopes with read on every type), and only
# asynchronously (`Prefer: respond-async`, FHIR Bulk Data kick-off request).
package phigate.export

import data.phigate.common
import data.phigate.scopes

requested if {
	some op in common.ops
	op.operation == "export"
}

system_read if {
	some g in scopes.grants
	g.context == "system"
	g.type == "*"
	"r" in g.letters
}

deny contains "scope_insufficient" if {
	requested
	not system_read
}

deny contains "export_requires_async" if {
	requested
	not "respond-async" in input.request.prefer
}
