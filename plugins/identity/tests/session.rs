//! Automatic logoff (HIPAA §164.312(a)(2)(iii)) with tokio's paused clock: no sleeps.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use phigate_identity::dev::DevIssuer;
use phigate_identity::IdentityStage;
use phigate_plugin::{ErrorCode, RouteMeta};
use support::*;

const ISS: &str = "https://idp.test";

fn fx(idle: u64) -> (DevIssuer, IdentityStage, Vec<Arc<RouteMeta>>) {
    let idp = DevIssuer::es256(ISS).unwrap();
    let dir = temp_dir("session");
    let j = file_issuer(&dir, "idp", &[&idp]);
    let yaml = format!(
        "issuers: [{{ issuer: \"{ISS}\", audiences: [\"{AUD}\"], jwks_path: {j} }}]\nidle_timeout_secs: {idle}\n"
    );
    let routes = routes(&["a"]);
    let stage = build(&yaml, &routes, &dir);
    (idp, stage, routes)
}

fn token(idp: &DevIssuer, sid: Option<&str>, auth_time: i64, jti: &str) -> String {
    let c = idp.claims("alice", AUD, now()).amr(&["mfa"]).auth_time(auth_time).set("jti", jti);
    idp.sign(&match sid {
        Some(s) => c.sid(s),
        None => c,
    })
}

async fn ok(stage: &IdentityStage, routes: &[Arc<RouteMeta>], t: &str) -> bool {
    run(stage, &mut bearer(&routes[0], t)).await.is_ok()
}

async fn timed_out(stage: &IdentityStage, routes: &[Arc<RouteMeta>], t: &str) {
    let mut ctx = bearer(&routes[0], t);
    assert_denied(
        run(stage, &mut ctx).await,
        ErrorCode::SessionIdleTimeout,
        Some(&invalid_token(ErrorCode::SessionIdleTimeout)),
        t,
    );
}

#[tokio::test(start_paused = true)]
async fn idle_session_is_401_session_idle_timeout_until_reauthentication() {
    let (idp, stage, routes) = fx(900);
    let t0 = now() - 5;
    let t = token(&idp, Some("s1"), t0, "1");
    assert!(ok(&stage, &routes, &t).await);
    tokio::time::advance(Duration::from_secs(899)).await;
    assert!(ok(&stage, &routes, &t).await, "activity within the timeout keeps the session");
    tokio::time::advance(Duration::from_secs(901)).await;
    timed_out(&stage, &routes, &t).await;
    // Stays logged off, even right away and even with a refreshed token of the same login.
    timed_out(&stage, &routes, &t).await;
    timed_out(&stage, &routes, &token(&idp, Some("s1"), t0, "2")).await;
    // Re-authentication: a newer auth_time on the same sid, or a new sid.
    assert!(ok(&stage, &routes, &token(&idp, Some("s1"), t0 + 1, "3")).await);
    assert!(ok(&stage, &routes, &token(&idp, Some("s2"), t0, "4")).await);
}

#[tokio::test(start_paused = true)]
async fn without_sid_the_token_is_the_session() {
    let (idp, stage, routes) = fx(60);
    let a = token(&idp, None, now(), "a");
    let b = token(&idp, None, now(), "b");
    assert!(ok(&stage, &routes, &a).await);
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(ok(&stage, &routes, &b).await);
    tokio::time::advance(Duration::from_secs(31)).await;
    timed_out(&stage, &routes, &a).await;
    assert!(ok(&stage, &routes, &b).await, "b was active 31 s ago");
}

#[tokio::test(start_paused = true)]
async fn zero_idle_timeout_disables_automatic_logoff() {
    let (idp, stage, routes) = fx(0);
    let t = token(&idp, Some("s1"), now(), "1");
    assert!(ok(&stage, &routes, &t).await);
    tokio::time::advance(Duration::from_secs(20_000)).await;
    assert!(ok(&stage, &routes, &t).await);
}
