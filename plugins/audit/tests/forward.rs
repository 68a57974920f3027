//! The trail forwarded off the host as it is written: a real HTTPS collector on a loopback port
//! receives exactly the segment stream (header, records, checkpoints, hash chain included), in
//! order; a request never waits for it.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod common;

use common::*;
use phigate_audit::{verify, verify_stream, AuditStage, VerifyStatus, CURSOR_FILE};
use phigate_plugin::{Flow, Stage};
use phigate_shipper::testing::{collector, Collector};
use tokio::task::JoinHandle;

#[tokio::test]
async fn the_collector_gets_the_segment_stream_as_written() {
    let env = Env::new();
    let mut c = collector(0).await;
    let mut cfg = env.config();
    cfg.forward = Some(c.config(None));
    let stage = build(cfg, env.tmp.path());
    for t in stage.background_tasks() {
        tokio::spawn(t);
    }
    for i in 0..5 {
        let mut ctx = read_ctx(&format!("req-{i}"));
        assert!(matches!(stage.on_request(&mut ctx).await, Ok(Flow::Continue)));
        answered(&mut ctx, 200);
        stage.on_complete(&ctx).await;
    }
    drop(stage); // joins the writer: everything is on disk (and handed over)
    let on_disk: Vec<u8> = env.segments().iter().flat_map(|p| std::fs::read(p).unwrap()).collect();
    let mut shipped = Vec::new();
    while shipped.len() < on_disk.len() {
        let (headers, body) = c.next().await;
        assert_eq!(headers.get("content-type").unwrap(), "application/x-ndjson");
        shipped.extend_from_slice(&body);
    }
    assert_eq!(String::from_utf8(shipped).unwrap(), String::from_utf8(on_disk).unwrap());
    assert_eq!(verify(&env.audit_dir, Some(&env.public_key)).status, VerifyStatus::Intact);
}

/// A stage forwarding to `c`, its forwarder running; the handle ends once the stage is dropped
/// and everything durable was delivered.
fn forwarding(env: &Env, c: &Collector, segment_max_bytes: Option<u64>) -> (AuditStage, JoinHandle<()>) {
    let mut cfg = env.config();
    cfg.forward = Some(c.config(None));
    if let Some(max) = segment_max_bytes {
        cfg.segment_max_bytes = max;
    }
    let stage = build(cfg, env.tmp.path());
    let mut tasks = stage.background_tasks();
    assert_eq!(tasks.len(), 1);
    let task = tokio::spawn(tasks.remove(0));
    (stage, task)
}

/// Waits for the forwarder to end (at most 30 s: a forwarder that never catches up fails here).
async fn finished(task: JoinHandle<()>) {
    tokio::time::timeout(std::time::Duration::from_secs(30), task)
        .await
        .expect("the forwarder delivers everything and ends")
        .unwrap();
}

async fn write_records(stage: &AuditStage, prefix: &str, n: usize) {
    for i in 0..n {
        let mut ctx = read_ctx(&format!("{prefix}-{i}"));
        assert!(matches!(stage.on_request(&mut ctx).await, Ok(Flow::Continue)));
        answered(&mut ctx, 200);
        stage.on_complete(&ctx).await;
    }
}

/// The trail's bytes, every segment in order.
fn trail(env: &Env) -> Vec<u8> {
    env.segments().iter().flat_map(|p| std::fs::read(p).unwrap()).collect()
}

/// The bodies the collector accepted (it answered 200), concatenated.
fn accepted(posts: Vec<phigate_shipper::testing::Received>) -> String {
    String::from_utf8(posts.into_iter().flat_map(|(_, body)| body.to_vec()).collect()).unwrap()
}

#[tokio::test]
async fn a_restart_resumes_where_delivery_stopped_and_sends_nothing_twice() {
    let env = Env::new();
    // Run 1: the collector refuses everything, and the process dies with nothing delivered.
    let mut down = collector(usize::MAX).await;
    let (stage, task) = forwarding(&env, &down, None);
    write_records(&stage, "first", 3).await;
    let (_, refused) = down.next().await; // the forwarder is running and has saved its start
    assert!(!refused.is_empty());
    drop(stage);
    task.abort();
    let cursor = std::fs::read_to_string(env.audit_dir.join(CURSOR_FILE)).unwrap();
    assert_eq!(cursor.trim(), r#"{"segment":1,"offset":0}"#);

    // Run 2: a collector that works gets what run 1 wrote, then what run 2 writes.
    let mut up = collector(0).await;
    let (stage, task) = forwarding(&env, &up, None);
    write_records(&stage, "second", 2).await;
    drop(stage);
    finished(task).await; // everything durable was delivered and the cursor saved
    let after_two = trail(&env);
    let copy = accepted(up.taken_now());
    assert_eq!(copy, String::from_utf8(after_two.clone()).unwrap());

    // Run 3: only what run 3 writes; nothing of runs 1 and 2 again.
    let mut next = collector(0).await;
    let (stage, task) = forwarding(&env, &next, None);
    write_records(&stage, "third", 1).await;
    drop(stage);
    finished(task).await;
    let all = trail(&env);
    assert!(all.len() > after_two.len());
    let more = accepted(next.taken_now());
    assert_eq!(more, String::from_utf8(all[after_two.len()..].to_vec()).unwrap());
    assert_eq!(verify(&env.audit_dir, Some(&env.public_key)).status, VerifyStatus::Intact);
    // What the collectors received, stored one after the other, verifies as a copy.
    let stored = env.tmp.path().join("collected.ndjson");
    std::fs::write(&stored, copy + &more).unwrap();
    let report = verify_stream(&stored, Some(&env.public_key));
    assert_eq!(report.status, VerifyStatus::Intact, "{report}");
    assert_eq!(report.records, 12);
}

#[tokio::test]
async fn the_stream_is_delivered_across_rotated_segments() {
    let env = Env::new();
    let mut c = collector(0).await;
    let (stage, task) = forwarding(&env, &c, Some(64 << 10));
    write_records(&stage, "rotating", 150).await;
    drop(stage);
    finished(task).await;
    assert!(env.segments().len() >= 2, "the records filled more than one segment");
    assert_eq!(accepted(c.taken_now()), String::from_utf8(trail(&env)).unwrap());
}

/// The bytes of the segments from the `from`-th (0-based) on.
fn segments_from(env: &Env, from: usize) -> String {
    let bytes: Vec<u8> = env.segments()[from..].iter().flat_map(|p| std::fs::read(p).unwrap()).collect();
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn a_first_start_sends_the_current_segment_from_its_header_and_a_damaged_cursor_the_newest() {
    let env = Env::new();
    let mut cfg = env.config();
    cfg.segment_max_bytes = 64 << 10;
    let stage = build(cfg, env.tmp.path());
    write_records(&stage, "before", 150).await;
    drop(stage);
    let older = env.segments().len() - 1;
    assert!(older >= 1, "older segments exist");

    // First start with `forward`: the segment it appends to, from its header; no older one.
    let mut c = collector(0).await;
    let (stage, task) = forwarding(&env, &c, Some(64 << 10));
    write_records(&stage, "new", 2).await;
    drop(stage);
    finished(task).await;
    let shipped = accepted(c.taken_now());
    assert!(shipped.starts_with(r#"{"v":1,"kind":"segment""#), "{}", &shipped[..80]);
    assert_eq!(shipped, segments_from(&env, older));

    // A cursor that does not fit the files: the newest segment again, from its header.
    let newest = env.segments().len() - 1;
    let index = newest as u64 + 1;
    for damaged in ["not json".to_owned(), format!(r#"{{"segment":{index},"offset":5}}"#)] {
        std::fs::write(env.audit_dir.join(CURSOR_FILE), &damaged).unwrap();
        let mut c = collector(0).await;
        let (stage, task) = forwarding(&env, &c, Some(64 << 10));
        write_records(&stage, "later", 1).await;
        drop(stage);
        finished(task).await;
        assert_eq!(accepted(c.taken_now()), segments_from(&env, newest), "{damaged}");
    }
}

#[tokio::test]
async fn a_torn_tail_reaches_the_collector_as_the_files_hold_it() {
    let env = Env::new();
    let mut c = collector(0).await;
    let (stage, task) = forwarding(&env, &c, None);
    write_records(&stage, "whole", 2).await;
    drop(stage);
    finished(task).await;
    let delivered = trail(&env).len();
    let first = accepted(c.taken_now());
    assert_eq!(first.len(), delivered);
    // A crash in the middle of a write: half a line at the end of the segment.
    let seg = env.segments().pop().unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut f, br#"{"v":1,"kind":"access","seq":9"#).unwrap();
    drop(f);

    // The restart repairs it (newline, chained recovery record); the copy gets the same bytes.
    let mut c = collector(0).await;
    let (stage, task) = forwarding(&env, &c, None);
    write_records(&stage, "after", 1).await;
    drop(stage);
    finished(task).await;
    let all = trail(&env);
    let shipped = accepted(c.taken_now());
    assert!(shipped.starts_with(r#"{"v":1,"kind":"access","seq":9"#), "{shipped}");
    assert!(shipped.contains(r#""kind":"recovery""#));
    assert_eq!(shipped, String::from_utf8(all[delivered..].to_vec()).unwrap());
    let stored = env.tmp.path().join("collected.ndjson");
    std::fs::write(&stored, first + &shipped).unwrap();
    let report = verify_stream(&stored, Some(&env.public_key));
    assert_eq!(report.status, VerifyStatus::Intact, "{report}");
    assert_eq!(report.recoveries, 1);
}

#[test]
fn bad_forward_settings_are_named_under_forward() {
    let env = Env::new();
    let mut cfg = env.config();
    let mut bad = phigate_shipper::ShipperConfig {
        url: "ftp://collector".into(),
        ca_path: None,
        authorization_env: None,
        timeout_ms: 5000,
        max_pending_bytes: None,
    };
    bad.timeout_ms = 0;
    bad.max_pending_bytes = Some(1 << 20);
    cfg.forward = Some(bad);
    let ctx = phigate_plugin::StageBuildCtx { routes: &[], config_dir: env.tmp.path() };
    let keys: Vec<String> = cfg.build(&ctx).unwrap_err().into_iter().map(|i| i.key_path).collect();
    assert!(
        ["forward.url", "forward.timeout_ms", "forward.max_pending_bytes"]
            .iter()
            .all(|k| keys.contains(&(*k).to_owned())),
        "{keys:?}"
    );
}
