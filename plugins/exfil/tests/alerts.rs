//! The alerts file: schema of each line, policy-requested alerts, the bounded queue and the
//! writer task, and what never leaks into alerts or metrics.

mod common;

use common::{principal, read, search, Harness};
use phigate_exfil::FlushError;
use std::path::Path;

use phigate_plugin::{Readiness, Stage, StageBuildCtx};

const REASON: &str = "Unconscious patient in ER, chart needed for Jane Roe";

fn policy_alerts(window_secs: u64, queue: usize) -> Harness {
    Harness::new(|c| {
        c.policy_alerts.enabled = true;
        c.policy_alerts.window_secs = window_secs;
        c.queue_capacity = queue;
    })
}

#[allow(clippy::unwrap_used)] // test helper
fn break_glass(id: &str) -> phigate_plugin::RequestCtx {
    let mut ctx = read(&principal("dr-who"), "Patient", id, 200);
    let d = ctx.decision.as_mut().unwrap();
    d.obligations.break_glass = true;
    d.obligations.alert = Some("break_glass_access".into());
    ctx.break_glass_reason = Some(REASON.into());
    ctx
}

#[tokio::test]
async fn alert_lines_carry_the_documented_schema() {
    let h = Harness::new(|c| {
        c.distinct_patients.enabled = true;
        c.distinct_patients.threshold = 6;
        c.sample_patient_ids = 5;
    });
    h.spawn_writer();
    let ids: Vec<String> = (0..7).map(|i| format!("pt-{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    h.run(search(&principal("alice"), &refs, Some(7), 200)).await.unwrap();
    let alerts = h.alerts().await;
    assert_eq!(alerts.len(), 1);
    let a = &alerts[0];
    assert_eq!(a["v"], 1);
    let ts = a["ts"].as_str().unwrap();
    assert!(ts.ends_with('Z') && humantime::parse_rfc3339(ts).is_ok(), "{ts}");
    assert_eq!(a["alert_id"].as_str().unwrap().len(), 36);
    assert_eq!(a["rule"], "distinct_patients");
    assert_eq!(a["principal"]["sub"], "alice");
    assert_eq!(a["principal"]["iss"], common::ISSUER);
    assert_eq!(a["tenant"], "tenant-a");
    assert_eq!(a["session_id"], "sess-1");
    assert_eq!(a["client_id"], "ehr-app");
    assert_eq!(a["source_ip"], "10.1.2.3");
    assert_eq!(a["route"], "fhir");
    assert_eq!((a["observed"].as_u64(), a["threshold"].as_u64()), (Some(7), Some(6)));
    assert_eq!(a["window_secs"], 3600);
    let samples = a["sample_patient_ids"].as_array().unwrap();
    assert_eq!(samples.len(), 5);
    assert!(samples.iter().all(|s| ids.iter().any(|i| s == i)));
    assert_eq!(a["action"], "alert");
    assert!(a["blocked_until"].is_null());
    assert_eq!(a["request_id"], "req-s");
    assert!(a["policy_alert"].is_null() && a["break_glass"].is_null());
    let perms =
        std::fs::metadata(h.alerts_path()).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
    assert_eq!(perms.unwrap() & 0o777, 0o600);
}

#[tokio::test]
async fn sample_patient_ids_zero_quotes_no_patient() {
    let h = Harness::new(|c| {
        c.distinct_patients.enabled = true;
        c.distinct_patients.threshold = 1;
        c.sample_patient_ids = 0;
    });
    h.spawn_writer();
    h.run(search(&principal("alice"), &["secret-1", "secret-2"], None, 200)).await.unwrap();
    let text = {
        h.stage.flush().await.unwrap();
        std::fs::read_to_string(h.alerts_path()).unwrap()
    };
    assert!(text.contains(r#""sample_patient_ids":[]"#), "{text}");
    assert!(!text.contains("secret-"));
}

#[tokio::test]
async fn break_glass_alert_says_a_reason_was_given_but_never_copies_it() {
    let h = policy_alerts(300, 16);
    h.spawn_writer();
    h.run(break_glass("p1")).await.unwrap();
    let text = {
        h.stage.flush().await.unwrap();
        std::fs::read_to_string(h.alerts_path()).unwrap()
    };
    assert!(!text.contains("Jane") && !text.contains("Unconscious"), "{text}");
    let a: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(a["rule"], "policy");
    assert_eq!(a["policy_alert"], "break_glass_access");
    assert_eq!(a["break_glass"]["reason_given"], true);
    assert_eq!(a["break_glass"]["reason_bytes"], REASON.len());
    assert_eq!(a["sample_patient_ids"], serde_json::json!(["p1"]));
    assert_eq!((a["observed"].as_u64(), a["threshold"].as_u64()), (Some(1), Some(0)));
}

#[tokio::test]
async fn policy_alerts_are_deduplicated_per_principal_and_name_within_the_window() {
    let h = policy_alerts(300, 16);
    for id in ["p1", "p2", "p3"] {
        h.run(break_glass(id)).await.unwrap();
    }
    assert_eq!(h.stage.stats().alerts, 1);
    h.advance_secs(300);
    h.run(break_glass("p4")).await.unwrap();
    assert_eq!(h.stage.stats().alerts, 2);

    let every = policy_alerts(0, 16);
    for id in ["p1", "p2", "p3"] {
        every.run(break_glass(id)).await.unwrap();
    }
    assert_eq!(every.stage.stats().alerts, 3, "window_secs: 0 writes one per request");
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_alerts_without_waiting() {
    // The writer is not running yet: the queue (2) fills and the next alerts are dropped, while
    // every request still completes.
    let h = policy_alerts(0, 2);
    for id in ["p1", "p2", "p3", "p4", "p5"] {
        h.run(break_glass(id)).await.unwrap();
    }
    let s = h.stage.stats();
    assert_eq!((s.alerts, s.dropped), (5, 3));
    let before = dropped_full_metric();
    assert!(before >= 3, "{before}");
    h.spawn_writer();
    let alerts = h.alerts().await;
    assert_eq!(alerts.len(), 2);
    assert_eq!(h.stage.stats().written, 2);
}

fn dropped_full_metric() -> u64 {
    prometheus::gather()
        .iter()
        .filter(|f| f.name() == "phigate_exfil_alerts_dropped_total")
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| m.get_label().iter().any(|l| l.value() == "full"))
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

#[tokio::test]
async fn flush_reports_a_writer_that_is_not_running() {
    let h = policy_alerts(0, 2);
    drop(h.stage.background_tasks());
    assert_eq!(h.stage.flush().await, Err(FlushError::WriterStopped));
    assert!(h.stage.background_tasks().is_empty(), "the writer is handed out once");
}

#[tokio::test]
async fn metrics_and_their_labels_never_name_principals_or_patients() {
    let h = Harness::new(|c| {
        c.distinct_patients.enabled = true;
        c.distinct_patients.threshold = 1;
    });
    h.run(search(&principal("subject-zz9"), &["patient-qq7", "patient-qq8"], None, 200)).await.unwrap();
    assert_eq!(h.stage.stats().alerts, 1);
    let mut labels = Vec::new();
    for f in prometheus::gather().iter().filter(|f| f.name().starts_with("phigate_exfil_")) {
        for m in f.get_metric() {
            labels.extend(m.get_label().iter().map(|l| (l.name().to_owned(), l.value().to_owned())));
        }
    }
    assert!(labels.contains(&("rule".into(), "distinct_patients".into())), "{labels:?}");
    for (name, value) in &labels {
        assert!(["rule", "action", "reason"].contains(&name.as_str()), "{name}");
        assert!(!value.contains("zz9") && !value.contains("qq"), "{value}");
    }
}

fn keys(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    for (k, child) in v.as_object().into_iter().flatten() {
        out.push(format!("{prefix}{k}"));
        if child.is_object() {
            keys(child, &format!("{prefix}{k}."), out);
        }
    }
}

fn key_set(v: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    keys(v, "", &mut out);
    out.sort();
    out
}

#[tokio::test]
async fn readme_examples_have_exactly_the_keys_the_stage_writes() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let examples: Vec<serde_json::Value> = readme
        .lines()
        .filter(|l| l.starts_with(r#"{"v":1"#))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(examples.len(), 3);

    let h = policy_alerts(0, 16);
    h.spawn_writer();
    h.run(break_glass("p1")).await.unwrap();
    let real = h.alerts().await;
    assert_eq!(key_set(&examples[1]), key_set(&real[0]), "break-glass example drifted");
    let mut plain = key_set(&examples[0]);
    plain.extend(["break_glass.reason_bytes".to_owned(), "break_glass.reason_given".to_owned()]);
    plain.sort();
    assert_eq!(plain, key_set(&real[0]), "example drifted");

    h.stage.unblock(common::ISSUER, "dr-who", "false positive").unwrap();
    let lifted = h.alerts().await;
    assert_eq!(key_set(&examples[2]), key_set(&lifted[1]), "lift example drifted");
    assert_eq!((&lifted[1]["rule"], &lifted[1]["action"]), (&examples[2]["rule"], &examples[2]["action"]));
}

#[tokio::test]
async fn reload_reopens_the_alerts_file_after_rotation() {
    let h = policy_alerts(0, 16);
    h.spawn_writer();
    h.run(break_glass("p1")).await.unwrap();
    h.stage.flush().await.unwrap();
    let rotated = h.tmp.path().join("alerts.jsonl.1");
    std::fs::rename(h.alerts_path(), &rotated).unwrap();
    h.stage.reload();
    h.run(break_glass("p2")).await.unwrap();
    let now = h.alerts().await;
    assert_eq!(now.len(), 1);
    assert_eq!(now[0]["sample_patient_ids"], serde_json::json!(["p2"]));
    assert_eq!(std::fs::read_to_string(rotated).unwrap().lines().count(), 1);
}

#[tokio::test]
async fn an_unwritable_alerts_file_is_counted_reported_by_flush_and_not_ready() {
    if !Path::new("/dev/full").exists() {
        return; // needs Linux's always-full device
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = common::quiet_config(Path::new("/dev/full"));
    cfg.policy_alerts.enabled = true;
    cfg.policy_alerts.window_secs = 0;
    let stage = cfg.build(&StageBuildCtx { routes: &[], config_dir: tmp.path() }).unwrap();
    for t in stage.background_tasks() {
        tokio::spawn(t);
    }
    assert_eq!(stage.readiness(), Readiness::Ready(None));
    for id in ["p1", "p2"] {
        let mut ctx = break_glass(id);
        stage.on_request(&mut ctx).await.unwrap();
        stage.on_complete(&ctx).await;
    }
    assert_eq!(stage.flush().await, Err(FlushError::Io));
    let s = stage.stats();
    assert_eq!((s.alerts, s.written, s.write_failures), (2, 0, 2));
    assert!(matches!(stage.readiness(), Readiness::NotReady(_)));
}
