//! The audit trail through the gateway: the `attempt` record is durable before the upstream sees
//! the request, refused requests leave `denied` records, an unwritable trail is 503
//! `audit_unavailable` with nothing forwarded, and `phigate audit verify` passes on the result.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod common;

use std::path::Path;
use std::process::Command;

use common::{error_code, yaml};
use phigate_test_support::{start_upstream, TestGateway, TestPki};

fn audit_yaml(pki: &TestPki, upstream: std::net::SocketAddr, dir: &Path) -> String {
    let public = phigate_audit::generate_signing_key(&pki.dir().join("audit.key")).unwrap();
    phigate_audit::write_public_key(&pki.dir().join("audit.pub"), &public).unwrap();
    phigate_audit::generate_hmac_key(&pki.dir().join("audit-hmac.key")).unwrap();
    format!(
        "{}audit:\n  dir: {}\n  signing_key_path: audit.key\n  hmac_key_path: audit-hmac.key\n  max_wait_ms: 2000\n",
        yaml(pki, upstream, "none"),
        dir.display()
    )
}

fn phase_of<'a>(
    recs: &'a [serde_json::Value],
    request_id: &str,
    phase: &str,
) -> Option<&'a serde_json::Value> {
    recs.iter().find(|r| r["request_id"] == request_id && r["phase"] == phase)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_is_durable_before_forwarding_and_the_trail_verifies() {
    let pki = TestPki::new();
    let upstream = start_upstream(&pki).await;
    let audit_dir = pki.dir().join("audit");
    let gw = TestGateway::start_yaml(&audit_yaml(&pki, upstream.addr, &audit_dir), pki.dir(), Vec::new());

    let res =
        pki.public_client().get(&gw.url("/fhir/Observation?patient=a-p1&code=8867-4")).send().await.unwrap();
    assert_eq!(res.status, 200);
    let rid = res.header("x-request-id").unwrap().to_owned();
    // From the upstream's side: when it has the request, the attempt is already on disk.
    let seen = upstream.recorder.next().await;
    assert_eq!(seen.headers.get("x-request-id").unwrap(), rid.as_str());
    let recs = common::audit_records(&audit_dir);
    let attempt = phase_of(&recs, &rid, "attempt").expect("attempt record on disk");
    assert_eq!(attempt["method"], "GET");
    assert_eq!(attempt["route"], "fhir");
    let text = serde_json::to_string(attempt).unwrap();
    assert!(text.contains("a-p1"), "patient references are kept in clear: {text}");
    assert!(!text.contains("8867-4"), "other query values are not: {text}");

    let missing = pki.public_client().get(&gw.url("/fhir/Patient/a-p1%2F..")).send().await.unwrap();
    assert_eq!(missing.status, 400);
    drop(gw); // joins the gateway: every outcome record is written

    let recs = common::audit_records(&audit_dir);
    let outcome = phase_of(&recs, &rid, "outcome").expect("outcome record");
    assert_eq!(outcome["status"], 200);
    let out = Command::new(env!("CARGO_BIN_EXE_phigate"))
        .args(["audit", "verify"])
        .arg(&audit_dir)
        .arg("--public-key")
        .arg(pki.dir().join("audit.pub"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    // A copy of the trail as `audit.forward` delivers it (the segments' lines, in order), given
    // as a file: verified as a copy.
    let copy = pki.dir().join("collected.ndjson");
    let verify_copy = |copy: &std::path::Path| {
        let mut segments: Vec<_> = std::fs::read_dir(&audit_dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl") && p.to_string_lossy().contains("seg-"))
            .collect();
        segments.sort();
        let bytes: Vec<u8> = segments.iter().flat_map(|p| std::fs::read(p).unwrap()).collect();
        std::fs::write(copy, bytes).unwrap();
        Command::new(env!("CARGO_BIN_EXE_phigate"))
            .args(["audit", "verify"])
            .arg(copy)
            .arg("--public-key")
            .arg(pki.dir().join("audit.pub"))
            .output()
            .unwrap()
    };
    let out = verify_copy(&copy);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));

    // The accounting of the patient's disclosures, as FHIR AuditEvents.
    let report = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_phigate"))
            .args(["audit", "report"])
            .arg(&audit_dir)
            .args(args)
            .output()
            .unwrap()
    };
    let out = report(&["--patient", "a-p1", "--format", "fhir", "--since", "2020-01-01"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let bundle: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let events = bundle["entry"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{bundle}");
    let event = &events[0]["resource"];
    assert_eq!((event["id"].as_str(), event["outcome"].as_str()), (Some(rid.as_str()), Some("0")));
    assert_eq!(event["entity"][0]["what"]["reference"], "Patient/a-p1");
    assert!(!out.stdout.windows(6).any(|w| w == b"8867-4"), "no raw query values in the report");

    // One byte changed anywhere: verify names the tampering and exits 1.
    let seg = std::fs::read_dir(&audit_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with("000001.jsonl"))
        .unwrap();
    let text = std::fs::read_to_string(&seg).unwrap().replace("\"GET\"", "\"PUT\"");
    std::fs::write(&seg, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_phigate"))
        .args(["audit", "verify"])
        .arg(&audit_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let out = verify_copy(&copy);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a copy with the change: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // And no report comes out of it.
    let out = report(&[]);
    assert_eq!(
        (out.status.code(), out.stdout.is_empty()),
        (Some(1), true),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_trail_is_503_audit_unavailable_and_nothing_is_forwarded() {
    let pki = TestPki::new();
    let upstream = start_upstream(&pki).await;
    // A directory under a regular file can never be created, whoever runs the test.
    let audit_dir = pki.paths.ca_cert.join("audit");
    let gw = TestGateway::start_yaml(&audit_yaml(&pki, upstream.addr, &audit_dir), pki.dir(), Vec::new());
    let res = pki.public_client().get(&gw.url("/fhir/Patient/a-p1")).send().await.unwrap();
    assert_eq!(res.status, 503);
    assert_eq!(error_code(&res.body), "audit_unavailable");
    assert_eq!(res.header("content-type"), Some("application/fhir+json"));
    assert_eq!(upstream.recorder.count(), 0, "nothing was forwarded");
    let ready = common::admin_get(gw.admin, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(common::admin_get(gw.admin, "/metrics").await.contains("phigate_audit_failures_total"));
}
