# Tenant isolation: a principal never touches another tenant's data. No override exists, not
# even break-glass.
package phigate.authz

deny contains "tenant_mismatch" if not tenant_ok

# The principal's tenant is known, the request addresses no other tenant (route or header), and
# no named patient belongs to another tenant.
tenant_ok if {
	t := input.principal.tenant
	data.tenants[t]
	object.get(input.request, "tenant", t) == t
	every p in input.request.patients {
		object.get(data.patients, [p, "tenant"], t) == t
	}
}
