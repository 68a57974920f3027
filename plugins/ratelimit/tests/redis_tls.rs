//! The Redis backend over TLS (`rediss://`) against a real `redis-server` with a TLS 1.3-only
//! port and an rcgen PKI (like the plain tests, these fail, not skip, without `redis-server`):
//! limits shared through TLS, mutual TLS, and TLS failures (untrusted CA, expired certificate,
//! missing client certificate) handled exactly like Redis being down.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::pki::{self, Pki};
use common::{
    backend_errors_of, ctx, decisions, eventually, install_tls13_provider, ready, stage, stage_in,
    tls_server, RedisServer,
};
use phigate_plugin::{ErrorCode, Readiness, Stage};
use phigate_ratelimit::{
    BackendKind, FailureMode, LimitConfig, RateLimitConfig, RateLimitEvent, RateLimitStage, RedisConfig,
    RedisTlsConfig,
};

/// Failure tests read process-wide counters: they run one at a time.
static FAILURES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn tls_config(url: &str, tls: RedisTlsConfig, mode: FailureMode, limit: &str) -> RateLimitConfig {
    let slow = LimitConfig { burst: Some(3), ..LimitConfig::new(limit, "principal", 3, 3600) };
    let mut cfg = RateLimitConfig::new(vec![slow]);
    cfg.backend = BackendKind::Redis;
    cfg.redis =
        Some(RedisConfig { failure_mode: mode, timeout_ms: 500, tls: Some(tls), ..RedisConfig::new(url) });
    cfg
}

fn trusting(ca: PathBuf) -> RedisTlsConfig {
    RedisTlsConfig { ca_path: Some(ca), ..RedisTlsConfig::default() }
}

/// Three requests pass, the fourth is refused: the burst of 3 is enforced.
async fn burst_of_three_then_429(s: &RateLimitStage, sub: &str) {
    for n in 0..3 {
        assert!(s.on_request(&mut ctx(Some(sub), 0)).await.is_ok(), "request {n} is within the burst");
    }
    let d = s.on_request(&mut ctx(Some(sub), 0)).await.expect_err("over the limit");
    assert_eq!(d.code, ErrorCode::RateLimited);
}

/// A TLS Redis (`server_cert`, client certificates required when `mtls`) and a stage trusting
/// `ca` that cannot complete a handshake with it, returned once the keeper has counted `n`
/// `tls` failures. Callers hold `FAILURES`.
async fn failing_tls(
    server_cert: (&str, &str),
    mtls: bool,
    ca: &str,
    mode: FailureMode,
    limit: &str,
    n: u64,
) -> (Pki, RedisServer, Arc<RateLimitStage>) {
    install_tls13_provider();
    let pki = Pki::new();
    let server = tls_server(&pki, server_cert, mtls);
    let before = backend_errors_of("tls");
    let s = stage(tls_config(&server.tls_url(), trusting(pki.path(ca)), mode, limit));
    keeper_fails("tls", before, n).await;
    (pki, server, s)
}

/// Waits until the connection keeper has failed at least `n` more times with `kind`.
async fn keeper_fails(kind: &str, before: u64, n: u64) {
    eventually(&format!("{n} `{kind}` failures counted"), async || backend_errors_of(kind) >= before + n)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stages_share_the_limit_through_a_rediss_server() {
    install_tls13_provider();
    let pki = Pki::new();
    let server = tls_server(&pki, (pki::SERVER_CERT, pki::SERVER_KEY), false);
    let cfg = || tls_config(&server.tls_url(), trusting(pki.path(pki::CA)), FailureMode::Deny, "tls_shared");
    let (a, b) = (stage(cfg()), stage(cfg()));
    ready(&a).await;
    ready(&b).await;
    assert!(a.on_request(&mut ctx(Some("alice"), 0)).await.is_ok());
    assert!(b.on_request(&mut ctx(Some("alice"), 0)).await.is_ok());
    assert!(a.on_request(&mut ctx(Some("alice"), 0)).await.is_ok());
    let d = b.on_request(&mut ctx(Some("alice"), 0)).await.expect_err("burst of 3 spent across both");
    assert_eq!(d.code, ErrorCode::RateLimited);
    assert!(b.on_request(&mut ctx(Some("bob"), 0)).await.is_ok(), "bob has his own bucket");
    let keys = server.command("KEYS phigate:rl:tls_shared:*\r\n").expect("KEYS");
    assert!(keys.starts_with("*2"), "both buckets live in this server: {keys}");
    assert_eq!(decisions("tls_shared", "denied"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_the_client_certificate_is_served_and_paths_are_relative() {
    install_tls13_provider();
    let pki = Pki::new();
    let server = tls_server(&pki, (pki::SERVER_CERT, pki::SERVER_KEY), true);
    let tls = RedisTlsConfig {
        ca_path: Some(pki::CA.into()),
        client_cert_path: Some(pki::CLIENT_CERT.into()),
        client_key_path: Some(pki::CLIENT_KEY.into()),
    };
    let s = stage_in(tls_config(&server.tls_url(), tls, FailureMode::Deny, "mtls_ok"), pki.dir());
    ready(&s).await;
    burst_of_three_then_429(&s, "alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_server_certificate_denies_503_not_ready_and_counts_tls() {
    let _serial = FAILURES.lock().await;
    let (_pki, server, s) = failing_tls(
        (pki::SERVER_CERT, pki::SERVER_KEY),
        false,
        pki::OTHER_CA,
        FailureMode::Deny,
        "tls_untrusted",
        2,
    )
    .await;
    assert!(matches!(s.readiness(), Readiness::NotReady(_)), "never connected");
    let mut c = ctx(Some("alice"), 0);
    let d = s.on_request(&mut c).await.expect_err("fail closed");
    assert_eq!(d.code, ErrorCode::NotReady);
    assert_eq!(d.code.status(), 503);
    assert_eq!(c.extensions.get::<RateLimitEvent>(), Some(&RateLimitEvent::BackendFailed { allowed: false }));
    assert_eq!(decisions("tls_untrusted", "failure_denied"), 1);
    assert!(server.ping(), "the server itself is up: only TLS failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_server_certificate_with_failure_mode_local_limits_per_instance() {
    let _serial = FAILURES.lock().await;
    let (_pki, _server, s) = failing_tls(
        (pki::SERVER_CERT, pki::SERVER_KEY),
        false,
        pki::OTHER_CA,
        FailureMode::Local,
        "tls_local",
        1,
    )
    .await;
    burst_of_three_then_429(&s, "alice").await;
    assert_eq!(decisions("tls_local", "failure_local"), 4);
    assert_eq!(decisions("tls_local", "denied"), 1, "the local fallback refused the 4th");
    assert_eq!(s.tracked_keys(), 1, "decided in this instance's memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_server_certificate_is_a_tls_failure_like_redis_down() {
    let _serial = FAILURES.lock().await;
    let (_pki, _server, s) = failing_tls(
        (pki::EXPIRED_CERT, pki::EXPIRED_KEY),
        false,
        pki::CA,
        FailureMode::Allow,
        "tls_expired",
        1,
    )
    .await;
    for _ in 0..4 {
        let mut c = ctx(Some("alice"), 0);
        assert!(s.on_request(&mut c).await.is_ok(), "failure_mode: allow forwards");
        assert_eq!(
            c.extensions.get::<RateLimitEvent>(),
            Some(&RateLimitEvent::BackendFailed { allowed: true })
        );
    }
    assert_eq!(decisions("tls_expired", "failure_allowed"), 4);
    assert_eq!(decisions("tls_expired", "allowed"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_without_a_client_certificate_denies_and_counts() {
    let _serial = FAILURES.lock().await;
    let (_pki, _server, s) =
        failing_tls((pki::SERVER_CERT, pki::SERVER_KEY), true, pki::CA, FailureMode::Deny, "mtls_missing", 1)
            .await;
    assert!(matches!(s.readiness(), Readiness::NotReady(_)), "Redis never accepted the connection");
    let d = s.on_request(&mut ctx(Some("alice"), 0)).await.expect_err("fail closed");
    assert_eq!(d.code, ErrorCode::NotReady);
    assert_eq!(decisions("mtls_missing", "failure_denied"), 1);
}
