package phigate.export_test

import data.phigate.authz
import data.phigate.fixtures as f

export_op := object.union(f.op("operation", null, []), {"operation": "export"})

test_system_client_async_export_allowed if {
	i := f.with_request(f.get(f.bulk_client, export_op), {"prefer": ["respond-async"]})
	d := authz.decision with input as i
	d.allow
}

test_export_without_respond_async_denied if {
	d := authz.decision with input as f.get(f.bulk_client, export_op)
	not d.allow
	d.reasons == ["export_requires_async"]
}

test_export_by_user_denied if {
	i := f.with_request(f.get(f.scraper_a, export_op), {"prefer": ["respond-async"]})
	d := authz.decision with input as i
	not d.allow
	"scope_insufficient" in d.reasons
}
