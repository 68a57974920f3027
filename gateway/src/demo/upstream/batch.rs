//! `POST [base]` with a `batch` Bundle: each entry runs as its own GET and the answer is a
//! `batch-response` Bundle with one `response.status` per entry, in order (FHIR R4 §3.1.0.11).

use std::io::Write as _;

use bytes::{BufMut as _, BytesMut};
use http::StatusCode;
use serde::Deserialize;

use super::fhir::{outcome, ApiRequest, FhirApi, Reply};

/// Entries a batch may carry; more is refused (the sample upstream is also a load-test target).
pub const MAX_BATCH_ENTRIES: usize = 100;

#[derive(Deserialize)]
struct Bundle {
    #[serde(rename = "resourceType")]
    resource_type: String,
    #[serde(rename = "type")]
    bundle_type: Option<String>,
    #[serde(default)]
    entry: Vec<BundleEntry>,
}

#[derive(Deserialize)]
struct BundleEntry {
    request: Option<EntryRequest>,
}

#[derive(Deserialize)]
struct EntryRequest {
    method: String,
    url: String,
}

pub(crate) fn batch(api: &FhirApi, req: &ApiRequest<'_>) -> Reply {
    let Ok(bundle) = serde_json::from_slice::<Bundle>(req.body) else {
        return outcome(StatusCode::BAD_REQUEST, "invalid", "The body is not a Bundle.");
    };
    if bundle.resource_type != "Bundle" {
        return outcome(StatusCode::BAD_REQUEST, "invalid", "The body is not a Bundle.");
    }
    match bundle.bundle_type.as_deref() {
        Some("batch") => {}
        Some("transaction") => {
            return outcome(
                StatusCode::BAD_REQUEST,
                "not-supported",
                "Transactions are not supported; use a batch.",
            )
        }
        _ => return outcome(StatusCode::BAD_REQUEST, "invalid", "Only batch Bundles can be posted."),
    }
    if bundle.entry.len() > MAX_BATCH_ENTRIES {
        return outcome(StatusCode::BAD_REQUEST, "too-costly", "The batch has too many entries.");
    }
    let mut out = BytesMut::with_capacity(1024).writer();
    let _ = out.write_all(b"{\"resourceType\":\"Bundle\",\"type\":\"batch-response\",\"entry\":[");
    for (n, entry) in bundle.entry.iter().enumerate() {
        if n > 0 {
            let _ = out.write_all(b",");
        }
        let reply = run_entry(api, entry, req.base_url);
        let status = format!("{} {}", reply.status.as_u16(), reply.status.canonical_reason().unwrap_or(""));
        let member: &[u8] = if reply.status.is_success() { b"resource" } else { b"outcome" };
        let _ = out.write_all(b"{\"");
        let _ = out.write_all(member);
        let _ = out.write_all(b"\":");
        let _ = out.write_all(&reply.body);
        let _ = out.write_all(b",\"response\":{\"status\":");
        let _ = serde_json::to_writer(&mut out, &status);
        let _ = out.write_all(b"}}");
    }
    let _ = out.write_all(b"]}");
    Reply::ok(out.into_inner().freeze())
}

fn run_entry(api: &FhirApi, entry: &BundleEntry, base_url: &str) -> Reply {
    let Some(request) = &entry.request else {
        return outcome(StatusCode::BAD_REQUEST, "invalid", "The entry has no request.");
    };
    if request.method != "GET" {
        return outcome(StatusCode::METHOD_NOT_ALLOWED, "not-supported", "The sample upstream is read-only.");
    }
    // Entry URLs are relative to the base; an absolute URL must name this base.
    let url = request.url.as_str();
    let relative = match url.strip_prefix(base_url) {
        Some(rest) => rest.trim_start_matches('/'),
        None if url.contains("://") => {
            return outcome(StatusCode::BAD_REQUEST, "invalid", "The entry URL is not on this server.")
        }
        None => url.trim_start_matches('/'),
    };
    let (path, query) = relative.split_once('?').unwrap_or((relative, ""));
    if super::bulk::is_bulk_path(path) {
        return outcome(
            StatusCode::BAD_REQUEST,
            "not-supported",
            "Bulk export endpoints cannot be used in a batch.",
        );
    }
    api.get(path, query, base_url)
}
