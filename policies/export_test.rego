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

# The export's status URL and files, reached through the URLs the gateway issued.
poll_op := object.union(f.op("operation", null, []), {"operation": "export-poll-status"})

file_op := object.union(f.op("read", "Binary", []), {"id": "job-1-Observation"})

test_bulk_client_polls_its_export if {
	d := authz.decision with input as f.with_request(f.get(f.bulk_client, poll_op), {"bulk": "status"})
	d.allow
}

test_bulk_client_reads_an_export_file_checked_by_tenant if {
	d := authz.decision with input as f.with_request(f.get(f.bulk_client, file_op), {"bulk": "file"})
	d.allow
	d.obligations.permitted_tenant == "tenant-a"
}

test_bulk_urls_need_system_read if {
	some kind in ["status", "file"]
	d := authz.decision with input as f.with_request(f.get(f.scraper_a, file_op), {"bulk": kind})
	not d.allow
	"scope_insufficient" in d.reasons
}

# Cancelling is a DELETE of the status URL: the kick-off's scopes, not a write scope.
test_bulk_client_cancels_its_export if {
	d := authz.decision with input as f.with_request(f.req(f.bulk_client, "DELETE", poll_op), {"bulk": "status"})
	d.allow
}

# The same DELETE of an operation without the gateway's bulk URL needs a write scope.
test_deleting_an_operation_otherwise_needs_a_write_scope if {
	d := authz.decision with input as f.req(f.bulk_client, "DELETE", poll_op)
	not d.allow
	"scope_insufficient" in d.reasons
}
