//! Test support: a real `redis-server` on a free loopback port, killed on drop; request contexts.

#![allow(dead_code, unreachable_pub)]

pub mod pki;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, Method};
use phigate_plugin::{
    Principal, Readiness, RequestCtx, RequestId, RequestInfo, RouteMeta, Stage, StageBuildCtx, Subject,
};
use phigate_ratelimit::{RateLimitConfig, RateLimitStage};

/// A `redis-server` child process, killed (and reaped) on drop.
pub struct RedisServer {
    child: Option<Child>,
    /// The plain port: readiness and inspection (`command`) go through it.
    pub port: u16,
    /// The TLS port, when started with [`RedisServer::start_tls`].
    pub tls_port: Option<u16>,
}

/// A port nothing listens on (bound, read, released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

impl RedisServer {
    /// Starts `redis-server` on a free port. Panics (the test fails, it is not skipped) when
    /// the binary is missing.
    pub fn start() -> RedisServer {
        for _ in 0..3 {
            if let Some(s) = RedisServer::start_on(free_port()) {
                return s;
            }
        }
        panic!("redis-server did not start on a free port after 3 attempts");
    }

    /// Starts `redis-server` on `port`; `None` if it exited (port taken meanwhile).
    pub fn start_on(port: u16) -> Option<RedisServer> {
        RedisServer::start_with(port, &[])
    }

    /// Starts `redis-server` on `port` with extra arguments (like `--requirepass x`).
    pub fn start_with(port: u16, extra: &[&str]) -> Option<RedisServer> {
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed: run .ci/setup (it installs redis-server), \
                 or `apt-get install -y redis-server`"
            ),
            Err(e) => panic!("cannot run redis-server: {e}"),
        };
        let mut s = RedisServer { child: Some(child), port, tls_port: None };
        // Poll until it answers PING, a bounded number of times; no fixed sleep.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if s.ping() {
                return Some(s);
            }
            if let Some(c) = s.child.as_mut() {
                if c.try_wait().ok().flatten().is_some() {
                    s.child = None;
                    return None;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("redis-server on port {port} did not answer PING within 10 s");
    }

    /// Starts `redis-server` with a TLS 1.3-only port (certificates from `pki`) besides the plain
    /// one. Redis opens every listener before it answers anything, so the plain port answering
    /// `PING` means the TLS port is accepting too. `server_cert` names the certificate (and its
    /// key) the server presents; `auth_clients` is `tls-auth-clients yes`.
    pub fn start_tls(pki: &pki::Pki, server_cert: (&str, &str), auth_clients: bool) -> RedisServer {
        for _ in 0..3 {
            let tls_port = free_port();
            let files = [pki.path(server_cert.0), pki.path(server_cert.1), pki.path(pki::CA)];
            let files: Vec<&str> = files.iter().map(|p| p.to_str().expect("utf-8 temp path")).collect();
            let args = [
                "--tls-port",
                &tls_port.to_string(),
                "--tls-cert-file",
                files[0],
                "--tls-key-file",
                files[1],
                "--tls-ca-cert-file",
                files[2],
                "--tls-auth-clients",
                if auth_clients { "yes" } else { "no" },
                "--tls-protocols",
                "TLSv1.3",
            ];
            if let Some(mut s) = RedisServer::start_with(free_port(), &args) {
                s.tls_port = Some(tls_port);
                return s;
            }
        }
        panic!("redis-server (TLS) did not start on free ports after 3 attempts");
    }

    /// The `rediss://` URL of the TLS port.
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.tls_port.expect("started with start_tls"))
    }

    /// Whether the server answers `PING` with `+PONG`.
    pub fn ping(&self) -> bool {
        self.command("PING\r\n").is_some_and(|r| r.starts_with("+PONG") || r.starts_with("-NOAUTH"))
    }

    /// Sends one raw RESP inline command and returns the first reply chunk.
    pub fn command(&self, line: &str) -> Option<String> {
        let mut c = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        c.write_all(line.as_bytes()).ok()?;
        let mut buf = [0u8; 4096];
        let n = c.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn routes() -> Vec<Arc<RouteMeta>> {
    ["fhir", "admin"]
        .iter()
        .enumerate()
        .map(|(index, name)| {
            Arc::new(RouteMeta {
                name: (*name).into(),
                index,
                prefix: format!("/{name}").into(),
                fhir: index == 0,
                upstream: "up".into(),
            })
        })
        .collect()
}

/// Builds the stage and spawns its background tasks on the current runtime.
pub fn stage(cfg: RateLimitConfig) -> Arc<RateLimitStage> {
    stage_in(cfg, Path::new("/"))
}

/// [`stage`], with relative file paths resolved against `config_dir`.
pub fn stage_in(cfg: RateLimitConfig, config_dir: &Path) -> Arc<RateLimitStage> {
    let routes = routes();
    let ctx = StageBuildCtx { routes: &routes, config_dir };
    let stage = Arc::new(cfg.build(&ctx).expect("valid config"));
    for task in stage.background_tasks() {
        tokio::spawn(task);
    }
    stage
}

/// Waits (bounded) until `f` holds, polling every few milliseconds.
pub async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

pub async fn ready(stage: &RateLimitStage) {
    eventually("stage ready", async || matches!(stage.readiness(), Readiness::Ready(None))).await;
}

pub fn principal(sub: &str) -> Arc<Principal> {
    Arc::new(Principal::new("https://issuer.test", Subject::from(sub)))
}

pub fn ctx(sub: Option<&str>, route: usize) -> RequestCtx {
    let info = RequestInfo {
        method: Method::GET,
        path: "/fhir/Patient".into(),
        query: vec![],
        headers: HeaderMap::new(),
        body: None,
    };
    let mut ctx = RequestCtx::new(RequestId::new("r"), Arc::clone(&routes()[route]), info);
    ctx.principal = sub.map(principal);
    ctx.client.ip = Some("192.0.2.10".parse::<IpAddr>().expect("ip"));
    ctx
}

/// The value of `phigate_ratelimit_decisions_total{limit, result}`.
pub fn decisions(limit: &str, result: &str) -> u64 {
    counter("phigate_ratelimit_decisions_total", &[("limit", limit), ("result", result)])
}

/// `phigate_ratelimit_backend_errors_total`, summed over kinds.
pub fn backend_errors() -> u64 {
    counter("phigate_ratelimit_backend_errors_total", &[])
}

/// `phigate_ratelimit_backend_errors_total{kind}`.
pub fn backend_errors_of(kind: &str) -> u64 {
    counter("phigate_ratelimit_backend_errors_total", &[("kind", kind)])
}

/// Installs what the gateway installs before anything starts: ring, TLS 1.3 suites only, as the
/// process-default rustls provider (the Redis client builds its TLS config from it). Idempotent.
pub fn install_tls13_provider() {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.retain(|s| matches!(s, rustls::SupportedCipherSuite::Tls13(_)));
    let _ = rustls::crypto::CryptoProvider::install_default(provider);
}

fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    let mut total = 0.0;
    for family in prometheus::gather().iter().filter(|f| f.name() == name) {
        for m in family.get_metric() {
            let has = |(k, v): &(&str, &str)| m.get_label().iter().any(|l| l.name() == *k && l.value() == *v);
            if labels.iter().all(has) {
                total += m.get_counter().get_value();
            }
        }
    }
    total as u64
}
