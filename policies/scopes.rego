# SMART on FHIR scopes gate resource types and interactions.
#   v1: `patient/Observation.read`, `user/*.write`, `system/*.*`
#   v2: `patient/Observation.rs`, `user/*.cruds` (letters in this order, any non-empty subset)
# `patient/` scopes only count with a patient launch context. Granular v2 scopes with a query
# (`?category=...`) grant nothing: the gateway cannot enforce their constraint (fail closed).
package phigate.authz

# data.smart.permissions maps every valid permission string (v1 `read`, `write`, `*`; v2 each
# ordered subset of `cruds`) to its letters: a lookup, not string parsing per request.
letters(p) := data.smart.permissions[p]

grants contains {"context": ctx, "type": type, "letters": letters(perm)} if {
	some raw in input.principal.scopes
	not contains(raw, "?")
	[ctx, rest] := split(raw, "/")
	ctx in {"patient", "user", "system"}
	[type, perm] := split(rest, ".")
}

usable(g) if {
	g.context == "patient"
	context_patient
}

usable(g) if g.context in {"user", "system"}

# "Type:letter" pairs the usable scopes grant, built once per evaluation.
granted contains concat(":", [g.type, l]) if {
	some g in grants
	usable(g)
	some l in g.letters
}

permits(type, letter) if granted[concat(":", [type, letter])]

permits(_, letter) if granted[concat(":", ["*", letter])]

interaction_letter := {
	"read": "r", "vread": "r",
	"search-type": "s", "search-compartment": "s", "search-system": "s", "history": "s",
	"create": "c", "update": "u", "patch": "u", "delete": "d",
}

type_of(op) := op.resource_type if {
	is_string(op.resource_type)
} else := "*"

# Other operations: reading ones (GET) need read, anything else needs update.
op_letter("GET") := "r"

op_letter(m) := "u" if m != "GET"

needs contains {"type": type_of(op), "letter": interaction_letter[op.interaction]} if {
	some op in ops
}

# $everything returns every type of the patient's record.
needs contains {"type": "*", "letter": l} if {
	some op in ops
	op.operation == "everything"
	some l in {"r", "s"}
}

needs contains {"type": type_of(op), "letter": op_letter(input.request.method)} if {
	some op in ops
	op.interaction == "operation"
	not op.operation in {"everything", "export"}
}

known := object.keys(interaction_letter) | {"operation", "capabilities"}

scope_deny contains "scope_insufficient" if {
	some n in needs
	not permits(n.type, n.letter)
}

# An interaction this policy does not know is refused rather than waved through.
scope_deny contains "unknown_interaction" if {
	some op in ops
	not op.interaction in known
}
