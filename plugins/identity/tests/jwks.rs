//! JWKS lifecycle against a real HTTPS endpoint on 127.0.0.1: first load and readiness,
#![allow(clippy::unwrap_used)]
//! Cache-Control bounds, backoff, rotation, stale keys during an outage, and the refetch storm.
//! Time is a `ManualClock`; no test sleeps.

mod support;

use std::sync::Arc;
use std::time::Duration;

use phigate_identity::dev::DevIssuer;
use phigate_identity::{IdentityStage, ManualClock};
use phigate_plugin::{ErrorCode, Readiness, RouteMeta, Stage};
use serde_json::{json, Value};
use support::*;

const ISS: &str = "https://tls.test";

struct Fx {
    idp: DevIssuer,
    server: JwksServer,
    clock: Arc<ManualClock>,
    stage: Arc<IdentityStage>,
    routes: Vec<Arc<RouteMeta>>,
}

async fn fx_with(ca: bool) -> Fx {
    let idp = DevIssuer::es256(ISS).unwrap();
    let server = JwksServer::start(idp.jwks_json()).await;
    let dir = temp_dir("jwks");
    let ca_line = if ca { format!("ca_path: {}", server.write_ca(&dir)) } else { String::new() };
    let yaml = format!(
        r#"
issuers:
  - issuer: {ISS}
    audiences: ["{AUD}"]
    jwks_uri: {url}
    {ca_line}
jwks: {{ min_refresh_secs: 60, max_refresh_secs: 600, max_stale_secs: 3600, backoff_initial_secs: 2, backoff_max_secs: 30 }}
defaults: {{ require_mfa: false }}
idle_timeout_secs: 0
"#,
        url = server.url
    );
    let clock = Arc::new(ManualClock::new());
    let routes = routes(&["a"]);
    let stage = Arc::new(build_with(&yaml, &routes, &dir, clock.clone()));
    Fx { idp, server, clock, stage, routes }
}

async fn fx() -> Fx {
    let f = fx_with(true).await;
    assert_eq!(f.stage.refresh_jwks_now().await, vec![Duration::from_secs(600)]);
    f
}

impl Fx {
    fn token(&self, i: &DevIssuer) -> String {
        // Far-future exp: the manual clock moves hours in these tests.
        i.sign(&i.claims("alice", AUD, now()).exp(now() + 86_400))
    }

    async fn check(&self, token: &str) -> Result<(), ErrorCode> {
        let mut ctx = bearer(&self.routes[0], token);
        run(&self.stage, &mut ctx).await.map(|_| ()).map_err(|d| d.code)
    }
}

/// Another key under the same issuer name.
fn with_key(_: &DevIssuer) -> DevIssuer {
    DevIssuer::es256(ISS).unwrap()
}

fn jwks(keys: &[&DevIssuer]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk().clone()).collect::<Vec<Value>>()}).to_string()
}

#[tokio::test]
async fn issuer_is_not_ready_and_answers_503_until_its_keys_are_fetched() {
    let f = fx_with(true).await;
    assert!(matches!(f.stage.readiness(), Readiness::NotReady(_)));
    let t = f.token(&f.idp);
    let mut ctx = bearer(&f.routes[0], &t);
    assert_denied(run(&f.stage, &mut ctx).await, ErrorCode::NotReady, None, &t);
    assert_eq!(f.server.fetches(), 0, "a request never waits for the first fetch");
    f.stage.refresh_jwks_now().await;
    assert_eq!(f.stage.readiness(), Readiness::Ready(None));
    assert_eq!(f.check(&t).await, Ok(()));
    assert_eq!(f.server.fetches(), 1);
}

#[tokio::test]
async fn jwks_from_a_server_with_an_untrusted_certificate_is_not_loaded() {
    let f = fx_with(false).await;
    // Public roots only: our test CA is not among them.
    assert_eq!(f.stage.refresh_jwks_now().await, vec![Duration::from_secs(2)]);
    assert!(matches!(f.stage.readiness(), Readiness::NotReady(_)));
    assert_eq!(f.server.fetches(), 0, "TLS failed before any request was sent");
}

#[tokio::test]
async fn cache_control_max_age_sets_the_refresh_delay_within_bounds() {
    let f = fx().await;
    for (max_age, want) in [(Some(120), 120), (Some(5), 60), (Some(99_999), 600), (None, 600)] {
        f.server.set_max_age(max_age);
        assert_eq!(f.stage.refresh_jwks_now().await, vec![Duration::from_secs(want)]);
    }
}

#[tokio::test]
async fn failed_refreshes_back_off_exponentially_up_to_the_cap() {
    let f = fx().await;
    f.server.set_up(false);
    let mut delays = Vec::new();
    for _ in 0..6 {
        delays.extend(f.stage.refresh_jwks_now().await.into_iter().map(|d| d.as_secs()));
    }
    assert_eq!(delays, vec![2, 4, 8, 16, 30, 30]);
    f.server.set_up(true);
    assert_eq!(f.stage.refresh_jwks_now().await, vec![Duration::from_secs(600)]);
}

#[tokio::test]
async fn scheduled_refresh_picks_up_a_rotated_key() {
    let f = fx().await;
    let next = with_key(&f.idp);
    f.server.set_jwks(jwks(&[&f.idp, &next]));
    f.stage.refresh_jwks_now().await;
    let before = f.server.fetches();
    assert_eq!(f.check(&f.token(&next)).await, Ok(()));
    assert_eq!(f.server.fetches(), before, "known kid: no fetch");
}

#[tokio::test]
async fn unknown_kid_triggers_one_refetch_that_finds_a_new_key() {
    let f = fx().await;
    let next = with_key(&f.idp);
    f.server.set_jwks(jwks(&[&next]));
    // Within min_refresh_secs of the last fetch: refused without fetching.
    assert_eq!(f.check(&f.token(&next)).await, Err(ErrorCode::TokenSignatureInvalid));
    assert_eq!(f.server.fetches(), 1);
    f.clock.advance(Duration::from_secs(61));
    assert_eq!(f.check(&f.token(&next)).await, Ok(()));
    assert_eq!(f.server.fetches(), 2);
}

#[tokio::test]
async fn removing_a_key_from_the_jwks_revokes_cached_tokens_signed_with_it() {
    let f = fx().await;
    let old = f.token(&f.idp);
    assert_eq!(f.check(&old).await, Ok(()));
    let next = with_key(&f.idp);
    f.server.set_jwks(jwks(&[&next]));
    f.stage.refresh_jwks_now().await;
    assert_eq!(f.check(&old).await, Err(ErrorCode::TokenSignatureInvalid));
}

#[tokio::test]
async fn idp_outage_serves_stale_keys_then_expires_them() {
    let f = fx().await;
    let t = f.token(&f.idp);
    assert_eq!(f.check(&t).await, Ok(()));
    f.server.set_up(false);
    f.clock.advance(Duration::from_secs(700));
    f.stage.refresh_jwks_now().await;
    // Stale but within max_stale_secs (refresh due at 600 s, usable until 600 + 3600 s).
    assert_eq!(f.check(&t).await, Ok(()));
    assert_eq!(f.stage.readiness(), Readiness::Ready(None));
    // While the IdP fails, an unknown kid costs no fetch (no request latency from the outage).
    let fetches = f.server.fetches();
    f.clock.advance(Duration::from_secs(120));
    let stranger = with_key(&f.idp);
    assert_eq!(f.check(&f.token(&stranger)).await, Err(ErrorCode::TokenSignatureInvalid));
    assert_eq!(f.server.fetches(), fetches);
    // Past the staleness bound: nothing can be verified; 503 and not ready.
    f.clock.advance(Duration::from_secs(3600));
    let mut ctx = bearer(&f.routes[0], &t);
    assert_denied(run(&f.stage, &mut ctx).await, ErrorCode::NotReady, None, &t);
    assert!(matches!(f.stage.readiness(), Readiness::NotReady(_)));
    // The IdP comes back: one refresh restores service.
    f.server.set_up(true);
    f.stage.refresh_jwks_now().await;
    assert_eq!(f.check(&t).await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_unknown_kid_requests_cause_at_most_one_fetch() {
    let f = fx().await;
    f.clock.advance(Duration::from_secs(61));
    let stranger = with_key(&f.idp);
    let t = f.token(&stranger);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (stage, route, t) = (Arc::clone(&f.stage), Arc::clone(&f.routes[0]), t.clone());
        set.spawn(async move {
            let mut ctx = bearer(&route, &t);
            run(&stage, &mut ctx).await.map(|_| ()).map_err(|d| d.code)
        });
    }
    while let Some(r) = set.join_next().await {
        assert_eq!(r.unwrap(), Err(ErrorCode::TokenSignatureInvalid));
    }
    assert_eq!(f.server.fetches(), 2, "the initial load plus one shared refetch");
}

#[tokio::test(start_paused = true)]
async fn background_task_reloads_a_jwks_file_on_schedule() {
    let idp = DevIssuer::es256(ISS).unwrap();
    let dir = temp_dir("bg");
    let jwks_file = file_issuer(&dir, "idp", &[&idp]);
    let yaml = format!(
        "issuers: [{{ issuer: \"{ISS}\", audiences: [\"{AUD}\"], jwks_path: {jwks_file} }}]\n\
         jwks: {{ min_refresh_secs: 10, max_refresh_secs: 10 }}\n\
         defaults: {{ require_mfa: false }}\n"
    );
    let routes = routes(&["a"]);
    let stage = build(&yaml, &routes, &dir);
    let token = idp.sign(&idp.claims("alice", AUD, now()));
    assert!(run(&stage, &mut bearer(&routes[0], &token)).await.is_ok());
    // The operator rotates the file and drops the old key. Only a reload can notice a removed
    // key (a known kid never triggers a refetch), so this proves the background schedule ran.
    let next = DevIssuer::es256(ISS).unwrap();
    std::fs::write(dir.join(&jwks_file), jwks(&[&next])).unwrap();
    assert!(run(&stage, &mut bearer(&routes[0], &token)).await.is_ok());
    let mut attempts = stage.jwks_fetch_attempts().remove(0);
    for task in stage.background_tasks() {
        tokio::spawn(task);
    }
    // Paused time: the runtime jumps to the task's next deadline when it is otherwise idle.
    tokio::time::timeout(Duration::from_secs(3600), attempts.changed())
        .await
        .expect("a scheduled refresh ran")
        .unwrap();
    assert!(
        run(&stage, &mut bearer(&routes[0], &token)).await.is_err(),
        "the reloaded file no longer has the old key"
    );
    let fresh = next.sign(&next.claims("alice", AUD, now()));
    assert!(run(&stage, &mut bearer(&routes[0], &fresh)).await.is_ok());
}
