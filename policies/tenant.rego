# Tenant isolation: a principal never touches another tenant's data. No override exists, not
# even break-glass.
package phigate.tenant

tenant := input.principal.tenant

deny contains "tenant_mismatch" if not tenant

deny contains "tenant_mismatch" if {
	tenant
	not data.tenants[tenant]
}

# The tenant the request addresses (route or header), when the gateway knows it.
deny contains "tenant_mismatch" if {
	input.request.tenant
	input.request.tenant != tenant
}

# Any named patient that belongs to another tenant.
deny contains "tenant_mismatch" if {
	some p in input.request.patients
	data.patients[p].tenant != tenant
}
