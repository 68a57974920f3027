//! Redis going down and coming back is logged once per transition, not per request, and no log
//! line carries the Redis password or a caller; a TLS failure is logged the same way, once.
#![allow(clippy::unwrap_used)] // test code: a poisoned capture lock is a failed test

mod common;

use std::sync::{Mutex, Once};

use common::pki::{self, Pki};
use common::{
    backend_errors, backend_errors_of, ctx, eventually, free_port, install_tls13_provider, ready, stage,
    tls_server, RedisServer,
};
use phigate_plugin::{ErrorCode, Stage};
use phigate_ratelimit::{BackendKind, LimitConfig, RateLimitConfig, RedisConfig, RedisTlsConfig};

struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        self.0.lock().unwrap().push(format!("{} {} {}", r.level(), r.target(), r.args()));
    }
    fn flush(&self) {}
}

static LOGS: Capture = Capture(Mutex::new(Vec::new()));

/// The capture is process-wide: tests take turns and start from an empty one.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn capture_from_now() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        log::set_logger(&LOGS).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
    });
    LOGS.0.lock().unwrap().clear();
}

fn stage_logs() -> Vec<String> {
    LOGS.0.lock().unwrap().iter().filter(|l| l.contains("phigate_ratelimit")).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_is_logged_once_per_transition_without_secrets() {
    let _serial = SERIAL.lock().await;
    capture_from_now();
    let port = free_port();
    let auth = ["--requirepass", "hunter2-secret"];
    let mut server = RedisServer::start_with(port, &auth).expect("redis-server started");
    let mut cfg = RateLimitConfig::new(vec![LimitConfig::new("logged", "principal", 100, 60)]);
    cfg.backend = BackendKind::Redis;
    cfg.redis = Some(RedisConfig::new(format!("redis://:hunter2-secret@127.0.0.1:{port}/0")));
    let s = stage(cfg);
    ready(&s).await;
    assert!(s.on_request(&mut ctx(Some("alice-secret-subject"), 0)).await.is_ok());

    server.kill();
    let before = backend_errors();
    for _ in 0..20 {
        let d = s.on_request(&mut ctx(Some("alice-secret-subject"), 0)).await.expect_err("down");
        assert_eq!(d.code, ErrorCode::NotReady);
    }
    assert!(backend_errors() >= before + 20, "every failed request is counted");

    let _server = RedisServer::start_with(port, &auth).expect("port still free");
    eventually("served again", async || {
        s.on_request(&mut ctx(Some("alice-secret-subject"), 0)).await.is_ok()
    })
    .await;

    let logs = stage_logs();
    let count = |needle: &str| logs.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("backend unavailable"), 1, "{logs:#?}");
    assert_eq!(count("backend is available"), 2, "up at start, up again: {logs:#?}");
    assert!(logs.iter().any(|l| l.starts_with("WARN") && l.contains("failure_mode: deny")), "{logs:#?}");
    let all = LOGS.0.lock().unwrap().join("\n");
    assert!(!all.contains("hunter2"), "the password never reaches a log line");
    assert!(!all.contains("alice-secret-subject"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_failure_is_logged_once_as_tls_without_secrets() {
    let _serial = SERIAL.lock().await;
    capture_from_now();
    install_tls13_provider();
    let pki = Pki::new();
    let server = tls_server(&pki, (pki::SERVER_CERT, pki::SERVER_KEY), false);
    let port = server.tls_port.expect("TLS port");
    let mut cfg = RateLimitConfig::new(vec![LimitConfig::new("tls_logged", "principal", 100, 60)]);
    cfg.backend = BackendKind::Redis;
    let tls = RedisTlsConfig { ca_path: Some(pki.path(pki::OTHER_CA)), ..RedisTlsConfig::default() };
    let url = format!("rediss://:hunter2-secret@127.0.0.1:{port}/0");
    cfg.redis = Some(RedisConfig { tls: Some(tls), ..RedisConfig::new(url) });
    let before = backend_errors_of("tls");
    let s = stage(cfg);
    eventually("three handshakes refused", async || backend_errors_of("tls") >= before + 3).await;
    for _ in 0..5 {
        let d = s.on_request(&mut ctx(Some("alice-secret-subject"), 0)).await.expect_err("down");
        assert_eq!(d.code, ErrorCode::NotReady);
    }

    let logs = stage_logs();
    assert_eq!(logs.iter().filter(|l| l.contains("backend unavailable (tls)")).count(), 1, "{logs:#?}");
    assert_eq!(logs.iter().filter(|l| l.contains("backend unavailable")).count(), 1, "{logs:#?}");
    let all = LOGS.0.lock().unwrap().join("\n");
    assert!(!all.contains("hunter2"), "the password never reaches a log line");
    assert!(!all.contains("alice-secret-subject"));
}
