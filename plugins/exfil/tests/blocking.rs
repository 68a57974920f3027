//! `action: block`: later requests of the principal are 403 `principal_blocked` until
//! `block_secs` have passed; `action: alert` never blocks.

mod common;

use common::{principal, read, Harness};
use phigate_exfil::Action;
use phigate_plugin::{ErrorCode, Flow, Stage};

fn blocking(action: Action) -> Harness {
    Harness::new(|c| {
        c.id_enumeration.enabled = true;
        c.id_enumeration.threshold = 2;
        c.id_enumeration.window_secs = 60;
        c.id_enumeration.action = action;
        c.id_enumeration.block_secs = 300;
    })
}

#[tokio::test]
async fn blocked_principal_is_403_principal_blocked_until_block_secs_pass() {
    let h = blocking(Action::Block);
    h.spawn_writer();
    let eve = principal("eve");
    for id in ["a", "b", "c"] {
        h.run(read(&eve, "Patient", id, 404)).await.unwrap();
    }
    let mut ctx = read(&eve, "Patient", "d", 200);
    let denial = h.stage.on_request(&mut ctx).await.unwrap_err();
    assert_eq!(denial.code, ErrorCode::PrincipalBlocked);
    assert_eq!(denial.code.status().as_u16(), 403);
    assert_eq!(denial.code.as_str(), "principal_blocked");

    h.advance_secs(299);
    assert_eq!(h.run(read(&eve, "Patient", "e", 200)).await, Err(ErrorCode::PrincipalBlocked));
    h.advance_secs(1);
    assert_eq!(h.run(read(&eve, "Patient", "f", 200)).await, Ok(()), "unblocked after block_secs");
    assert_eq!(h.stage.stats().blocked_requests, 2);

    let alerts = h.alerts().await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["action"], "block");
    assert!(alerts[0]["blocked_until"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn a_block_stops_only_that_principal() {
    let h = blocking(Action::Block);
    let (eve, bob) = (principal("eve"), principal("bob"));
    for id in ["a", "b", "c"] {
        h.run(read(&eve, "Patient", id, 404)).await.unwrap();
    }
    let mut ctx = read(&bob, "Patient", "p1", 200);
    assert!(matches!(h.stage.on_request(&mut ctx).await, Ok(Flow::Continue)));
}

#[tokio::test]
async fn refused_requests_of_a_blocked_principal_do_not_feed_the_windows() {
    let h = blocking(Action::Block);
    let eve = principal("eve");
    for id in ["a", "b", "c"] {
        h.run(read(&eve, "Patient", id, 404)).await.unwrap();
    }
    // Still "probing" while blocked: refused, counted, but no new alert and no longer block.
    h.advance_secs(100);
    for id in ["d", "e", "f", "g"] {
        assert_eq!(h.run(read(&eve, "Patient", id, 404)).await, Err(ErrorCode::PrincipalBlocked));
    }
    assert_eq!(h.stage.stats().alerts, 1);
    assert_eq!(h.stage.stats().blocked_requests, 4);
    h.advance_secs(200);
    assert_eq!(h.run(read(&eve, "Patient", "h", 200)).await, Ok(()));
}

#[tokio::test]
async fn alert_action_never_blocks() {
    let h = blocking(Action::Alert);
    let eve = principal("eve");
    for id in ["a", "b", "c", "d", "e"] {
        assert_eq!(h.run(read(&eve, "Patient", id, 404)).await, Ok(()));
    }
    assert_eq!(h.stage.stats().alerts, 1);
    assert_eq!(h.stage.stats().blocked_requests, 0);
}

#[tokio::test]
async fn requests_without_a_principal_pass_and_are_not_watched() {
    let h = blocking(Action::Block);
    for id in ["a", "b", "c", "d"] {
        let mut ctx = read(&principal("x"), "Patient", id, 404);
        ctx.principal = None;
        assert_eq!(h.run(ctx).await, Ok(()));
    }
    assert_eq!(h.stage.stats().alerts, 0);
}
