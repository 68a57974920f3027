//! Lifting a block by hand (`ExfilStage::unblock`) and listing blocks (`ExfilStage::blocks`) on
//! one replica: the principal passes again at once, its windows start over, and the lift leaves
//! an alert line and a count.

#![allow(clippy::unwrap_used)] // test helpers

mod common;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{principal, read, Harness, ISSUER};
use phigate_exfil::{Action, BlockView, UnblockError};
use phigate_plugin::{ErrorCode, Principal};

const REASON: &str = "SOC-4411 confirmed ward-round chart review";

/// Blocks after 3 missed reads in 60 s, for 300 s.
fn blocking() -> Harness {
    Harness::new(|c| {
        c.id_enumeration.enabled = true;
        c.id_enumeration.threshold = 2;
        c.id_enumeration.window_secs = 60;
        c.id_enumeration.action = Action::Block;
        c.id_enumeration.block_secs = 300;
    })
}

/// `n` missed reads; whether each passed.
async fn probe(h: &Harness, p: &Arc<Principal>, n: usize) -> Vec<Result<(), ErrorCode>> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(h.run(read(p, "Patient", &format!("miss-{i}"), 404)).await);
    }
    out
}

async fn passes(h: &Harness, p: &Arc<Principal>) -> bool {
    h.run(read(p, "Patient", "ok", 200)).await.is_ok()
}

fn lifted_metric() -> u64 {
    let families = prometheus::gather();
    let family = families.iter().find(|f| f.name() == "phigate_exfil_blocks_lifted_total");
    family.map_or(0, |f| f.get_metric().iter().map(|m| m.get_counter().get_value() as u64).sum())
}

#[tokio::test]
async fn a_lifted_principal_passes_at_once_and_the_lift_is_an_alert_line_with_the_reason() {
    let h = blocking();
    h.spawn_writer();
    let eve = principal("eve");
    probe(&h, &eve, 3).await;
    assert!(!passes(&h, &eve).await, "blocked");
    let before = lifted_metric();

    assert_eq!(h.stage.unblock(ISSUER, "eve", REASON), Ok(true));
    assert!(passes(&h, &eve).await, "lifted before block_secs ended");
    assert_eq!(h.stage.stats().blocks_lifted, 1);
    assert!(lifted_metric() > before);

    let alerts = h.alerts().await;
    assert_eq!(alerts.len(), 2, "the block, then the lift");
    let lift = &alerts[1];
    assert_eq!((lift["rule"].as_str(), lift["action"].as_str()), (Some("block_lifted"), Some("lift")));
    assert_eq!(lift["lift_reason"], REASON);
    assert_eq!(
        (lift["principal"]["sub"].as_str(), lift["principal"]["iss"].as_str()),
        (Some("eve"), Some(ISSUER))
    );
    assert_eq!(lift["blocked_until"], alerts[0]["blocked_until"], "the end of the block lifted");
    assert_eq!(lift["sample_patient_ids"], serde_json::json!([]), "no patient data");
    assert!(lift["request_id"].is_null() && lift["route"].is_null());
}

#[tokio::test]
async fn after_a_lift_the_same_traffic_needs_the_whole_threshold_again_to_block() {
    let h = blocking();
    let eve = principal("eve");
    probe(&h, &eve, 3).await;
    h.stage.unblock(ISSUER, "eve", REASON).unwrap();

    assert_eq!(probe(&h, &eve, 2).await, vec![Ok(()), Ok(())], "two misses: under the threshold");
    assert!(passes(&h, &eve).await);
    probe(&h, &eve, 1).await;
    assert!(!passes(&h, &eve).await, "the third miss blocks again, as the first time");
    assert_eq!(h.stage.stats().alerts, 2);
}

#[tokio::test]
async fn a_lift_resets_windows_even_when_no_block_was_in_force() {
    let h = blocking();
    let eve = principal("eve");
    probe(&h, &eve, 2).await;
    assert_eq!(h.stage.unblock(ISSUER, "eve", REASON), Ok(false), "nothing was blocked");
    // Without the reset the window would hold 2 misses and one more would block.
    probe(&h, &eve, 2).await;
    assert!(passes(&h, &eve).await);
}

#[tokio::test]
async fn lifting_an_unknown_principal_is_false_and_still_recorded() {
    let h = blocking();
    h.spawn_writer();
    assert_eq!(h.stage.unblock(ISSUER, "nobody", REASON), Ok(false));
    assert_eq!(h.stage.unblock("https://other-idp", "eve", REASON), Ok(false));
    let alerts = h.alerts().await;
    assert_eq!(alerts.len(), 2);
    assert!(alerts[0]["blocked_until"].is_null());
}

#[tokio::test]
async fn a_lift_ends_only_that_principals_block() {
    let h = blocking();
    let (eve, mallory) = (principal("eve"), principal("mallory"));
    probe(&h, &eve, 3).await;
    probe(&h, &mallory, 3).await;
    assert_eq!(h.stage.unblock(ISSUER, "eve", REASON), Ok(true));
    assert!(passes(&h, &eve).await);
    assert!(!passes(&h, &mallory).await);
}

#[tokio::test]
async fn invalid_reasons_are_refused_and_lift_nothing() {
    let h = blocking();
    h.spawn_writer();
    let eve = principal("eve");
    probe(&h, &eve, 3).await;
    let long = "x".repeat(513);
    for bad in ["", "  \t ", "ok\nforged line", "ok\u{1b}[2J", long.as_str()] {
        assert_eq!(h.stage.unblock(ISSUER, "eve", bad), Err(UnblockError::ReasonInvalid), "{bad:?}");
    }
    assert!(!passes(&h, &eve).await, "still blocked");
    assert_eq!(h.stage.stats().blocks_lifted, 0);
    assert_eq!(h.alerts().await.len(), 1, "only the block");
    assert_eq!(h.stage.unblock(ISSUER, "eve", &"x".repeat(512)), Ok(true), "512 bytes is the limit");
}

#[tokio::test]
async fn blocks_lists_those_in_force_by_end_then_subject_and_not_expired_ones() {
    let h = blocking();
    assert_eq!(h.stage.blocks(), vec![]);
    for who in ["zoe", "eve"] {
        probe(&h, &principal(who), 3).await;
    }
    h.advance_secs(100);
    probe(&h, &principal("adam"), 3).await;
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let listed = h.stage.blocks();
    let view = |sub: &str, until| BlockView {
        issuer: Some(ISSUER.into()),
        subject: Some(sub.into()),
        shared_name: None,
        until_unix: until,
        source: "local",
    };
    let end = listed[0].until_unix;
    assert!((wall + 199..=wall + 302).contains(&end), "{end} vs now {wall}");
    assert_eq!(listed, vec![view("eve", end), view("zoe", end), view("adam", listed[2].until_unix)]);
    assert_eq!(listed[2].until_unix, end + 100);

    h.advance_secs(200);
    let left: Vec<_> = h.stage.blocks().into_iter().map(|b| b.subject.unwrap()).collect();
    assert_eq!(left, vec!["adam"], "eve's and zoe's blocks ended");
    h.stage.unblock(ISSUER, "adam", REASON).unwrap();
    assert_eq!(h.stage.blocks(), vec![]);
}
