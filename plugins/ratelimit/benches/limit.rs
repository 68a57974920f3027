//! Cost of the rate-limit stage per request, through the real `Stage::on_request`:
//! in memory on the hit path (one key, allowed), refused, with two limits and the IETF headers,
//! over a million distinct keys; plus memory per key and sweep time (printed); the Redis
//! backend's per-request work without the round trip (key naming, SHA-256 or HMAC); and one
//! Redis round trip, plain, with `hmac_key_path` and over TLS, when `redis-server` is installed.
//!
//! `cargo bench -p phigate-ratelimit --bench limit`.
//!
//! Measured 2026-11-23 on the shared 2-core dev machine at load average 3-6 (upper bounds):
//! hit path one limit 250-280 ns, two limits 270-400 ns, refused 270-320 ns, hit among 1 M keys
//! 540-570 ns, insert of a new key 720-790 ns, ~165 bytes per key, sweep of 1 M keys 13-60 ms,
//! Redis (loopback, two limits, one round trip) 50-110 µs; over TLS 1.3 61-65 µs (plain 52-70 µs
//! in the same runs). Redis keys named without the round trip (`redis_keys/*`, two limits, load
//! ~3): SHA-256 570-660 ns, HMAC-SHA256 690-920 ns, against 690-960 ns for the SHA-256 naming
//! before key names were written in place (two allocations per key, now one). The README has
//! the table.

use std::future::Future;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, Method};
use phigate_plugin::{
    Principal, RequestCtx, RequestId, RequestInfo, RouteMeta, Stage, StageBuildCtx, Subject, TenantId,
};
use phigate_ratelimit::{
    BackendKind, FailureMode, LimitConfig, RateLimitConfig, RateLimitStage, RedisConfig, RedisTlsConfig,
};

/// Runs a future that completes without waiting (the in-memory stage never waits).
fn now<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the in-memory stage never waits"),
    }
}

fn routes() -> Vec<Arc<RouteMeta>> {
    vec![Arc::new(RouteMeta {
        name: "fhir".into(),
        index: 0,
        prefix: "/fhir".into(),
        fhir: true,
        upstream: "fhir".into(),
    })]
}

fn build(cfg: RateLimitConfig) -> RateLimitStage {
    let routes = routes();
    cfg.build(&StageBuildCtx { routes: &routes, config_dir: Path::new("/") }).expect("valid")
}

fn generous(name: &str, key: &str) -> LimitConfig {
    LimitConfig { burst: Some(1_000_000), ..LimitConfig::new(name, key, 1_000_000, 1) }
}

fn ctx() -> RequestCtx {
    let info = RequestInfo {
        method: Method::GET,
        path: "/fhir/Patient".into(),
        query: vec![],
        headers: HeaderMap::new(),
        body: None,
    };
    let mut ctx = RequestCtx::new(RequestId::new("r"), routes()[0].clone(), info);
    ctx.principal = Some(Arc::new(Principal {
        tenant: Some(TenantId::from("tenant-a")),
        ..Principal::new("https://issuer.test", Subject::from("clinician_a"))
    }));
    ctx.client.ip = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    ctx
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn memory(c: &mut Criterion) {
    let mut g = c.benchmark_group("memory");
    let one = build(RateLimitConfig::new(vec![generous("per_user", "principal")]));
    let mut req = ctx();
    g.bench_function("hit_one_limit", |b| b.iter(|| black_box(now(one.on_request(&mut req)).is_ok())));

    let two = build(RateLimitConfig::new(vec![
        generous("per_user", "principal"),
        generous("per_route", "principal+route"),
    ]));
    g.bench_function("hit_two_limits", |b| b.iter(|| black_box(now(two.on_request(&mut req)).is_ok())));

    let mut with_headers = RateLimitConfig::new(vec![generous("per_user", "principal")]);
    with_headers.response_headers = true;
    let headers = build(with_headers);
    g.bench_function("hit_one_limit_with_headers", |b| {
        b.iter(|| {
            let mut r = ctx();
            black_box(now(headers.on_request(&mut r)).is_ok())
        })
    });
    g.bench_function("context_build_only (baseline for the line above)", |b| b.iter(|| black_box(ctx())));

    let refusing = build(RateLimitConfig::new(vec![LimitConfig::new("tight", "principal", 1, 3600)]));
    g.bench_function("denied", |b| b.iter(|| black_box(now(refusing.on_request(&mut req)).is_err())));
    g.finish();
}

fn many_keys(c: &mut Criterion) {
    const KEYS: u32 = 1 << 20;
    let stage = build(RateLimitConfig::new(vec![generous("per_ip", "client_ip")]));
    let mut req = ctx();
    let before = rss_bytes();
    let start = Instant::now();
    for n in 0..KEYS {
        req.client.ip = Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)));
        assert!(now(stage.on_request(&mut req)).is_ok());
    }
    let fill = start.elapsed();
    let grown = rss_bytes().saturating_sub(before);
    eprintln!(
        "MEASURED: {KEYS} distinct keys inserted in {fill:?} ({:.0} ns each); RSS +{} MiB = {} bytes/key",
        fill.as_nanos() as f64 / f64::from(KEYS),
        grown >> 20,
        grown / u64::from(KEYS)
    );
    let mut i: u32 = 0;
    c.bench_function("memory/hit_among_1m_keys", |b| {
        b.iter(|| {
            // An odd multiplier walks all keys in a cache-unfriendly order.
            i = i.wrapping_add(1);
            let n = i.wrapping_mul(2_654_435_761) & (KEYS - 1);
            req.client.ip = Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)));
            black_box(now(stage.on_request(&mut req)).is_ok())
        })
    });
    let start = Instant::now();
    let left = stage.sweep_now();
    eprintln!("MEASURED: sweep over {} keys (all expired, T = 1 µs): {:?}", KEYS, start.elapsed());
    assert_eq!(left, 0);

    let slow = build(RateLimitConfig::new(vec![LimitConfig::new("per_ip", "client_ip", 10, 3600)]));
    for n in 0..KEYS {
        req.client.ip = Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)));
        assert!(now(slow.on_request(&mut req)).is_ok());
    }
    let start = Instant::now();
    let left = slow.sweep_now();
    eprintln!("MEASURED: sweep over {} live keys (none dropped): {:?}", left, start.elapsed());
}

/// A `redis-server` on a free port for the Redis bench, killed on drop.
struct Server(std::process::Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// `redis-server` on a free port, with `extra` arguments; ready once the plain port accepts
/// (Redis opens every listener, the TLS one too, before it accepts anything).
fn redis_server(extra: &[&str]) -> Option<Server> {
    let port = free_port();
    let child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let server = Server(child, port);
    for _ in 0..2000 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(server);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    None
}

/// A CA and a server certificate for 127.0.0.1, written as `ca.pem`, `server.pem` and
/// `server-key.pem` into `dir`.
fn write_pki(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let write = |name: &str, pem: String| std::fs::write(dir.join(name), pem).expect("write PEM");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("CA key");
    write("ca.pem", ca.self_signed(&ca_key).expect("CA").pem());
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    write("server.pem", cert.signed_by(&key, &issuer).expect("server cert").pem());
    write("server-key.pem", key.serialize_pem());
}

/// The Redis backend's own work per request without the round trip: keys built (and hashed)
/// for two limits, then the failure path (no connection; `failure_mode: allow`). What differs
/// between the cases is only how the Redis keys are named: SHA-256, or HMAC-SHA256 with
/// `hmac_key_path`.
fn redis_keys(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("rl.key"), [7u8; 32]).expect("key file");
    for (name, key) in [("sha256", None), ("hmac", Some(dir.path().join("rl.key")))] {
        let unreachable = RedisConfig::new("redis://127.0.0.1:1/0");
        let redis = RedisConfig { failure_mode: FailureMode::Allow, hmac_key_path: key, ..unreachable };
        let stage = build(two_limits_on(redis));
        let mut req = ctx();
        c.bench_function(&format!("redis_keys/two_limits_{name}_no_connection"), |b| {
            b.iter(|| black_box(now(stage.on_request(&mut req)).is_ok()))
        });
    }
}

/// `principal` and `principal+route`, generous, shared through `redis`.
fn two_limits_on(redis: RedisConfig) -> RateLimitConfig {
    let mut cfg = RateLimitConfig::new(vec![
        generous("per_user", "principal"),
        generous("per_route", "principal+route"),
    ]);
    cfg.backend = BackendKind::Redis;
    cfg.redis = Some(redis);
    cfg
}

fn redis(c: &mut Criterion) {
    let Some(server) = redis_server(&[]) else {
        eprintln!("redis-server not available: Redis bench skipped (run .ci/setup)");
        return;
    };
    let plain = RedisConfig::new(format!("redis://127.0.0.1:{}/0", server.1));
    redis_case(c, "redis/two_limits_one_round_trip", plain.clone());
    let keys = tempfile::tempdir().expect("temp dir");
    std::fs::write(keys.path().join("rl.key"), [7u8; 32]).expect("key file");
    let keyed = RedisConfig { hmac_key_path: Some(keys.path().join("rl.key")), ..plain };
    redis_case(c, "redis/two_limits_one_round_trip_hmac", keyed);

    // The same over TLS 1.3, on the provider the gateway installs.
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.retain(|s| matches!(s, rustls::SupportedCipherSuite::Tls13(_)));
    let _ = rustls::crypto::CryptoProvider::install_default(provider);
    let dir = tempfile::tempdir().expect("temp dir");
    write_pki(dir.path());
    let (tls_port, file) = (free_port(), |n: &str| dir.path().join(n).to_string_lossy().into_owned());
    let (cert, key, ca) = (file("server.pem"), file("server-key.pem"), file("ca.pem"));
    let tls_args = ["--tls-port", &tls_port.to_string(), "--tls-cert-file", &cert, "--tls-key-file", &key];
    let Some(_tls_server) =
        redis_server(&[&tls_args[..], &["--tls-ca-cert-file", &ca, "--tls-auth-clients", "no"]].concat())
    else {
        eprintln!("redis-server with TLS did not start: TLS bench skipped");
        return;
    };
    let tls = RedisTlsConfig { ca_path: Some(dir.path().join("ca.pem")), ..RedisTlsConfig::default() };
    let rediss =
        RedisConfig { tls: Some(tls), ..RedisConfig::new(format!("rediss://127.0.0.1:{tls_port}/0")) };
    redis_case(c, "redis_tls/two_limits_one_round_trip", rediss);
}

fn redis_case(c: &mut Criterion, name: &str, redis: RedisConfig) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
    let stage = build(two_limits_on(redis));
    for task in stage.background_tasks() {
        rt.spawn(task);
    }
    let mut req = ctx();
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    rt.block_on(async {
        while !matches!(stage.readiness(), phigate_plugin::Readiness::Ready(None)) {
            assert!(Instant::now() < deadline, "{name}: Redis not ready within 10 s");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    c.bench_function(name, |b| b.iter(|| black_box(rt.block_on(stage.on_request(&mut req)).is_ok())));
}

criterion_group!(benches, memory, many_keys, redis_keys, redis);
criterion_main!(benches);
