use std::sync::Arc;

use http::{HeaderMap, Method};
use phigate_plugin::{
    BulkKind, ErrorCode, Principal, RequestCtx, RequestId, RequestInfo, RouteMeta, TenantId,
};

use super::*;
use crate::request::{normalize_target, TargetLimits};
use crate::routing::Route;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef-bulk-test-key";

fn bulk() -> Bulk {
    Bulk::with_secret(KEY, 3600, "$export-poll-status").expect("key")
}

fn route(name: &str, prefix: &str, rewrite: Option<&str>) -> Route {
    let meta = Arc::new(RouteMeta {
        name: name.into(),
        index: 0,
        prefix: prefix.into(),
        fhir: true,
        upstream: "fhir".into(),
    });
    Route::new(meta, 0, prefix, rewrite)
}

fn ctx(route: &Route, sub: &str, tenant: &str) -> RequestCtx {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::HOST, "gw.example:8443".parse().expect("host"));
    let info = RequestInfo {
        method: Method::GET,
        path: "/fhir/$export".into(),
        query: Vec::new(),
        headers,
        body: None,
    };
    let mut ctx = RequestCtx::new(RequestId::new("r1"), route.meta.clone(), info);
    ctx.principal = Some(Arc::new(Principal {
        tenant: Some(TenantId::new(tenant)),
        client_id: Some("backend-app".into()),
        ..Principal::new("https://idp", sub)
    }));
    ctx
}

/// The path (with its query) of an issued URL, as a client sends it.
fn path_of(url: &str) -> &str {
    let rest = url.strip_prefix("https://gw.example:8443").expect("issued on the client's host");
    rest
}

fn admit(
    b: &Bulk,
    route: &Route,
    target: &str,
    method: Method,
) -> Result<(String, Option<BulkAccess>), ErrorCode> {
    let limits = TargetLimits::default();
    let t = normalize_target(target.as_bytes(), &limits).expect("normal target");
    b.admit(route, t, &method, &limits)
        .map(|(t, access)| (crate::request::rebuild_target(&t.path, &t.query), access))
        .map_err(|d| d.code)
}

#[test]
fn an_issued_status_url_restores_the_upstream_target_for_its_owner() {
    let (b, r) = (bulk(), route("fhir", "/fhir", None));
    let url = b
        .issue(
            BulkKind::Status,
            &r,
            &ctx(&r, "bulk", "tenant-a"),
            "https://fhir.internal/fhir/$export-poll-status?_jobId=job-1",
        )
        .expect("issued");
    assert!(url.starts_with("https://gw.example:8443/fhir/$phigate-bulk/"), "{url}");
    // The job id (a capability on the upstream) is not readable in the issued URL.
    assert!(!url.contains("job-1") && !url.contains("_jobId"), "{url}");
    let (target, access) = admit(&b, &r, path_of(&url), Method::GET).expect("opens");
    assert_eq!(target, "/fhir/$export-poll-status?_jobId=job-1");
    let access = access.expect("bulk access");
    assert_eq!(access.kind, BulkKind::Status);
    assert_eq!((&*access.issuer, &*access.subject), ("https://idp", "bulk"));
    assert_eq!(access.tenant.as_ref().map(TenantId::as_str), Some("tenant-a"));
    assert_eq!(access.client_id.as_deref(), Some("backend-app"));
    // A status URL may be polled or deleted (cancel); nothing else.
    assert!(admit(&b, &r, path_of(&url), Method::DELETE).is_ok());
    assert_eq!(admit(&b, &r, path_of(&url), Method::POST).unwrap_err(), ErrorCode::MethodNotAllowed);
}

#[test]
fn file_urls_are_read_only() {
    let (b, r) = (bulk(), route("fhir", "/fhir", None));
    let url = b
        .issue(BulkKind::File, &r, &ctx(&r, "bulk", "tenant-a"), "/fhir/Binary/job-1-Patient")
        .expect("issued");
    let (target, access) = admit(&b, &r, path_of(&url), Method::GET).expect("opens");
    assert_eq!(target, "/fhir/Binary/job-1-Patient");
    assert_eq!(access.map(|a| a.kind), Some(BulkKind::File));
    assert_eq!(admit(&b, &r, path_of(&url), Method::DELETE).unwrap_err(), ErrorCode::MethodNotAllowed);
}

#[test]
fn forged_tampered_expired_or_foreign_urls_do_not_open() {
    let (b, r) = (bulk(), route("fhir", "/fhir", None));
    let c = ctx(&r, "bulk", "tenant-a");
    let url = b.issue(BulkKind::File, &r, &c, "/fhir/Binary/x").expect("issued");
    let path = path_of(&url);
    // One character changed anywhere in the ticket.
    let mut tampered = path.to_owned();
    let last = tampered.pop().expect("non-empty");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for bad in [tampered.as_str(), "/fhir/$phigate-bulk/bm90LWEtdGlja2V0", "/fhir/$phigate-bulk/"] {
        assert_eq!(admit(&b, &r, bad, Method::GET).unwrap_err(), ErrorCode::BulkUrlInvalid, "{bad}");
    }
    // Another key (another deployment) cannot open it.
    let other =
        Bulk::with_secret(b"another key, also at least thirty-two bytes", 3600, "$export-poll-status")
            .expect("key");
    assert_eq!(admit(&other, &r, path, Method::GET).unwrap_err(), ErrorCode::BulkUrlInvalid);
    // Nor can another route, even with the same key.
    let elsewhere = route("other", "/fhir", None);
    assert_eq!(admit(&b, &elsewhere, path, Method::GET).unwrap_err(), ErrorCode::BulkUrlInvalid);
    // Extra segments or a query are not part of an issued URL.
    assert_eq!(admit(&b, &r, &format!("{path}/x"), Method::GET).unwrap_err(), ErrorCode::BulkUrlInvalid);
    assert_eq!(admit(&b, &r, &format!("{path}?a=b"), Method::GET).unwrap_err(), ErrorCode::BulkUrlInvalid);
    // Expiry: the same ticket opens before its time and not at it.
    let token = path.rsplit('/').next().expect("token");
    let ticket = b.open(token, 0).expect("opens at the epoch");
    assert!(b.open(token, ticket.e - 1).is_ok());
    assert_eq!(b.open(token, ticket.e).map(|_| ()).unwrap_err().code, ErrorCode::BulkUrlInvalid);
}

#[test]
fn the_upstream_status_url_is_refused_when_asked_for_directly() {
    let (b, r) = (bulk(), route("fhir", "/fhir", None));
    for direct in [
        "/fhir/$export-poll-status?_jobId=job-1",
        "/fhir/$export-poll-status/",
        "/fhir/$export-poll-status/job-1",
    ] {
        for method in [Method::GET, Method::DELETE, Method::POST] {
            assert_eq!(admit(&b, &r, direct, method).unwrap_err(), ErrorCode::BulkUrlInvalid, "{direct}");
        }
    }
    // Only whole segments: another endpoint that shares the prefix passes.
    assert!(admit(&b, &r, "/fhir/$export-poll-status-other", Method::GET).is_ok_and(|(_, a)| a.is_none()));
    // Everything else passes untouched.
    let (target, access) = admit(&b, &r, "/fhir/Observation?patient=a-p1", Method::GET).expect("passes");
    assert_eq!((target.as_str(), access), ("/fhir/Observation?patient=a-p1", None));
}

#[test]
fn upstream_urls_map_through_the_route_prefix_rewrite() {
    let (b, r) = (bulk(), route("fhir", "/fhir", Some("/baseR4")));
    let c = ctx(&r, "bulk", "tenant-a");
    let url = b.issue(BulkKind::File, &r, &c, "https://fhir.internal/baseR4/Binary/f1").expect("issued");
    let (target, _) = admit(&b, &r, path_of(&url), Method::GET).expect("opens");
    assert_eq!(target, "/fhir/Binary/f1");
    // An upstream configured with the gateway's public base writes URLs on the client's host:
    // those are gateway paths already.
    let url = b.issue(BulkKind::File, &r, &c, "https://GW.example:8443/fhir/Binary/f2").expect("issued");
    assert_eq!(admit(&b, &r, path_of(&url), Method::GET).expect("opens").0, "/fhir/Binary/f2");
    // Not under the upstream prefix (on whole segments), another service's URL, or a relative
    // reference: not issued.
    for foreign in [
        "https://fhir.internal/fhir/Binary/f1",
        "https://gw.example:8443/baseR4/Binary/f1",
        "https://fhir.internal/baseR4x/Binary/f1",
        "https://bucket.s3.example/exports/f1.ndjson?X-Amz-Signature=abc",
        "Binary/f1",
    ] {
        assert_eq!(b.issue(BulkKind::File, &r, &c, foreign), None, "{foreign}");
    }
    // No principal to bind it to: not issued.
    let mut anonymous = ctx(&r, "bulk", "tenant-a");
    anonymous.principal = None;
    assert_eq!(b.issue(BulkKind::File, &r, &anonymous, "/baseR4/Binary/f1"), None);
}

#[test]
fn a_manifest_gets_issued_file_urls_and_keeps_the_rest() {
    let (b, r) = (bulk(), route("fhir", "/fhir", None));
    let c = ctx(&r, "bulk", "tenant-a");
    let manifest = br#"{"transactionTime":"2026-12-07T17:00:00Z","request":"https://gw/fhir/$export","requiresAccessToken":false,
        "output":[{"type":"Patient","url":"https://fhir.internal/fhir/Binary/job-1-Patient","count":2}],
        "error":[{"type":"OperationOutcome","url":"/fhir/Binary/job-1-errors"}],
        "link":[{"relation":"next","url":"https://fhir.internal/fhir/$export-poll-status?_jobId=job-1&page=2"}]}"#;
    let out: serde_json::Value =
        serde_json::from_slice(&b.rewrite_manifest(&r, &c, manifest).expect("rewritten")).expect("json");
    let patient_url = out["output"][0]["url"].as_str().expect("url");
    let (target, access) = admit(&b, &r, path_of(patient_url), Method::GET).expect("opens");
    assert_eq!(
        (target.as_str(), access.map(|a| a.kind)),
        ("/fhir/Binary/job-1-Patient", Some(BulkKind::File))
    );
    assert_eq!(out["output"][0]["count"], 2);
    let error_url = out["error"][0]["url"].as_str().expect("url");
    assert_eq!(admit(&b, &r, path_of(error_url), Method::GET).expect("opens").0, "/fhir/Binary/job-1-errors");
    assert_eq!(out["transactionTime"], "2026-12-07T17:00:00Z");
    assert_eq!(out["requiresAccessToken"], true, "the issued URLs need the client's token");
    // The next page of the manifest is polled like the status URL.
    let next = out["link"][0]["url"].as_str().expect("url");
    let (target, access) = admit(&b, &r, path_of(next), Method::GET).expect("opens");
    assert_eq!(target, "/fhir/$export-poll-status?_jobId=job-1&page=2");
    assert_eq!(access.map(|a| a.kind), Some(BulkKind::Status));
    assert_eq!(b.rewrite_manifest(&r, &c, b"[1]").unwrap_err().code, ErrorCode::UpstreamError);
    assert_eq!(b.rewrite_manifest(&r, &c, b"not json").unwrap_err().code, ErrorCode::UpstreamError);
}

#[test]
fn a_manifest_naming_a_file_off_the_route_is_refused_unless_passed() {
    let r = route("fhir", "/fhir", None);
    let c = ctx(&r, "bulk", "tenant-a");
    let manifest = br#"{"transactionTime":"2026-12-07T17:00:00Z","requiresAccessToken":false,
        "output":[{"type":"Patient","url":"https://fhir.internal/fhir/Binary/job-1-Patient"},
                  {"type":"Observation","url":"https://bucket.s3.example/o.ndjson?X-Amz-Signature=abc"}]}"#;
    let mut b = bulk();
    let refused = b.rewrite_manifest(&r, &c, manifest).unwrap_err();
    assert_eq!(refused.code, ErrorCode::UpstreamError);
    assert!(!format!("{refused:?}").contains("s3.example"), "the URL is not repeated: {refused:?}");
    // An external error file or next page is refused the same way.
    for list in ["error", "link"] {
        let other = format!(r#"{{"output":[],"{list}":[{{"url":"https://elsewhere.example/x"}}]}}"#);
        assert!(b.rewrite_manifest(&r, &c, other.as_bytes()).is_err(), "{list}");
    }
    b.external = ExternalFiles::Pass;
    let out: serde_json::Value =
        serde_json::from_slice(&b.rewrite_manifest(&r, &c, manifest).expect("passed")).expect("json");
    assert!(out["output"][0]["url"].as_str().expect("url").contains("/fhir/$phigate-bulk/"));
    assert_eq!(out["output"][1]["url"], "https://bucket.s3.example/o.ndjson?X-Amz-Signature=abc");
}

#[test]
fn config_problems_are_named() {
    let cfg = |ttl_secs, status_path: &str| BulkExportConfig {
        key_path: None,
        previous_key_paths: Vec::new(),
        ttl_secs,
        status_path: status_path.into(),
        external_files: ExternalFiles::default(),
    };
    assert!(cfg(86_400, "$export-poll-status").problems().is_empty());
    assert_eq!(cfg(10, "$export-poll-status").problems()[0].0, "ttl_secs");
    for bad in ["", "/abs", "a?b", "a//b"] {
        assert_eq!(cfg(86_400, bad).problems()[0].0, "status_path", "{bad}");
    }
    let built = Bulk::build(&cfg(3600, "$export-poll-status"), Path::new("/"));
    assert_eq!(
        built.map(|b| b.external).ok(),
        Some(ExternalFiles::Refuse),
        "a random key per process without key_path"
    );
    let passing = BulkExportConfig { external_files: ExternalFiles::Pass, ..cfg(3600, "s") };
    assert_eq!(Bulk::build(&passing, Path::new("/")).map(|b| b.external).ok(), Some(ExternalFiles::Pass));
    let dir = std::env::temp_dir();
    let missing = BulkExportConfig { key_path: Some("no-such-bulk-key".into()), ..cfg(3600, "s") };
    let issues = Bulk::build(&missing, &dir).unwrap_err();
    assert_eq!(issues[0].key_path, "bulk_export.key_path");
}

#[test]
fn urls_sealed_before_a_key_rotation_still_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("old.key"), KEY).expect("write");
    std::fs::write(dir.path().join("new.key"), b"a brand new key of at least thirty-two bytes")
        .expect("write");
    let cfg = |key: &str, previous: &[&str]| BulkExportConfig {
        key_path: Some(key.into()),
        previous_key_paths: previous.iter().map(Into::into).collect(),
        ttl_secs: 3600,
        status_path: "$export-poll-status".into(),
        external_files: ExternalFiles::default(),
    };
    let r = route("fhir", "/fhir", None);
    let old = Bulk::build(&cfg("old.key", &[]), dir.path()).expect("old");
    let url = old.issue(BulkKind::File, &r, &ctx(&r, "bulk", "tenant-a"), "/fhir/Binary/f1").expect("issued");
    let rotated = Bulk::build(&cfg("new.key", &["old.key"]), dir.path()).expect("rotated");
    assert_eq!(admit(&rotated, &r, path_of(&url), Method::GET).expect("opens").0, "/fhir/Binary/f1");
    // New URLs are sealed with the new key only.
    let fresh =
        rotated.issue(BulkKind::File, &r, &ctx(&r, "bulk", "tenant-a"), "/fhir/Binary/f2").expect("issued");
    assert_eq!(admit(&old, &r, path_of(&fresh), Method::GET).unwrap_err(), ErrorCode::BulkUrlInvalid);
    // Once the old key is dropped, its URLs are gone.
    let dropped = Bulk::build(&cfg("new.key", &[]), dir.path()).expect("dropped");
    assert_eq!(admit(&dropped, &r, path_of(&url), Method::GET).unwrap_err(), ErrorCode::BulkUrlInvalid);
    // A previous key that cannot be read is named.
    let issues = Bulk::build(&cfg("new.key", &["missing.key"]), dir.path()).unwrap_err();
    assert_eq!(issues[0].key_path, "bulk_export.previous_key_paths[0]");
}
