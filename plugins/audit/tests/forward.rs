//! The trail forwarded off the host as it is written: a real HTTPS collector on a loopback port
//! receives exactly the segment stream (header, records, checkpoints, hash chain included), in
//! order; a request never waits for it.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod common;

use common::*;
use phigate_audit::{verify, VerifyStatus};
use phigate_plugin::{Flow, Stage};
use phigate_shipper::testing::collector;

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

#[test]
fn bad_forward_settings_are_named_under_forward() {
    let env = Env::new();
    let mut cfg = env.config();
    let mut bad = phigate_shipper::ShipperConfig {
        url: "ftp://collector".into(),
        ca_path: None,
        authorization_env: None,
        timeout_ms: 5000,
        max_pending_bytes: 16 << 20,
    };
    bad.timeout_ms = 0;
    cfg.forward = Some(bad);
    let ctx = phigate_plugin::StageBuildCtx { routes: &[], config_dir: env.tmp.path() };
    let keys: Vec<String> = cfg.build(&ctx).unwrap_err().into_iter().map(|i| i.key_path).collect();
    assert!(
        keys.contains(&"forward.url".to_owned()) && keys.contains(&"forward.timeout_ms".to_owned()),
        "{keys:?}"
    );
}
