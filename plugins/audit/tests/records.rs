//! Every request kind leaves the right records, with every required field, and nothing secret.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a test failure

mod common;

use common::*;
use phigate_audit::{verify, VerifyStatus};
use phigate_plugin::{Change, ChangeEvent, ChangeTrigger, ErrorCode, Flow, Stage};

const REQUIRED: &[&str] = &[
    "v",
    "kind",
    "seq",
    "ts",
    "phase",
    "request_id",
    "trace_id",
    "tenant",
    "subject",
    "issuer",
    "session_id",
    "client_id",
    "source_ip",
    "client_cert",
    "method",
    "route",
    "path",
    "fhir",
    "bulk",
    "patients",
    "disclosed",
    "query",
    "decision",
    "break_glass_reason",
    "forwarded",
    "status",
    "bytes_out",
    "entries",
    "upstream_latency_us",
    "gateway_latency_us",
    "error",
    "prev",
    "hash",
];

fn assert_has_every_field(rec: &serde_json::Value) {
    for k in REQUIRED {
        assert!(rec.get(k).is_some(), "record lacks `{k}`: {rec}");
    }
    let ts = rec["ts"].as_str().unwrap();
    assert!(ts.ends_with('Z') && ts.len() == "2026-11-23T10:15:10.123456Z".len(), "{ts}");
}

#[tokio::test]
async fn allowed_read_records_attempt_then_outcome_with_every_field() {
    let env = Env::new();
    let stage = env.stage();
    let mut ctx = read_ctx("req-read");
    ctx.break_glass_reason = Some("ER admission".into());
    assert!(matches!(stage.on_request(&mut ctx).await, Ok(Flow::Continue)));
    answered(&mut ctx, 200);
    ctx.response.patients = Some(vec![phigate_plugin::PatientId::new("p1")]);
    stage.on_complete(&ctx).await;

    let recs = access(&env.audit_dir, "req-read");
    assert_eq!(recs.len(), 2);
    let (attempt, outcome) = (&recs[0], &recs[1]);
    for r in &recs {
        assert_has_every_field(r);
        assert_eq!(r["v"], 1);
        assert_eq!(r["tenant"], "tenant-a");
        assert_eq!(r["subject"], "dr-alice");
        assert_eq!(r["session_id"], "sid-123");
        assert_eq!(r["client_id"], "ehr-app");
        assert_eq!(r["source_ip"], "10.1.2.3");
        assert_eq!(r["client_cert"], "x5t-thumb");
        assert_eq!(r["method"], "GET");
        assert_eq!(r["route"], "fhir");
        assert_eq!(r["fhir"]["interaction"], "search-type");
        assert_eq!(r["fhir"]["resource_type"], "Observation");
        assert_eq!(r["patients"], serde_json::json!(["p1"]));
        assert_eq!(r["decision"]["allow"], true);
        assert_eq!(r["decision"]["reasons"], serde_json::json!(["care_team"]));
        assert_eq!(r["decision"]["revision"], "rev-abc");
        assert_eq!(r["break_glass_reason"], "ER admission");
    }
    assert_eq!(attempt["phase"], "attempt");
    assert_eq!(attempt["status"], serde_json::Value::Null);
    assert_eq!(attempt["disclosed"], serde_json::Value::Null, "nothing was answered yet");
    assert_eq!(outcome["disclosed"], serde_json::json!(["p1"]));
    assert_eq!(outcome["phase"], "outcome");
    assert_eq!(outcome["forwarded"], true);
    assert_eq!(outcome["status"], 200);
    assert_eq!(outcome["bytes_out"], 1234);
    assert_eq!(outcome["entries"], 3);
    assert_eq!(outcome["upstream_latency_us"], 850);
    assert!(outcome["gateway_latency_us"].as_u64().is_some());
    assert_eq!(outcome["prev"], attempt["hash"], "consecutive records are chained");
    assert_eq!(outcome["seq"].as_u64(), attempt["seq"].as_u64().map(|s| s + 1));
    drop(stage);
    assert_eq!(verify(&env.audit_dir, Some(&env.public_key)).status, VerifyStatus::Intact);
}

#[tokio::test]
async fn policy_denial_records_denied_with_decision_and_error() {
    let env = Env::new();
    let stage = env.stage();
    let mut ctx = read_ctx("req-deny");
    ctx.decision.as_mut().unwrap().allow = false;
    ctx.decision.as_mut().unwrap().reasons = vec!["not_on_care_team".into()];
    refused(&mut ctx, ErrorCode::PatientNotPermitted);
    // Policy refused: the audit stage's on_request never ran; only on_complete does.
    stage.on_complete(&ctx).await;

    let recs = access(&env.audit_dir, "req-deny");
    assert_eq!(recs.len(), 1);
    assert_has_every_field(&recs[0]);
    assert_eq!(recs[0]["phase"], "denied");
    assert_eq!(recs[0]["forwarded"], false);
    assert_eq!(recs[0]["status"], 403);
    assert_eq!(recs[0]["error"], "patient_not_permitted");
    assert_eq!(recs[0]["decision"]["allow"], false);
    assert_eq!(recs[0]["decision"]["reasons"], serde_json::json!(["not_on_care_team"]));
    assert_eq!(recs[0]["subject"], "dr-alice");
}

#[tokio::test]
async fn a_refusal_is_on_disk_when_on_refused_returns_and_recorded_once() {
    let env = Env::new();
    let stage = env.stage();
    for i in 0..10 {
        let id = format!("req-refused-{i}");
        let mut ctx = read_ctx(&id);
        refused(&mut ctx, ErrorCode::PatientNotPermitted);
        // What the gateway calls before it writes the refusal to the client.
        stage.on_refused(&mut ctx).await;
        let recs = access(&env.audit_dir, &id);
        assert_eq!(recs.len(), 1, "denied record for {id} must be on disk before the answer");
        assert_eq!((recs[0]["phase"].as_str(), recs[0]["status"].as_u64()), (Some("denied"), Some(403)));
        // After the answer: no second record.
        stage.on_complete(&ctx).await;
        assert_eq!(access(&env.audit_dir, &id).len(), 1);
    }
    // A refusal the gateway did not announce (no `on_refused`) is still recorded on completion.
    let mut ctx = read_ctx("req-unannounced");
    refused(&mut ctx, ErrorCode::PatientNotPermitted);
    stage.on_complete(&ctx).await;
    assert_eq!(access(&env.audit_dir, "req-unannounced").len(), 1);
}

#[tokio::test]
async fn identity_denial_records_denied_without_principal() {
    let env = Env::new();
    let stage = env.stage();
    let mut ctx = read_ctx("req-401");
    ctx.principal = None;
    ctx.decision = None;
    refused(&mut ctx, ErrorCode::TokenExpired);
    stage.on_complete(&ctx).await;

    let recs = access(&env.audit_dir, "req-401");
    assert_eq!(recs.len(), 1);
    assert_has_every_field(&recs[0]);
    assert_eq!(recs[0]["phase"], "denied");
    assert_eq!(recs[0]["status"], 401);
    assert_eq!(recs[0]["error"], "token_expired");
    assert_eq!(recs[0]["subject"], serde_json::Value::Null);
    assert_eq!(recs[0]["source_ip"], "10.1.2.3");
}

#[tokio::test]
async fn upstream_error_records_outcome_with_error_code() {
    let env = Env::new();
    let stage = env.stage();
    let mut ctx = read_ctx("req-502");
    stage.on_request(&mut ctx).await.unwrap();
    ctx.response.forwarded = true;
    ctx.response.status = Some(502);
    ctx.error = Some(ErrorCode::UpstreamError);
    stage.on_complete(&ctx).await;

    let recs = access(&env.audit_dir, "req-502");
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1]["phase"], "outcome");
    assert_eq!(recs[1]["status"], 502);
    assert_eq!(recs[1]["error"], "upstream_error");
    assert_has_every_field(&recs[1]);
}

#[tokio::test]
async fn attempt_is_on_disk_when_on_request_returns() {
    let env = Env::new();
    let stage = env.stage();
    for i in 0..20 {
        let id = format!("req-durable-{i}");
        let mut ctx = read_ctx(&id);
        stage.on_request(&mut ctx).await.unwrap();
        // Read the file through a fresh descriptor: what the upstream could see right now.
        let recs = access(&env.audit_dir, &id);
        assert_eq!(recs.len(), 1, "attempt for {id} must be on disk before forwarding");
        assert_eq!(recs[0]["phase"], "attempt");
    }
}

#[tokio::test]
async fn no_token_or_raw_query_value_in_any_record() {
    let env = Env::new();
    let stage = env.stage();
    let mut ctx = read_ctx("req-secret");
    stage.on_request(&mut ctx).await.unwrap();
    answered(&mut ctx, 200);
    stage.on_complete(&ctx).await;
    drop(stage);

    let mut all = Vec::new();
    for entry in std::fs::read_dir(&env.audit_dir).unwrap() {
        all.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let text = String::from_utf8(all).unwrap();
    assert!(!text.contains(TOKEN), "token leaked");
    assert!(!text.contains("eyJ"), "token fragment leaked");
    assert!(!text.contains("Bearer"), "authorization header leaked");
    assert!(!text.contains(SEARCHED_NAME), "query value leaked");

    let rec = &access(&env.audit_dir, "req-secret")[0];
    let q = rec["query"].as_array().unwrap();
    assert_eq!(q[0], serde_json::json!({"name": "patient", "value": "Patient/p1"}));
    assert_eq!(q[1]["name"], "name");
    assert!(q[1].get("value").is_none());
    assert_eq!(q[1]["value_hmac"].as_str().unwrap().len(), 43, "HMAC-SHA256, base64url");
    assert_eq!(q[2]["name"], "_count");
}

#[tokio::test]
async fn equal_query_values_get_equal_hmacs_so_investigators_can_correlate() {
    let env = Env::new();
    let stage = env.stage();
    for id in ["a", "b"] {
        stage.on_request(&mut read_ctx(id)).await.unwrap();
    }
    let (a, b) = (&access(&env.audit_dir, "a")[0], &access(&env.audit_dir, "b")[0]);
    assert_eq!(a["query"][1]["value_hmac"], b["query"][1]["value_hmac"]);
    assert_ne!(a["query"][1]["value_hmac"], a["query"][2]["value_hmac"]);
}

#[tokio::test]
async fn without_hmac_key_query_values_are_not_recorded() {
    let env = Env::new();
    let mut cfg = env.config();
    cfg.hmac_key_path = None;
    let stage = build(cfg, env.tmp.path());
    stage.on_request(&mut read_ctx("nokey")).await.unwrap();
    let rec = &access(&env.audit_dir, "nokey")[0];
    assert_eq!(rec["query"][1], serde_json::json!({"name": "name"}));
}

#[tokio::test]
async fn an_operator_action_is_chained_durably_with_the_accesses_and_verified() {
    let env = Env::new();
    let stage = env.stage();
    let mut ctx = read_ctx("req-before-lift");
    stage.on_request(&mut ctx).await.unwrap();
    let details = serde_json::json!({"issuer": "https://idp", "subject": "clinician_a", "reason": "INC-1"});
    stage.record_operator_action("exfil_unblock", &details).await.unwrap();
    // Durable when it returns: on disk through a fresh descriptor, after the access before it.
    let lines = env.lines();
    let op = lines.iter().find(|l| l["kind"] == "operator").expect("an operator record");
    assert_eq!((op["action"].as_str(), &op["details"]), (Some("exfil_unblock"), &details));
    assert!(op["seq"].as_u64() > lines.iter().find(|l| l["kind"] == "access").unwrap()["seq"].as_u64());
    drop(stage);
    let report = verify(&env.audit_dir, Some(&env.public_key));
    assert_eq!((report.status, report.operator_records, report.records), (VerifyStatus::Intact, 1, 1));

    // Rewriting what the operator did is caught like any other edit.
    let seg = env.segments().pop().unwrap();
    let text = std::fs::read_to_string(&seg).unwrap();
    std::fs::write(&seg, text.replace("INC-1", "INC-2")).unwrap();
    assert_eq!(verify(&env.audit_dir, Some(&env.public_key)).status, VerifyStatus::Tampered);
}

#[tokio::test]
async fn a_change_is_chained_with_its_trigger_and_time_and_an_edit_to_it_is_detected() {
    let env = Env::new();
    let stage = env.stage();
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_795_000_000_123_456);
    let change = Change::PolicyRevisionApplied { previous: Some("1111".into()), revision: "2222".into() };
    stage.record_change(&ChangeEvent { at, trigger: ChangeTrigger::Watch, change }).await.unwrap();
    let failed = Change::CertificateReloadFailed {
        listener: "public".into(),
        active_sha256: "ab".repeat(32),
        reason: "invalid",
    };
    stage.record_change(&ChangeEvent::now(ChangeTrigger::Sighup, failed)).await.unwrap();
    // Durable when it returns.
    let ops: Vec<_> = env.lines().into_iter().filter(|l| l["kind"] == "operator").collect();
    assert_eq!(ops.len(), 2);
    assert_eq!(ops[0]["action"], "policy_revision_applied");
    assert_eq!(
        ops[0]["details"],
        serde_json::json!({
            "previous": "1111", "revision": "2222", "trigger": "watch",
            "at": "2026-11-18T11:06:40.123456Z",
        })
    );
    assert_eq!(ops[1]["action"], "certificate_reload_failed");
    assert_eq!(
        (ops[1]["details"]["reason"].as_str(), ops[1]["details"]["trigger"].as_str()),
        (Some("invalid"), Some("sighup"))
    );
    drop(stage);
    let report = verify(&env.audit_dir, Some(&env.public_key));
    assert_eq!((report.status, report.operator_records), (VerifyStatus::Intact, 2));

    // Back-dating the revision, or swapping its hash, is caught like any other edit.
    let seg = env.segments().pop().unwrap();
    let text = std::fs::read_to_string(&seg).unwrap();
    std::fs::write(&seg, text.replace("\"revision\":\"2222\"", "\"revision\":\"3333\"")).unwrap();
    let report = verify(&env.audit_dir, Some(&env.public_key));
    assert_eq!(report.status, VerifyStatus::Tampered);
    assert!(report.failure.unwrap().reason.contains("hash"), "the edited line fails its own hash");
}
