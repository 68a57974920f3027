# Break-glass (HIPAA 164.312(a)(2)(ii), emergency access procedure): a principal holding the
# break-glass role who states a reason reaches patients of its tenant outside its care team. The
# decision is marked and an alert break_glass_requested. Anyone else asking for it is refused.
package phigate.authz

break_glass_requested if is_string(input.request.break_glass_reason)

break_glass_permitted if {
	break_glass_requested
	count(trim_space(input.request.break_glass_reason)) > 0
	data.gateway.break_glass_role in input.principal.roles
}

break_glass_active if break_glass_permitted

break_glass_deny contains "break_glass_not_permitted" if {
	break_glass_requested
	not break_glass_permitted
}
