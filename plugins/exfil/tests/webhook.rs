//! Alerts POSTed to a webhook: a real HTTPS collector on a loopback port (TLS with a CA of the
//! test's own), real alerts from the detectors. Delivered as the file's lines, with the
//! `Authorization` value from the environment; retried in order while the collector fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod common;

use bytes::Bytes;
use common::{principal, read, Harness};
use phigate_exfil::ShipperConfig;
use phigate_shipper::testing::{collector, Collector};

/// The collector's config, the `Authorization` value from `CARGO_PKG_NAME` (set by cargo for
/// every test process: the value comes from the environment).
fn webhook(c: &Collector) -> ShipperConfig {
    c.config(Some("CARGO_PKG_NAME"))
}

/// One alert from each of `principals` principals reading one patient too many.
async fn raise(h: &Harness, principals: usize, threshold: u64) {
    for p in 0..principals {
        let who = principal(&format!("user-{p}"));
        for id in 0..=threshold {
            h.run(read(&who, "Patient", &format!("p{id}"), 200)).await.unwrap();
        }
    }
}

/// A collector failing its first `fail_first` POSTs, and a watch (more than 2 patients alerts)
/// shipping to it, its writer running.
async fn watched(fail_first: usize) -> (Collector, Harness) {
    let c = collector(fail_first).await;
    let hook = webhook(&c);
    let h = Harness::new(|cfg| {
        cfg.distinct_patients.enabled = true;
        cfg.distinct_patients.threshold = 2;
        cfg.webhook = Some(hook);
    });
    h.spawn_writer();
    (c, h)
}

#[tokio::test]
async fn alerts_reach_the_collector_as_the_files_lines() {
    let (mut c, h) = watched(0).await;
    raise(&h, 3, 2).await;
    let file: Vec<String> = h.alerts().await.iter().map(ToString::to_string).collect();
    assert_eq!(file.len(), 3);
    let mut got = Vec::new();
    while got.len() < 3 {
        let (headers, body) = c.next().await;
        assert_eq!(headers.get("content-type").unwrap(), "application/x-ndjson");
        assert_eq!(headers.get("authorization").unwrap(), env!("CARGO_PKG_NAME"));
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.ends_with('\n'));
        got.extend(text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap().to_string()));
    }
    assert_eq!(got, file, "the file's alerts, in order");
}

#[tokio::test]
async fn a_failing_collector_gets_the_alerts_again_in_order() {
    let (mut c, h) = watched(2).await;
    raise(&h, 1, 2).await;
    h.alerts().await;
    // 503, 503 (the task backs off 1 s, then 2 s), then accepted: the collector answers by count.
    let bodies: Vec<Bytes> = [c.next().await, c.next().await, c.next().await].map(|(_, b)| b).into();
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(bodies[1], bodies[2], "the same lines, retried whole");
    assert!(String::from_utf8_lossy(&bodies[2]).contains("distinct_patients"));
}

#[test]
fn bad_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let routes = vec![common::route()];
    let ctx = phigate_plugin::StageBuildCtx { routes: &routes, config_dir: dir.path() };
    let mut cfg = phigate_exfil::ExfilConfig::new(dir.path().join("alerts.jsonl"));
    cfg.webhook = Some(ShipperConfig {
        url: "http://siem.example/hook".into(),
        ca_path: Some("missing-ca.pem".into()),
        authorization_env: Some("PHIGATE_TEST_SURELY_UNSET_VARIABLE".into()),
        timeout_ms: 10,
        max_pending_bytes: Some(16 << 20),
    });
    let issues = cfg.build(&ctx).unwrap_err();
    let keys: Vec<&str> = issues.iter().map(|i| i.key_path.as_str()).collect();
    assert_eq!(keys, ["webhook.url", "webhook.timeout_ms", "webhook.authorization_env", "webhook.ca_path"]);
    assert!(issues.iter().all(|i| !i.message.contains("siem.example")), "values are never echoed");
}

/// While the collector is down, batches keep arriving: far more than the hand-off holds (a few
/// hundred) wait in the shipper's queue, bounded by `max_pending_bytes`, and all reach the
/// collector in order once it answers; none is dropped.
#[tokio::test]
async fn batches_arriving_while_the_collector_is_down_wait_in_the_bounded_queue() {
    let mut c = collector(1).await;
    let dir = tempfile::tempdir().unwrap();
    let counter = |name: &str| prometheus::IntCounter::new(name, "test").unwrap();
    let metrics = phigate_shipper::Metrics {
        posts: prometheus::IntCounterVec::new(prometheus::Opts::new("posts", "test"), &["result"]).unwrap(),
        delivered: counter("delivered"),
        dropped: counter("dropped"),
    };
    let (handoff, task) =
        c.config(None).build(dir.path(), "webhook", "test shipper", metrics.clone()).unwrap();
    tokio::spawn(task.run());
    handoff.offer(b"line 0\n");
    // The first POST fails: the shipper backs off a second, and 600 batches arrive meanwhile.
    assert_eq!(c.next().await.1, Bytes::from_static(b"line 0\n"));
    for i in 1..=600 {
        handoff.offer(format!("line {i}\n").as_bytes());
        // The owner is another task (or thread): the shipper runs between its batches.
        tokio::task::yield_now().await;
    }
    let mut lines = Vec::new();
    while lines.len() < 601 {
        let (_, body) = c.next().await;
        lines.extend(String::from_utf8(body.to_vec()).unwrap().lines().map(str::to_owned));
    }
    let expected: Vec<String> = (0..=600).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected, "every line, once, in order");
    assert_eq!(metrics.dropped.get(), 0);
}
