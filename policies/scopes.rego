# SMART on FHIR scopes gate resource types and interactions.
#   v1: `patient/Observation.read`, `user/*.write`, `system/*.*`
#   v2: `patient/Observation.rs`, `user/*.cruds` (letters in this order, any non-empty subset)
# `patient/` scopes only count with a patient launch context. Granular v2 scopes with a query
# (`?category=...`) grant nothing: the gateway cannot enforce their constraint (fail closed).
#
# Lookups, not string parsing per check: data.smart.permissions maps every valid permission
# string (v1 `read`, `write`, `*`; v2 each ordered subset of `cruds`) to its letters, and
# data.smart.interactions maps each interaction to the letter it needs.
package phigate.authz

# Whether a usable scope grants `letter` on resource type `type` (or on every type).
permits(type, letter) if {
	some raw in input.principal.scopes
	[ctx, rest] := split(raw, "/")
	[t, perm] := split(rest, ".")
	t in {type, "*"}
	letter in data.smart.permissions[perm]
	not contains(raw, "?")
	ctx in usable_contexts
}

usable_contexts := {"patient", "user", "system"} if {
	context_patient
} else := {"user", "system"}

# An op without a resource type (system-level search or history) needs a scope on every type
# (`*`); object.get rather than a helper function, which would cost a call per op.
deny contains "scope_insufficient" if {
	some op in ops
	data.smart.interactions[op.interaction]
	not permits(object.get(op, "resource_type", "*"), data.smart.interactions[op.interaction])
}

# $everything returns every type of the patient's record.
deny contains "scope_insufficient" if {
	some op in ops
	op.operation == "everything"
	some l in ["r", "s"]
	not permits("*", l)
}

# Other operations: reading ones (GET) need read, anything else needs update. (An export's status
# URL, polled or cancelled by the client that started it, is judged in export.rego.)
deny contains "scope_insufficient" if {
	some op in ops
	op.interaction == "operation"
	not op.operation in {"everything", "export"}
	not input.request.bulk
	not permits(object.get(op, "resource_type", "*"), object.get({"GET": "r"}, input.request.method, "u"))
}

# An interaction this policy does not know is refused rather than waved through.
deny contains "unknown_interaction" if {
	some op in ops
	not data.smart.interactions[op.interaction]
	not op.interaction in {"operation", "capabilities"}
}
