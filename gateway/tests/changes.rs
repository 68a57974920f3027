//! Changes to what the gateway enforces, in the hash-chained audit trail: the policy revision in
//! force at start and each one applied or refused on disk, and each listener certificate
//! (fingerprint, notAfter) loaded or refused, with what set it off. `verify` counts them and
//! catches an edit to one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod common;

use common::FullEnv;
use phigate_audit::{verify, VerifyStatus};
use phigate_test_support::{start_upstream, TestGateway, TestPki, TlsProbe, WhichCa};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn is(action: &'static str, trigger: &'static str) -> impl Fn(&Value) -> bool {
    move |r| r["kind"] == "operator" && r["action"] == action && r["details"]["trigger"] == trigger
}

/// GET as clinician_a; returns (status, the policy revision its audit record names).
async fn decided_by(env: &FullEnv, path: &str) -> (u16, String) {
    let client = env.pki.public_client();
    let res = client.get(&env.gw.url(path)).bearer(&env.token("clinician_a")).send().await.unwrap();
    let rid = res.header("x-request-id").unwrap().to_owned();
    let record = env.wait_record(|r| r["request_id"] == rid.as_str() && r["phase"] != "attempt").await;
    (res.status.as_u16(), record["decision"]["revision"].as_str().unwrap().to_owned())
}

fn operator_records(env: &FullEnv) -> usize {
    env.audit_records().iter().filter(|r| r["kind"] == "operator").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_on_disk_is_chained_as_applied_with_both_revision_hashes() {
    let mut env = FullEnv::start().await;
    let started = env.wait_record(is("policy_revision_applied", "startup")).await;
    assert_eq!(started["details"]["previous"], Value::Null);
    let first = started["details"]["revision"].as_str().unwrap().to_owned();
    assert_eq!(decided_by(&env, "/fhir/Patient/a-p1").await, (200, first.clone()));

    env.wait_policy_watching().await;
    let care_teams = env.pki.dir().join("policies/data/care_teams.yaml");
    let text = std::fs::read_to_string(&care_teams).unwrap();
    std::fs::write(&care_teams, format!("{text}\n# CHG-2291 reviewed by the privacy officer\n")).unwrap();
    let applied = env.wait_record(is("policy_revision_applied", "watch")).await;
    assert_eq!(applied["details"]["previous"], first.as_str());
    let second = applied["details"]["revision"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert!(applied["details"]["at"].as_str().unwrap().ends_with('Z'), "{applied}");
    // The revision recorded is the one that decides from then on.
    assert_eq!(decided_by(&env, "/fhir/Patient/a-p1").await, (200, second.clone()));

    env.gw.stop();
    let dir = env.pki.dir().join("audit");
    let report = verify(&dir, None);
    assert_eq!(report.status, VerifyStatus::Intact, "{report}");
    assert_eq!(report.operator_records as usize, operator_records(&env));

    // Back-dating which revision decided is caught: the edited line fails its own hash.
    let seq = applied["seq"].as_u64().unwrap();
    let segment = common_segment(&dir);
    let text = std::fs::read_to_string(&segment).unwrap();
    let edited = text.replace(&format!("\"revision\":\"{second}\""), &format!("\"revision\":\"{first}\""));
    assert_ne!(edited, text);
    std::fs::write(&segment, edited).unwrap();
    let report = verify(&dir, None);
    assert_eq!(report.status, VerifyStatus::Tampered);
    assert_eq!(report.failure.unwrap().seq, Some(seq));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_policy_is_chained_as_rejected_and_the_old_revision_keeps_deciding() {
    let mut env = FullEnv::start().await;
    let started = env.wait_record(is("policy_revision_applied", "startup")).await;
    let first = started["details"]["revision"].as_str().unwrap().to_owned();
    env.wait_policy_watching().await;

    let tenant = env.pki.dir().join("policies/tenant.rego");
    let original = std::fs::read_to_string(&tenant).unwrap();
    std::fs::write(&tenant, format!("{original}\ndeny contains \"source-stays-out\" if {{\n")).unwrap();
    let rejected = env.wait_record(is("policy_revision_rejected", "watch")).await;
    let details = &rejected["details"];
    assert_eq!(
        (details["active"].as_str(), details["reason"].as_str()),
        (Some(first.as_str()), Some("rego"))
    );
    let attempted = details["attempted"].as_str().unwrap();
    assert!(attempted != first && attempted.len() == 16, "the refused files' content hash: {attempted}");
    assert_eq!(decided_by(&env, "/fhir/Patient/a-p1").await, (200, first.clone()));
    assert_eq!(env.get_as("clinician_a", "/fhir/Patient/a-p3").await.0, 403, "still enforcing");

    env.gw.stop();
    let dir = env.pki.dir().join("audit");
    assert_eq!(verify(&dir, None).status, VerifyStatus::Intact);
    let trail = std::fs::read_to_string(common_segment(&dir)).unwrap();
    assert!(!trail.contains("source-stays-out"), "no Rego source in the trail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_chained_with_its_fingerprint_and_not_after() {
    let mut env = FullEnv::start().await;
    let paths = env.pki.paths.clone();
    let started = env.wait_record(is("certificate_reloaded", "startup")).await;
    let served = pem_fingerprint(&std::fs::read(&paths.gateway_cert).unwrap());
    assert_eq!(started["details"]["listener"], "public");
    assert_eq!(
        (started["details"]["sha256"].as_str(), &started["details"]["previous_sha256"]),
        (Some(served.as_str()), &Value::Null)
    );

    let (cert, key) = self_signed(2031);
    std::fs::write(&paths.gateway_cert, &cert).unwrap();
    std::fs::write(&paths.gateway_key, &key).unwrap();
    env.gw.reloader.reload_all();
    let rotated_sha = pem_fingerprint(cert.as_bytes());
    let rotated = env
        .wait_record(|r| {
            r["action"] == "certificate_reloaded" && r["details"]["sha256"] == rotated_sha.as_str()
        })
        .await;
    let d = &rotated["details"];
    assert_eq!(
        (d["previous_sha256"].as_str(), d["not_after"].as_str()),
        (Some(served.as_str()), Some("2031-05-17T00:00:00Z"))
    );
    // SIGHUP's reload, unless the periodic check saw the files first.
    assert!(d["trigger"] == "sighup" || d["trigger"] == "watch", "{rotated}");

    // A broken key left in place is refused (the rotated certificate keeps serving) and recorded
    // once, however often it is checked again.
    std::fs::write(&paths.gateway_key, "not a key").unwrap();
    env.gw.reloader.reload_all();
    env.gw.reloader.reload_all();
    env.gw.reloader.reload_certs();
    let (cert3, key3) = self_signed(2032);
    std::fs::write(&paths.gateway_cert, &cert3).unwrap();
    std::fs::write(&paths.gateway_key, &key3).unwrap();
    env.gw.reloader.reload_all();
    let third = pem_fingerprint(cert3.as_bytes());
    env.wait_record(|r| r["action"] == "certificate_reloaded" && r["details"]["sha256"] == third.as_str())
        .await;
    let refused: Vec<_> = env
        .audit_records()
        .into_iter()
        .filter(|r| r["action"] == "certificate_reload_failed" && r["details"]["reason"] == "missing")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["details"]["active_sha256"], rotated_sha.as_str());

    env.gw.stop();
    let dir = env.pki.dir().join("audit");
    assert_eq!(verify(&dir, None).status, VerifyStatus::Intact);
    let trail = std::fs::read_to_string(common_segment(&dir)).unwrap();
    let key_body = key3.lines().nth(1).unwrap();
    assert!(!trail.contains(key_body), "no key material in the trail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_the_trail_cannot_take_still_takes_effect_is_counted_and_recorded_once_it_can() {
    let pki = TestPki::new();
    let upstream = start_upstream(&pki).await;
    phigate_audit::generate_signing_key(&pki.dir().join("audit.key")).unwrap();
    // The trail's directory lies under a regular file, so it cannot be created (whoever runs
    // the test) until that file is removed.
    let blocker = pki.dir().join("blocker");
    std::fs::write(&blocker, "not a directory").unwrap();
    let audit_dir = blocker.join("audit");
    let cfg = format!(
        "{}audit:\n  dir: {}\n  signing_key_path: audit.key\n  max_wait_ms: 200\n",
        common::yaml(&pki, upstream.addr, "none"),
        audit_dir.display()
    );
    let gw = TestGateway::start_yaml(&cfg, pki.dir(), Vec::new());
    let fresh = pki.issue_server(WhichCa::Public, &["localhost", "127.0.0.1"]).unwrap();
    std::fs::write(&pki.paths.gateway_cert, fresh.cert_pem()).unwrap();
    std::fs::write(&pki.paths.gateway_key, fresh.key_pem()).unwrap();
    gw.reloader.reload_all();

    // The reload is not undone: the new certificate is served.
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(pki.ca.root_store())
        .with_no_client_auth();
    let served = TlsProbe::handshake(gw.addr, std::sync::Arc::new(client)).await.unwrap();
    assert_eq!(served.peer_certificates[0].as_ref(), fresh.cert_der().as_ref());
    // The record of the certificate served at start is counted as missing and held for retry.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let metrics = common::admin_get(gw.admin, "/metrics").await;
        if failed_records(&metrics, "certificate_reloaded") >= 1
            && metrics.contains("phigate_change_records_pending 1")
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the unrecorded change was not counted as pending");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // The trail becomes writable: both changes reach it, in order, with the time each took effect.
    std::fs::remove_file(&blocker).unwrap();
    let fresh_sha = pem_fingerprint(fresh.cert_pem().as_bytes());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let records = loop {
        // The writer's once-a-second probe creates the directory.
        let recs: Vec<Value> =
            if audit_dir.is_dir() { common::audit_records(&audit_dir) } else { Vec::new() }
                .into_iter()
                .filter(|r| r["action"] == "certificate_reloaded")
                .collect();
        if recs.iter().any(|r| r["details"]["sha256"] == fresh_sha.as_str()) {
            break recs;
        }
        assert!(std::time::Instant::now() < deadline, "the held changes never reached the trail");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(
        (records[0]["details"]["trigger"].as_str(), records[1]["details"]["sha256"].as_str()),
        (Some("startup"), Some(fresh_sha.as_str()))
    );
    let (at, ts) = (records[0]["details"]["at"].as_str().unwrap(), records[0]["ts"].as_str().unwrap());
    assert!(at < ts, "`at` is when the change took effect, before it could be written: {at} / {ts}");
    assert!(common::admin_get(gw.admin, "/metrics").await.contains("phigate_change_records_pending 0"));
}

/// The sum of `phigate_change_records_failed_total` for `action`, over every reason.
fn failed_records(metrics: &str, action: &str) -> u64 {
    let series = format!("phigate_change_records_failed_total{{action=\"{action}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with(&series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The newest segment of the trail (these tests write one).
fn common_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    segments.sort();
    segments.pop().unwrap()
}

/// SHA-256 (hex) of the first certificate in a PEM file, as `openssl x509 -outform der | sha256sum`.
fn pem_fingerprint(pem: &[u8]) -> String {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::pem_slice_iter(pem).next().unwrap().unwrap();
    hex::encode(Sha256::digest(der.as_ref()))
}

/// A self-signed `localhost` certificate valid until 17 May of `year`, and its key (PEM).
fn self_signed(year: i32) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_after = rcgen::date_time_ymd(year, 5, 17);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}
