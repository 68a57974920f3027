//! Process lifecycle through the real binary and real signals: SIGTERM drains in-flight requests
//! within the configured grace period; SIGQUIT hands the listening socket to a new process
//! (zero-downtime upgrade) without a single refused request.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use phigate::demo::pki::DevPki;
use phigate_test_support::{free_port, wait_listening};
use tokio::sync::{mpsc, Notify};

/// A plain-HTTP upstream whose `/slow` answers only when released; it reports each request.
struct SlowUpstream {
    addr: SocketAddr,
    release: Arc<Notify>,
    seen: mpsc::UnboundedReceiver<String>,
}

async fn slow_upstream() -> SlowUpstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let release = Arc::new(Notify::new());
    let (tx, seen) = mpsc::unbounded_channel();
    let rel = release.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (rel, tx) = (rel.clone(), tx.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (rel, tx) = (rel.clone(), tx.clone());
                    async move {
                        let path = req.uri().path().to_owned();
                        let _ = tx.send(path.clone());
                        if path == "/slow" {
                            rel.notified().await;
                        }
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(
                            "done",
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    SlowUpstream { addr, release, seen }
}

fn write_config(
    dir: &Path,
    port: u16,
    admin: u16,
    upstream: SocketAddr,
    extra_route: bool,
) -> std::path::PathBuf {
    let extra = if extra_route {
        "  - { name: new, path_prefix: /new, upstream: up, upstream_path_prefix: /served-by-new }\n"
    } else {
        ""
    };
    let yaml = format!(
        "listeners:\n  - name: public\n    address: 127.0.0.1:{port}\n    tls: {{ cert_path: pki/gateway.crt, key_path: pki/gateway.key }}\n\
         admin: {{ address: 127.0.0.1:{admin} }}\n\
         server: {{ threads: 1, grace_period_secs: 2, graceful_shutdown_timeout_secs: 1, upgrade_sock: {sock}, pid_file: {pid} }}\n\
         upstreams:\n  - {{ name: up, address: '{upstream}', insecure_plaintext: true }}\n\
         routes:\n  - {{ name: all, path_prefix: /, upstream: up }}\n{extra}",
        sock = dir.join("upgrade.sock").display(),
        pid = dir.join("phigate.pid").display(),
    );
    let name = if extra_route { "new.yaml" } else { "old.yaml" };
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path
}

fn spawn_gateway(config: &Path, upgrade: bool) -> Child {
    spawn_logging(config, upgrade, Stdio::null())
}

/// The gateway with its log (stderr) going to `log`.
fn spawn_logging(config: &Path, upgrade: bool, log: Stdio) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_phigate"));
    cmd.arg("run").arg("--config").arg(config).stdout(Stdio::null()).stderr(log);
    if upgrade {
        cmd.arg("--upgrade");
    }
    cmd.spawn().unwrap()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status().unwrap();
    assert!(ok.success());
}

/// Waits (bounded) for the child to exit.
fn wait_exit(mut child: Child, within: Duration) -> ExitStatus {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    rx.recv_timeout(within).expect("gateway exits in time").unwrap()
}

/// One HTTPS GET on a new connection with curl; returns the status (0 when the request failed).
fn curl_status(dir: &Path, port: u16, path: &str) -> u16 {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "--cacert"])
        .arg(dir.join("pki/ca.crt"))
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    DevPki::generate().unwrap().write_to(&dir.path().join("pki")).unwrap();
    let mut up = slow_upstream().await;
    let (port, admin) = (free_port(), free_port());
    let config = write_config(dir.path(), port, admin, up.addr, false);
    let log_path = dir.path().join("gateway.log");
    let gw = spawn_logging(&config, false, std::fs::File::create(&log_path).unwrap().into());
    wait_listening(([127, 0, 0, 1], port).into());

    let d = dir.path().to_owned();
    let in_flight = tokio::task::spawn_blocking(move || curl_status(&d, port, "/slow"));
    assert_eq!(up.seen.recv().await.as_deref(), Some("/slow"), "the request reached the upstream");
    signal(&gw, "TERM");
    up.release.notify_one();
    assert_eq!(in_flight.await.unwrap(), 200, "the in-flight request completed");
    let status = tokio::task::spawn_blocking(move || wait_exit(gw, Duration::from_secs(20))).await.unwrap();
    assert!(status.success(), "clean exit: {status}");
    // Lines logged as the process exits are written (the log writer thread is flushed first).
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.trim_end().ends_with("stopped"), "the last line is missing: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_upgrade_hands_over_the_socket_without_refusing_requests() {
    let dir = tempfile::tempdir().unwrap();
    DevPki::generate().unwrap().write_to(&dir.path().join("pki")).unwrap();
    let mut up = slow_upstream().await;
    let (port, admin) = (free_port(), free_port());
    let old_cfg = write_config(dir.path(), port, admin, up.addr, false);
    let new_cfg = write_config(dir.path(), port, admin, up.addr, true);
    let mut old = spawn_gateway(&old_cfg, false);
    wait_listening(([127, 0, 0, 1], port).into());
    let d = dir.path().to_owned();
    assert_eq!(tokio::task::spawn_blocking(move || curl_status(&d, port, "/new/ping")).await.unwrap(), 200);
    assert_eq!(up.seen.recv().await.as_deref(), Some("/new/ping"), "the old config serves first");

    // The new process waits on the upgrade socket; the old one retries sending until it is there.
    let new = spawn_gateway(&new_cfg, true);
    signal(&old, "QUIT");
    let d = dir.path().to_owned();
    let statuses = tokio::task::spawn_blocking(move || {
        // Keep opening new connections until the old process has gone (bounded by 30 s): every
        // one must be answered, by either process.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut statuses = Vec::new();
        while old.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "old process did not exit");
            statuses.push(curl_status(&d, port, "/x"));
        }
        statuses.push(curl_status(&d, port, "/new/ping"));
        statuses
    })
    .await
    .unwrap();
    assert!(statuses.len() > 1);
    assert!(statuses.iter().all(|s| *s == 200), "a request failed during the upgrade: {statuses:?}");
    let mut last = None;
    while let Ok(path) = up.seen.try_recv() {
        last = Some(path);
    }
    assert_eq!(last.as_deref(), Some("/served-by-new/ping"), "the new process serves after the upgrade");
    signal(&new, "INT");
    tokio::task::spawn_blocking(move || wait_exit(new, Duration::from_secs(20))).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_listener_certificate() {
    use phigate_test_support::{TlsProbe, WhichCa};
    let dir = tempfile::tempdir().unwrap();
    let pki = DevPki::generate().unwrap();
    let paths = pki.write_to(&dir.path().join("pki")).unwrap();
    let up = slow_upstream().await;
    let (port, admin) = (free_port(), free_port());
    let config = write_config(dir.path(), port, admin, up.addr, false);
    let gw = spawn_gateway(&config, false);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_listening(addr);
    let probe = || {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(pki.ca.root_store())
            .with_no_client_auth();
        Arc::new(cfg)
    };
    let before = TlsProbe::handshake(addr, probe()).await.unwrap().peer_certificates[0].clone();
    assert_eq!(before.as_ref(), pki.gateway.cert_der().as_ref());

    let fresh = pki.issue_server(WhichCa::Public, &["localhost", "127.0.0.1"]).unwrap();
    std::fs::write(&paths.gateway_cert, fresh.cert_pem()).unwrap();
    std::fs::write(&paths.gateway_key, fresh.key_pem()).unwrap();
    signal(&gw, "HUP");
    // The reload runs on the gateway's background service: watch new handshakes (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let served = TlsProbe::handshake(addr, probe()).await.unwrap().peer_certificates[0].clone();
        if served.as_ref() == fresh.cert_der().as_ref() {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload the certificate");
        tokio::task::yield_now().await;
    }
    signal(&gw, "INT");
    tokio::task::spawn_blocking(move || wait_exit(gw, Duration::from_secs(20))).await.unwrap();
}
