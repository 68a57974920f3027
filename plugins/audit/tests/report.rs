//! `report` over a real trail written by the stage: accesses merged per request, filtered by
//! patient, subject, tenant, time, break-glass and refusal; FHIR AuditEvents; nothing at all
//! from a trail that does not verify.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a test failure

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use phigate_audit::{parse_time, report, AuditStage, ReportError, ReportFormat, ReportQuery};
use phigate_plugin::{ErrorCode, PatientId, Principal, Stage, Subject, TenantId};
use serde_json::Value;

/// A forwarded read of `patient` by `subject`, answered `status`.
async fn forwarded(stage: &AuditStage, id: &str, subject: &str, patient: &str, status: u16) {
    let mut ctx = read_ctx(id);
    ctx.principal = Some(std::sync::Arc::new(Principal {
        tenant: Some(TenantId::new("tenant-a")),
        session_id: Some("sid-9".into()),
        client_id: Some("ehr-app".into()),
        ..Principal::new("https://idp.example", Subject::new(subject))
    }));
    ctx.fhir.as_mut().unwrap().patients = vec![PatientId::new(patient)];
    stage.on_request(&mut ctx).await.unwrap();
    answered(&mut ctx, status);
    stage.on_complete(&ctx).await;
}

/// Three accesses: dr-alice reads p1 (200), dr-bob reads p2 by break-glass (200; the response,
/// as verified, named p2 and p5), dr-bob is refused p1 (403, never forwarded), then one attempt
/// whose outcome was never written.
async fn trail(env: &Env) {
    let stage = env.stage();
    forwarded(&stage, "r-1", "dr-alice", "p1", 200).await;

    let mut ctx = read_ctx("r-2");
    ctx.principal = Some(std::sync::Arc::new(Principal::new("https://idp.example", Subject::new("dr-bob"))));
    ctx.fhir.as_mut().unwrap().patients = vec![PatientId::new("p2")];
    ctx.break_glass_reason = Some("patient unconscious in ED".into());
    ctx.decision.as_mut().unwrap().obligations.break_glass = true;
    stage.on_request(&mut ctx).await.unwrap();
    answered(&mut ctx, 200);
    ctx.response.patients = Some(vec![PatientId::new("p2"), PatientId::new("p5")]);
    stage.on_complete(&ctx).await;

    let mut ctx = read_ctx("r-3");
    ctx.principal = Some(std::sync::Arc::new(Principal::new("https://idp.example", Subject::new("dr-bob"))));
    refused(&mut ctx, ErrorCode::PatientNotPermitted);
    stage.on_complete(&ctx).await;

    let mut ctx = read_ctx("r-4");
    stage.on_request(&mut ctx).await.unwrap();
}

fn jsonl(env: &Env, query: &ReportQuery) -> Vec<Value> {
    let mut out = Vec::new();
    let summary =
        report(&env.audit_dir, Some(&env.public_key), query, ReportFormat::Jsonl, &mut out).unwrap();
    let rows: Vec<Value> =
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(summary.reported as usize, rows.len());
    assert_eq!(summary.accesses, 4);
    rows
}

fn ids(rows: &[Value]) -> Vec<&str> {
    rows.iter().map(|r| r["request_id"].as_str().unwrap()).collect()
}

/// A write caught in flight (half a record at the end of the newest segment) is not an access:
/// the report is the same as without it.
#[tokio::test]
async fn a_half_written_last_line_is_left_for_the_next_report() {
    use std::io::Write;
    let env = Env::new();
    trail(&env).await;
    let before = jsonl(&env, &ReportQuery::default());
    let newest = env.segments().pop().unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(newest).unwrap();
    f.write_all(br#"{"v":1,"kind":"access","phase":"attempt","request_id":"r-5","ts":"2026-"#).unwrap();
    assert_eq!(jsonl(&env, &ReportQuery::default()), before);
}

#[tokio::test]
async fn one_row_per_access_with_attempt_and_outcome_merged() {
    let env = Env::new();
    trail(&env).await;
    let rows = jsonl(&env, &ReportQuery::default());
    assert_eq!(ids(&rows), ["r-1", "r-2", "r-3", "r-4"]);
    let outcomes: Vec<_> =
        rows.iter().map(|r| (r["outcome"].as_str().unwrap(), r["status"].as_u64())).collect();
    assert_eq!(
        outcomes,
        [("forwarded", Some(200)), ("forwarded", Some(200)), ("denied", Some(403)), ("incomplete", None)]
    );
    let first = &rows[0];
    assert_eq!(
        (first["subject"].as_str(), first["issuer"].as_str()),
        (Some("dr-alice"), Some("https://idp.example"))
    );
    assert_eq!(
        (first["session_id"].as_str(), first["source_ip"].as_str()),
        (Some("sid-9"), Some("10.1.2.3"))
    );
    assert_eq!(first["patients"], serde_json::json!(["p1"]));
    assert_eq!(first["disclosed"], serde_json::json!([]), "the response was not read");
    assert_eq!(rows[1]["disclosed"], serde_json::json!(["p2", "p5"]));
    assert_eq!(
        (first["interaction"].as_str(), first["resource_type"].as_str()),
        (Some("search-type"), Some("Observation"))
    );
    // The access starts at its attempt: the row's time is the attempt record's.
    let attempt = access(&env.audit_dir, "r-1").into_iter().find(|r| r["phase"] == "attempt").unwrap();
    assert_eq!(first["ts"], attempt["ts"]);
    assert_eq!(rows[2]["error"], "patient_not_permitted");
    assert_eq!(
        (rows[1]["break_glass"].as_bool(), rows[1]["break_glass_reason"].as_str()),
        (Some(true), Some("patient unconscious in ED"))
    );
    // Never the token or a raw query value.
    let text = rows.iter().map(Value::to_string).collect::<String>();
    assert!(!text.contains(TOKEN) && !text.contains(SEARCHED_NAME));
}

#[tokio::test]
async fn filters_by_patient_subject_tenant_break_glass_and_refusal() {
    let env = Env::new();
    trail(&env).await;
    let q = |f: fn(&mut ReportQuery)| {
        let mut q = ReportQuery::default();
        f(&mut q);
        q
    };
    // Everyone who touched p1, including the refused attempt and the incomplete one.
    assert_eq!(ids(&jsonl(&env, &q(|q| q.patient = Some("p1".into())))), ["r-1", "r-3", "r-4"]);
    assert_eq!(ids(&jsonl(&env, &q(|q| q.subject = Some("dr-bob".into())))), ["r-2", "r-3"]);
    // p5 was not named by any request, but a response reached her.
    assert_eq!(ids(&jsonl(&env, &q(|q| q.patient = Some("p5".into())))), ["r-2"]);
    assert_eq!(ids(&jsonl(&env, &q(|q| q.break_glass_only = true))), ["r-2"]);
    assert_eq!(ids(&jsonl(&env, &q(|q| q.denied_only = true))), ["r-3"]);
    assert!(jsonl(&env, &q(|q| q.tenant = Some("tenant-b".into()))).is_empty());
    assert_eq!(jsonl(&env, &q(|q| q.tenant = Some("tenant-a".into()))).len(), 4);
}

#[tokio::test]
async fn time_bounds_are_inclusive_from_and_exclusive_until() {
    let env = Env::new();
    trail(&env).await;
    let all = jsonl(&env, &ReportQuery::default());
    let second = parse_time(all[1]["ts"].as_str().unwrap()).unwrap();
    let from = ReportQuery { since: Some(second), ..ReportQuery::default() };
    assert_eq!(ids(&jsonl(&env, &from)), ["r-2", "r-3", "r-4"]);
    let until = ReportQuery { until: Some(second), ..ReportQuery::default() };
    assert_eq!(ids(&jsonl(&env, &until)), ["r-1"]);
    let future =
        ReportQuery { since: Some(SystemTime::now() + Duration::from_secs(3600)), ..ReportQuery::default() };
    assert!(jsonl(&env, &future).is_empty());
}

#[tokio::test]
async fn fhir_format_is_a_bundle_of_audit_events() {
    let env = Env::new();
    trail(&env).await;
    let mut out = Vec::new();
    report(&env.audit_dir, Some(&env.public_key), &ReportQuery::default(), ReportFormat::Fhir, &mut out)
        .unwrap();
    let bundle: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (bundle["resourceType"].as_str(), bundle["type"].as_str()),
        (Some("Bundle"), Some("collection"))
    );
    let events: Vec<&Value> = bundle["entry"].as_array().unwrap().iter().map(|e| &e["resource"]).collect();
    assert_eq!(events.len(), 4);
    let e = events[0];
    assert_eq!((e["resourceType"].as_str(), e["id"].as_str()), (Some("AuditEvent"), Some("r-1")));
    assert_eq!(
        (e["type"]["code"].as_str(), e["subtype"][0]["code"].as_str()),
        (Some("rest"), Some("search-type"))
    );
    assert_eq!((e["action"].as_str(), e["outcome"].as_str()), (Some("R"), Some("0")));
    let who = &e["agent"][0]["who"]["identifier"];
    assert_eq!(
        (who["system"].as_str(), who["value"].as_str()),
        (Some("https://idp.example"), Some("dr-alice"))
    );
    assert_eq!(e["agent"][0]["network"]["address"], "10.1.2.3");
    assert_eq!(e["agent"][1]["who"]["display"], "ehr-app");
    assert_eq!(e["entity"][0]["what"]["reference"], "Patient/p1");
    assert_eq!(e["entity"][0]["role"]["code"], "1");
    // Break-glass: purpose of use ETREAT and the justification; refused: outcome 4 with the code.
    assert_eq!(events[1]["purposeOfEvent"][0]["coding"][0]["code"], "ETREAT");
    let reached: Vec<&str> = events[1]["entity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["what"]["reference"].as_str().unwrap())
        .collect();
    assert_eq!(reached, ["Patient/p2", "Patient/p5"], "named and disclosed, each once");
    assert_eq!(events[1]["agent"][0]["purposeOfUse"][0]["text"], "patient unconscious in ED");
    assert_eq!(
        (events[2]["outcome"].as_str(), events[2]["outcomeDesc"].as_str()),
        (Some("4"), Some("patient_not_permitted"))
    );
    assert_eq!(events[3]["outcomeDesc"], "no outcome recorded");
}

#[tokio::test]
async fn a_trail_that_does_not_verify_gives_no_report() {
    let env = Env::new();
    trail(&env).await;
    // An edit that hides dr-bob's refused attempt: the report must not silently leave it out.
    let seg = env.segments().remove(0);
    let text = std::fs::read_to_string(&seg).unwrap().replace("\"dr-bob\"", "\"dr-eve\"");
    std::fs::write(&seg, text).unwrap();
    let mut out = Vec::new();
    let err =
        report(&env.audit_dir, Some(&env.public_key), &ReportQuery::default(), ReportFormat::Jsonl, &mut out)
            .unwrap_err();
    assert!(matches!(err, ReportError::NotIntact(_)), "{err}");
    assert_eq!(err.exit_code(), 1);
    assert!(out.is_empty(), "nothing written from a tampered trail");
    let missing =
        report(&env.tmp.path().join("nowhere"), None, &ReportQuery::default(), ReportFormat::Jsonl, &mut out)
            .unwrap_err();
    assert_eq!(missing.exit_code(), 2);
}

#[test]
fn times_parse_as_utc_dates_or_rfc3339() {
    let midnight = parse_time("2026-11-01").unwrap();
    assert_eq!(parse_time("2026-11-01T00:00:00Z").unwrap(), midnight);
    assert_eq!(parse_time("2026-11-01T00:00:01.5Z").unwrap(), midnight + Duration::from_millis(1500));
    assert!(parse_time("yesterday").is_err() && parse_time("2026-13-01").is_err());
}
