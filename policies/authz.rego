# The decision phigate asks for: data.phigate.authz.decision.
# Default deny: a request is allowed only when something grants it and nothing denies it. Every
# concern adds its reasons to `deny` (tenant.rego, scopes.rego, patients.rego, break_glass.rego,
# export.rego).
package phigate.authz

deny contains "unauthenticated" if not input.principal

deny contains "unsupported_input_version" if input.v != 1

# A FHIR request is granted by passing the scope, tenant and patient checks. A non-FHIR route
# needs one of the roles listed for it in data.routes.
grant := "fhir" if {
	input.request.fhir
} else := "route_role" if {
	some r in input.principal.roles
	r in data.routes[input.request.route].roles
}

default allow := false

allow if {
	grant
	count(deny) == 0
}

# SMART discovery is public: an app reads the server's capabilities (`metadata`,
# `.well-known/smart-configuration`, both `capabilities` to the gateway) before it has a token.
# They hold no PHI. (The identity stage lets them through without a token on FHIR routes,
# `identity.defaults.anonymous_discovery`.)
allow if public_discovery

public_discovery if {
	not input.principal
	input.v == 1
	input.request.fhir.interaction == "capabilities"
	input.request.method in {"GET", "HEAD"}
}

basis contains mode if input.request.fhir

basis contains "break_glass" if break_glass

basis contains grant

basis contains "public_discovery" if public_discovery

# An allowed request reports its basis (checked first: it is the common case). Otherwise:
# without a principal nothing else is worth reporting; then the deny reasons, if any.
reasons := sort(basis) if {
	allow
} else := ["unauthenticated"] if {
	not input.principal
} else := sort(deny) if {
	count(deny) > 0
} else := ["no_grant"]

default narrow_patients := null

# Only principals held to a few patients are narrowed: a tenant-scoped search is forwarded as
# asked (the upstream scopes it to the tenant, as a partitioned FHIR server does) and its
# response is checked by tenant like any other.
narrow_patients := sort(effective) if {
	needs_narrowing
	not tenant_scoped
	not refuse_unnarrowed
}

# Every FHIR response is checked (read-by-id, searches, _include leaks): against the patients a
# restricted principal may touch, or, for a tenant-scoped one, against each patient's tenant.
verified_response if {
	input.request.fhir
	not input.request.fhir.interaction == "capabilities"
	not input.request.fhir.operation == "export"
}

default permitted_patients := null

permitted_patients := sort(effective) if {
	verified_response
	not tenant_scoped
}

default permitted_tenant := null

# (tenant_scoped first: most principals are not, and the body stops there.)
permitted_tenant := input.principal.tenant if {
	tenant_scoped
	verified_response
}

default max_page_size := null

max_page_size := data.tenants[input.principal.tenant].max_page_size if {
	input.request.fhir.interaction in {"search-type", "search-system", "search-compartment", "history"}
}

default break_glass_access := false

break_glass_access if break_glass

default alert := null

alert := "break_glass_access" if break_glass

decision := {
	"allow": allow,
	"reasons": reasons,
	"obligations": {
		"narrow_patients": narrow_patients,
		"permitted_patients": permitted_patients,
		"permitted_tenant": permitted_tenant,
		"max_page_size": max_page_size,
		"break_glass": break_glass_access,
		"alert": alert,
		"cleared_labels": cleared_labels,
	},
}
