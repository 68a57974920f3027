//! An in-process gateway for tests: free loopback ports, its own thread (pingora builds its own
//! runtimes), shutdown through a notifier, readiness by connecting to its ports.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use phigate::config::LoadedConfig;
use phigate::{Gateway, Reloader};
use phigate_plugin::Stage;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::sync::Notify;

/// A running gateway.
pub struct TestGateway {
    /// Address of the (first) public TLS listener.
    pub addr: SocketAddr,
    /// Address of the admin service.
    pub admin: SocketAddr,
    /// Reloads certificates and stage files, like SIGHUP.
    pub reloader: Reloader,
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

/// A free loopback port (bound, read, released: the race with other processes is acceptable in
/// tests).
///
/// Never the same port twice in this process: tests run concurrently, and two gateways handed
/// one port would leave one unable to bind while the other answered its clients (seen as a TLS
/// handshake cut short by another gateway's plain-HTTP admin port). And taken below the kernel's
/// ephemeral range when it can be: between its release here and the gateway's bind, anything
/// else in the process binding `127.0.0.1:0` (a sample upstream, a collector) could be handed
/// the same port by the kernel, and the test would talk to that server instead (seen as a TLS
/// handshake refusing another test's certificate authority).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
    let bindable = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
    if let Some(low) = ephemeral_low().filter(|low| *low > FIXED_BASE + 1000) {
        // Start somewhere else in each process, so concurrent test binaries rarely probe alike.
        let span = u32::from(low - FIXED_BASE);
        let start = std::process::id().wrapping_mul(2_654_435_761) % span;
        for i in 0..span {
            let port = FIXED_BASE + u16::try_from((start + i) % span).unwrap_or(0);
            if !given.contains(&port) && bindable(port) {
                given.insert(port);
                return port;
            }
        }
    }
    for _ in 0..1000 {
        let port =
            TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0);
        if port != 0 && given.insert(port) {
            return port;
        }
    }
    0
}

/// The lowest port of the range below the kernel's ephemeral ports that [`free_port`] hands out.
const FIXED_BASE: u16 = 10_000;

/// The first port of the kernel's ephemeral range (what `bind(0)` draws from), if known.
fn ephemeral_low() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

struct NotifyShutdown(Arc<Notify>);

#[async_trait]
impl ShutdownSignalWatch for NotifyShutdown {
    async fn recv(&self) -> ShutdownSignal {
        self.0.notified().await;
        ShutdownSignal::FastShutdown
    }
}

impl TestGateway {
    /// Starts a gateway from YAML (relative paths resolve against `dir`). The first listener's
    /// and the admin service's addresses are replaced with free loopback ports, and the pid file
    /// and upgrade socket are put in `dir`.
    ///
    /// # Panics
    /// When the config does not parse or the gateway does not build or start.
    pub fn start_yaml(yaml: &str, dir: &Path, stages: Vec<Arc<dyn Stage>>) -> TestGateway {
        let loaded = phigate::config::load_from_str(yaml, &dir.join("gateway.yaml"))
            .unwrap_or_else(|e| panic!("test config: {e}"));
        Self::start(loaded, dir, stages)
    }

    /// Starts a gateway from a config (see [`TestGateway::start_yaml`]).
    ///
    /// # Panics
    /// When the gateway does not build or start.
    pub fn start(mut loaded: LoadedConfig, dir: &Path, stages: Vec<Arc<dyn Stage>>) -> TestGateway {
        let config = &mut loaded.config;
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        config.listeners[0].address = addr.to_string();
        config.admin.address = admin.to_string();
        config.server.pid_file = dir.join("phigate.pid");
        config.server.upgrade_sock = dir.join("upgrade.sock");
        config.server.threads = 1;
        let mut builder = Gateway::builder(loaded);
        for stage in stages {
            builder = builder.stage(stage);
        }
        let gateway = builder.build().expect("gateway builds");
        let reloader = gateway.reloader();
        let stop = Arc::new(Notify::new());
        let watch = NotifyShutdown(stop.clone());
        let thread = std::thread::spawn(move || gateway.run(Box::new(watch)));
        wait_listening(addr);
        wait_listening(admin);
        TestGateway { addr, admin, reloader, stop, thread: Some(thread) }
    }

    /// `https://localhost:PORT` of the public listener.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// `http://127.0.0.1:PORT` of the admin service.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }
}

impl TestGateway {
    /// Stops the gateway and waits until it has finished (every request's `on_complete` has run).
    /// Idempotent; dropping the gateway does the same.
    pub fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.notify_one();
            let _ = t.join();
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until something accepts TCP connections on `addr` (bounded: panics after 20 s).
///
/// # Panics
/// When nothing listens within the bound.
pub fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::yield_now();
    }
}
