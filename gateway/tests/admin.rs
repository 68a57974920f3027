//! The admin service: health, readiness and Prometheus metrics on their own port, and the
//! token-protected operator actions (listing and lifting exfiltration blocks).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod common;

use common::{admin_get, Env, FullEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_readyz_and_metrics_answer() {
    let env = Env::start().await;
    let client = env.pki.public_client();
    assert_eq!(client.get(&env.gw.url("/fhir/Patient/a-p1")).send().await.unwrap().status, 200);
    assert_eq!(client.get(&env.gw.url("/nowhere")).send().await.unwrap().status, 404);

    assert!(admin_get(env.gw.admin, "/healthz").await.starts_with("HTTP/1.1 200"));
    let ready = admin_get(env.gw.admin, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(ready.contains("\"ready\":true"));
    let metrics = admin_get(env.gw.admin, "/metrics").await;
    assert!(
        metrics.contains("phigate_requests_total{code=\"ok\",route=\"fhir\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("phigate_requests_total{code=\"route_not_found\",route=\"-\",status=\"404\"}"));
    assert!(metrics.contains("phigate_request_duration_seconds_bucket"));
    assert!(metrics.contains("phigate_tls_handshakes_completed_total{listener=\"public\"}"));
    assert!(!metrics.contains("a-p1"), "no patient ids in metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lifts_a_block_with_the_admin_token_and_a_reason() {
    const TOKEN: &str = "0123456789abcdef0123456789abcdef-soc";
    let extra = "admin:\n  token_path: admin.token\n\
                 exfil:\n  alerts_path: alerts/exfil.jsonl\n  \
                 distinct_patients: { threshold: 1, window_secs: 3600, action: block, block_secs: 600 }\n";
    let mut env = FullEnv::start_with(
        |p| std::fs::write(p.parent().unwrap().join("admin.token"), TOKEN).unwrap(),
        extra,
    )
    .await;
    assert_eq!(env.get_as("clinician_a", "/fhir/Patient/a-p1").await.0, 200);
    assert_eq!(env.get_as("clinician_a", "/fhir/Patient/a-p2").await.0, 200);
    common::exfil_alerts(&env, 1).await;
    assert_eq!(env.get_as("clinician_a", "/fhir/Patient/a-p1").await.1, "principal_blocked");

    let admin = env.gw.admin;
    let lift = serde_json::json!({
        "issuer": phigate::demo::personas::ISSUER, "subject": "clinician_a",
        "reason": "INC-4711: chart review for a tumour board, confirmed with her manager",
    });
    // Without the token, or with another, nothing is listed or lifted.
    for token in [None, Some("not-the-token-not-the-token-not-the-token")] {
        let (status, body) = common::admin_call(admin, "POST", "/exfil/unblock", token, Some(&lift)).await;
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("admin_token_invalid")));
        let (status, _) = common::admin_call(admin, "GET", "/exfil/blocks", token, None).await;
        assert_eq!(status, 401);
    }
    assert_eq!(env.get_as("clinician_a", "/fhir/Patient/a-p1").await.1, "principal_blocked");

    let (status, body) = common::admin_call(admin, "GET", "/exfil/blocks", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 1, "{body}");
    assert_eq!(
        (blocks[0]["subject"].as_str(), blocks[0]["source"].as_str()),
        (Some("clinician_a"), Some("local"))
    );

    let bad = serde_json::json!({"issuer": "x", "subject": "clinician_a", "reason": " "});
    let (status, body) = common::admin_call(admin, "POST", "/exfil/unblock", Some(TOKEN), Some(&bad)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")));
    let (status, body) = common::admin_call(admin, "POST", "/exfil/unblock", Some(TOKEN), Some(&lift)).await;
    assert_eq!((status, body["lifted"].as_bool()), (200, Some(true)), "{body}");

    // She is served again, and the lift is on record for the SIEM with its reason.
    assert_eq!(env.get_as("clinician_a", "/fhir/Patient/a-p1").await.0, 200);
    let lines = common::exfil_alerts(&env, 2).await;
    let lifted = lines.iter().find(|l| l["action"] == "lift").expect("a lift line");
    assert_eq!(lifted["principal"]["sub"], "clinician_a");
    assert!(lifted.to_string().contains("INC-4711"), "{lifted}");
    let (_, body) = common::admin_call(admin, "GET", "/exfil/blocks", Some(TOKEN), None).await;
    assert_eq!(body["blocks"].as_array().map(Vec::len), Some(0));
    // The lift is in the hash-chained audit trail too, once, with who and why; the trail verifies.
    // (Operator records also hold the policy revision and certificate in force since startup.)
    let records = env.audit_records();
    let operator = records.iter().filter(|r| r["kind"] == "operator").count();
    let ops: Vec<_> = records.iter().filter(|r| r["action"] == "exfil_unblock").collect();
    assert_eq!(ops.len(), 1, "refused attempts leave no operator record: {ops:?}");
    assert_eq!(ops[0]["action"], "exfil_unblock");
    assert_eq!(ops[0]["details"]["subject"], "clinician_a");
    assert!(ops[0]["details"]["reason"].as_str().unwrap().starts_with("INC-4711"));
    env.gw.stop();
    let report = phigate_audit::verify(&env.pki.dir().join("audit"), None);
    assert_eq!(
        (report.status, report.operator_records),
        (phigate_audit::VerifyStatus::Intact, operator as u64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_file_admin_actions_are_disabled() {
    let extra = "exfil:\n  alerts_path: alerts/exfil.jsonl\n";
    let env = FullEnv::start_with(|_| {}, extra).await;
    let (status, body) =
        common::admin_call(env.gw.admin, "GET", "/exfil/blocks", Some("anything"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("admin_actions_disabled")));
    assert!(common::admin_get(env.gw.admin, "/healthz").await.starts_with("HTTP/1.1 200"));
}
