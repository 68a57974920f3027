# Tenant isolation: a principal never touches another tenant's data. No override exists, not
# even break-glass.
package phigate.authz

principal_tenant := input.principal.tenant

tenant_deny contains "tenant_mismatch" if not principal_tenant

tenant_deny contains "tenant_mismatch" if {
	principal_tenant
	not data.tenants[principal_tenant]
}

# The tenant the request addresses (route or header), when the gateway knows it.
tenant_deny contains "tenant_mismatch" if {
	input.request.tenant
	input.request.tenant != principal_tenant
}

# Any named patient that belongs to another tenant.
tenant_deny contains "tenant_mismatch" if {
	some p in input.request.patients
	data.patients[p].tenant != principal_tenant
}
