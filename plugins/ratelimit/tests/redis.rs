//! The Redis backend against a real `redis-server` (installed by `.ci/setup`; these tests fail,
//! not skip, without it): shared limits across stage instances, the Lua GCRA, the script cache
//! fallback, readiness, and the three failure modes when Redis dies.

mod common;

use common::{backend_errors, ctx, decisions, eventually, free_port, ready, stage, RedisServer};
use phigate_plugin::{ErrorCode, Flow, Readiness, Stage};
use phigate_ratelimit::{
    BackendKind, FailureMode, LimitConfig, RateLimitConfig, RateLimitEvent, RedisConfig,
};

/// Failure tests read process-wide counters: they run one at a time.
static FAILURES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn redis_config(url: &str, mode: FailureMode, limits: Vec<LimitConfig>) -> RateLimitConfig {
    let mut cfg = RateLimitConfig::new(limits);
    cfg.backend = BackendKind::Redis;
    cfg.redis = Some(RedisConfig { failure_mode: mode, timeout_ms: 500, ..RedisConfig::new(url) });
    cfg
}

/// 3 at once, then one per 1200 s: nothing refills while a test runs.
fn slow(name: &str, key: &str) -> LimitConfig {
    LimitConfig { burst: Some(3), ..LimitConfig::new(name, key, 3, 3600) }
}

fn retry_after(d: &phigate_plugin::Denial) -> String {
    let h = d.headers.iter().find(|(n, _)| n == http::header::RETRY_AFTER).expect("Retry-After");
    h.1.to_str().expect("ascii").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stages_sharing_one_redis_share_the_limit() {
    let server = RedisServer::start();
    let a = stage(redis_config(&server.url(), FailureMode::Deny, vec![slow("shared_user", "principal")]));
    let b = stage(redis_config(&server.url(), FailureMode::Deny, vec![slow("shared_user", "principal")]));
    ready(&a).await;
    ready(&b).await;
    assert!(a.on_request(&mut ctx(Some("alice"), 0)).await.is_ok());
    assert!(b.on_request(&mut ctx(Some("alice"), 0)).await.is_ok());
    assert!(a.on_request(&mut ctx(Some("alice"), 0)).await.is_ok());
    let d = b.on_request(&mut ctx(Some("alice"), 0)).await.expect_err("burst of 3 spent across both");
    assert_eq!(d.code, ErrorCode::RateLimited);
    assert_eq!(retry_after(&d), "1200");
    assert!(a.on_request(&mut ctx(Some("alice"), 0)).await.is_err());
    assert!(b.on_request(&mut ctx(Some("bob"), 0)).await.is_ok(), "bob has his own bucket");
    assert!(a.on_request(&mut ctx(None, 0)).await.is_ok(), "anonymous: keyed by address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_is_checked_in_one_script_and_the_refusing_one_is_named() {
    let server = RedisServer::start();
    let route_cap = LimitConfig { burst: Some(2), ..LimitConfig::new("route_cap", "route", 2, 3600) };
    let s = stage(redis_config(&server.url(), FailureMode::Deny, vec![slow("user", "principal"), route_cap]));
    ready(&s).await;
    assert!(s.on_request(&mut ctx(Some("u1"), 0)).await.is_ok());
    assert!(s.on_request(&mut ctx(Some("u2"), 0)).await.is_ok());
    let mut c = ctx(Some("u3"), 0);
    let d = s.on_request(&mut c).await.expect_err("route cap spent");
    assert_eq!(d.code, ErrorCode::RateLimited);
    assert_eq!(retry_after(&d), "1800");
    let Some(RateLimitEvent::Limited { limit, .. }) = c.extensions.get::<RateLimitEvent>() else {
        panic!("no event recorded");
    };
    assert_eq!(&**limit, "route_cap");
    assert!(s.on_request(&mut ctx(Some("u3"), 1)).await.is_ok(), "other route, other bucket");
    assert_eq!(decisions("route_cap", "denied"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_hide_the_caller_and_expire_when_the_bucket_is_full() {
    let server = RedisServer::start();
    let s = stage(redis_config(&server.url(), FailureMode::Deny, vec![slow("hidden", "principal")]));
    ready(&s).await;
    assert!(s.on_request(&mut ctx(Some("alice-secret-subject"), 0)).await.is_ok());
    let keys = server.command("KEYS *\r\n").expect("KEYS");
    assert!(keys.contains("phigate:rl:hidden:"), "{keys}");
    assert!(!keys.contains("alice"), "the subject is hashed: {keys}");
    let key = keys.lines().find(|l| l.starts_with("phigate:rl:")).expect("one key").to_owned();
    let ttl = server.command(&format!("PTTL {key}\r\n")).expect("PTTL");
    let ms: i64 = ttl.trim_start_matches(':').trim().parse().expect("integer");
    assert!((1_190_000..=1_200_000).contains(&ms), "expires once one T (1200 s) has refilled: {ms}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evalsha_falls_back_to_eval_after_script_flush() {
    let server = RedisServer::start();
    let s = stage(redis_config(&server.url(), FailureMode::Deny, vec![slow("flushed", "principal")]));
    ready(&s).await;
    assert!(s.on_request(&mut ctx(Some("alice"), 0)).await.is_ok());
    assert_eq!(calls(&server), (1, 0), "EVALSHA, no EVAL");
    assert!(server.command("SCRIPT FLUSH\r\n").is_some_and(|r| r.starts_with("+OK")));
    assert!(s.on_request(&mut ctx(Some("alice"), 0)).await.is_ok(), "EVAL after NOSCRIPT");
    assert_eq!(calls(&server), (2, 1), "EVALSHA answered NOSCRIPT, then EVAL");
    assert!(s.on_request(&mut ctx(Some("alice"), 0)).await.is_ok(), "EVALSHA again (EVAL re-cached it)");
    assert_eq!(calls(&server), (3, 1));
    assert_eq!(s.on_request(&mut ctx(Some("alice"), 0)).await.expect_err("4th").code, ErrorCode::RateLimited);
}

/// `(EVALSHA, EVAL)` calls so far, from `INFO commandstats` (a NOSCRIPT reply counts as a call).
fn calls(server: &RedisServer) -> (u64, u64) {
    let stats = server.command("INFO commandstats\r\n").expect("INFO");
    let count = |cmd: &str| {
        let line = stats.lines().find(|l| l.starts_with(&format!("cmdstat_{cmd}:")));
        let calls = line.and_then(|l| l.split("calls=").nth(1)).and_then(|c| c.split(',').next());
        calls.map_or(0, |c| c.parse().expect("number"))
    };
    (count("evalsha"), count("eval"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_denies_503_not_ready_by_default_and_counts() {
    let _serial = FAILURES.lock().await;
    let mut server = RedisServer::start();
    let s = stage(redis_config(&server.url(), FailureMode::Deny, vec![slow("down_deny", "principal")]));
    ready(&s).await;
    assert!(s.on_request(&mut ctx(Some("alice"), 0)).await.is_ok());
    let errors_before = backend_errors();
    server.kill();
    let mut c = ctx(Some("alice"), 0);
    let d = s.on_request(&mut c).await.expect_err("fail closed");
    assert_eq!(d.code, ErrorCode::NotReady);
    assert_eq!(d.code.status(), 503);
    assert_eq!(retry_after(&d), "1");
    assert_eq!(c.extensions.get::<RateLimitEvent>(), Some(&RateLimitEvent::BackendFailed { allowed: false }));
    assert_eq!(decisions("down_deny", "failure_denied"), 1);
    assert_eq!(decisions("down_deny", "failure_allowed"), 0);
    assert!(backend_errors() > errors_before);
    assert!(
        matches!(s.readiness(), Readiness::Ready(Some(ref why)) if why.contains("refusing")),
        "stays in the pool (every replica shares Redis) but says why"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_with_failure_mode_allow_forwards_and_counts() {
    let _serial = FAILURES.lock().await;
    let mut server = RedisServer::start();
    let s = stage(redis_config(&server.url(), FailureMode::Allow, vec![slow("down_allow", "principal")]));
    ready(&s).await;
    let errors_before = backend_errors();
    server.kill();
    for _ in 0..5 {
        let mut c = ctx(Some("alice"), 0);
        assert!(matches!(s.on_request(&mut c).await, Ok(Flow::Continue)), "failure_mode: allow");
        assert_eq!(
            c.extensions.get::<RateLimitEvent>(),
            Some(&RateLimitEvent::BackendFailed { allowed: true })
        );
    }
    assert_eq!(decisions("down_allow", "failure_allowed"), 5);
    assert_eq!(decisions("down_allow", "allowed"), 0);
    assert!(backend_errors() >= errors_before + 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_with_failure_mode_local_limits_per_instance() {
    let _serial = FAILURES.lock().await;
    let mut server = RedisServer::start();
    let s = stage(redis_config(&server.url(), FailureMode::Local, vec![slow("down_local", "principal")]));
    ready(&s).await;
    assert!(s.on_request(&mut ctx(Some("alice"), 0)).await.is_ok());
    assert_eq!(s.tracked_keys(), 0, "the fallback is untouched while Redis answers");
    server.kill();
    for _ in 0..3 {
        let mut c = ctx(Some("alice"), 0);
        assert!(s.on_request(&mut c).await.is_ok(), "a fresh local bucket");
        assert_eq!(
            c.extensions.get::<RateLimitEvent>(),
            Some(&RateLimitEvent::BackendFailed { allowed: true })
        );
    }
    let mut c = ctx(Some("alice"), 0);
    let d = s.on_request(&mut c).await.expect_err("the local burst of 3 is spent");
    assert_eq!(d.code, ErrorCode::RateLimited);
    assert_eq!(retry_after(&d), "1200");
    assert!(matches!(c.extensions.get::<RateLimitEvent>(), Some(RateLimitEvent::Limited { .. })));
    assert!(s.on_request(&mut ctx(Some("bob"), 0)).await.is_ok(), "per key, as in Redis");
    assert_eq!(decisions("down_local", "failure_local"), 5);
    assert_eq!(decisions("down_local", "denied"), 1);
    assert!(matches!(s.readiness(), Readiness::Ready(Some(ref why)) if why.contains("per instance")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_redis_answers_then_serves() {
    let _serial = FAILURES.lock().await;
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let s = stage(redis_config(&url, FailureMode::Deny, vec![slow("late_redis", "principal")]));
    assert!(matches!(s.readiness(), Readiness::NotReady(_)));
    let d = s.on_request(&mut ctx(Some("alice"), 0)).await.expect_err("no Redis yet");
    assert_eq!(d.code, ErrorCode::NotReady);
    assert!(matches!(s.readiness(), Readiness::NotReady(_)), "still not ready");
    let _server = RedisServer::start_on(port).expect("port still free");
    ready(&s).await;
    assert!(s.on_request(&mut ctx(Some("alice"), 0)).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_redis_restarts() {
    let _serial = FAILURES.lock().await;
    let mut server = RedisServer::start();
    let port = server.port;
    let s = stage(redis_config(&server.url(), FailureMode::Deny, vec![slow("restart", "principal")]));
    ready(&s).await;
    server.kill();
    assert_eq!(s.on_request(&mut ctx(Some("alice"), 0)).await.expect_err("down").code, ErrorCode::NotReady);
    let _server = RedisServer::start_on(port).expect("port still free");
    eventually("requests served again", async || s.on_request(&mut ctx(Some("alice"), 0)).await.is_ok())
        .await;
    assert!(matches!(s.readiness(), Readiness::Ready(None)));
}
