# The decision phigate asks for: data.phigate.authz.decision.
# Default deny: a request is allowed only when something grants it and nothing denies it.
package phigate.authz

deny contains r if some r in tenant_deny

deny contains r if some r in scope_deny

deny contains r if some r in patient_deny

deny contains r if some r in break_glass_deny

deny contains r if some r in export_deny

deny contains "unauthenticated" if not input.principal

deny contains "unsupported_input_version" if input.v != 1

# A FHIR request is granted by passing the scope, tenant and patient checks above. A non-FHIR
# route needs one of the roles listed for it in data.routes.
grant contains "fhir" if fhir

grant contains "route_role" if {
	not fhir
	some r in input.principal.roles
	r in data.routes[input.request.route].roles
}

default allow := false

allow if {
	count(grant) > 0
	count(deny) == 0
}

basis contains mode if fhir

basis contains "break_glass" if break_glass_active

basis contains g if some g in grant

# Without a principal nothing else is worth reporting.
reasons := ["unauthenticated"] if {
	not input.principal
} else := sort(deny) if {
	count(deny) > 0
} else := ["no_grant"] if {
	count(grant) == 0
} else := sort(basis)

default narrow_patients := null

narrow_patients := narrow

default permitted_patients := null

permitted_patients := verify_patients

default max_page_size := null

max_page_size := data.tenants[input.principal.tenant].max_page_size if searching

default break_glass_access := false

break_glass_access if break_glass_active

default alert := null

alert := "break_glass_access" if break_glass_active

decision := {
	"allow": allow,
	"reasons": reasons,
	"obligations": {
		"narrow_patients": narrow_patients,
		"permitted_patients": permitted_patients,
		"max_page_size": max_page_size,
		"break_glass": break_glass_access,
		"alert": alert,
	},
}
