# Break-glass (HIPAA 164.312(a)(2)(ii), emergency access procedure): a principal holding the
# break-glass role who states a reason reaches patients of its tenant outside its care team. The
# decision is marked and an alert requested. Anyone else asking for it is refused.
package phigate.authz

break_glass if {
	is_string(input.request.break_glass_reason)
	count(trim_space(input.request.break_glass_reason)) > 0
	data.gateway.break_glass_role in input.principal.roles
}

deny contains "break_glass_not_permitted" if {
	is_string(input.request.break_glass_reason)
	not break_glass
}
