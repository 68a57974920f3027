//! Test support for the stages that use Redis: a real `redis-server` on a free loopback port
//! (plain, or with a TLS 1.3 port besides), killed and reaped on drop, a throwaway PKI for the
//! TLS port ([`pki`]), and a bounded wait for conditions that background tasks make true. Tests
//! fail (they are not skipped) when `redis-server` is missing; `.ci/setup` installs it.

// Test support: a server that cannot start is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod pki;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

    /// Starts `redis-server` with a TLS 1.3-only port besides the plain one. Redis opens every
    /// listener before it answers anything, so the plain port answering `PING` means the TLS
    /// port is accepting too. `cert` and `key` are what the server presents, `ca` what client
    /// certificates must chain to; `auth_clients` is `tls-auth-clients yes`.
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path, auth_clients: bool) -> RedisServer {
        let path = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
        let (cert, key, ca) = (path(cert), path(key), path(ca));
        for _ in 0..3 {
            let tls_port = free_port().to_string();
            let args = [
                "--tls-port",
                &tls_port,
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
                "--tls-auth-clients",
                if auth_clients { "yes" } else { "no" },
                "--tls-protocols",
                "TLSv1.3",
            ];
            if let Some(mut s) = RedisServer::start_with(free_port(), &args) {
                s.tls_port = tls_port.parse().ok();
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

    /// The `redis://` URL of the plain port.
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

/// A `redis-server` with a TLS 1.3 port presenting `server_cert` (certificate, key file names)
/// from `pki`, client certificates checked against the PKI's CA; `auth_clients` is
/// `tls-auth-clients yes`.
pub fn tls_server(pki: &pki::Pki, server_cert: (&str, &str), auth_clients: bool) -> RedisServer {
    RedisServer::start_tls(
        &pki.path(server_cert.0),
        &pki.path(server_cert.1),
        &pki.path(pki::CA),
        auth_clients,
    )
}

/// Installs what the gateway installs before anything starts: ring, TLS 1.3 suites only, as the
/// process-default rustls provider (the Redis client builds its TLS config from it). Idempotent.
pub fn install_tls13_provider() {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.retain(|s| matches!(s, rustls::SupportedCipherSuite::Tls13(_)));
    let _ = rustls::crypto::CryptoProvider::install_default(provider);
}

/// Waits (at most 10 s) until `f` holds, polling every few milliseconds while other tasks run.
///
/// # Panics
/// When `f` does not hold in time: the test fails, naming `what`.
pub async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for: {what}");
}
