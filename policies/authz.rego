# The decision phigate asks for: data.phigate.authz.decision.
# Default deny: a request is allowed only when something grants it and nothing denies it.
package phigate.authz

import data.phigate.break_glass
import data.phigate.common
import data.phigate.export
import data.phigate.patients
import data.phigate.scopes
import data.phigate.tenant

deny contains r if some r in tenant.deny

deny contains r if some r in scopes.deny

deny contains r if some r in patients.deny

deny contains r if some r in break_glass.deny

deny contains r if some r in export.deny

deny contains "unauthenticated" if not input.principal

deny contains "unsupported_input_version" if input.v != 1

# A FHIR request is granted by passing the scope, tenant and patient checks above. A non-FHIR
# route needs one of the roles listed for it in data.routes.
grant contains "fhir" if common.fhir

grant contains "route_role" if {
	not common.fhir
	some r in input.principal.roles
	r in data.routes[input.request.route].roles
}

default allow := false

allow if {
	count(grant) > 0
	count(deny) == 0
}

basis contains patients.mode if common.fhir

basis contains "break_glass" if break_glass.active

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

narrow_patients := patients.narrow

default permitted_patients := null

permitted_patients := patients.permitted_patients

default max_page_size := null

max_page_size := data.tenants[input.principal.tenant].max_page_size if common.searching

default break_glass_access := false

break_glass_access if break_glass.active

default alert := null

alert := "break_glass_access" if break_glass.active

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
