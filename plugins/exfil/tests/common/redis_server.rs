//! A real `redis-server` on a loopback port, killed on drop, and a bounded wait for conditions
//! that other tasks make true.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process, killed (and reaped) on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

/// A loopback port nothing listens on (bound, read, released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `redis://127.0.0.1:<port>/0`.
pub fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/0")
}

impl RedisServer {
    /// Starts `redis-server` on a free port (the test fails if the binary is missing).
    pub fn start() -> RedisServer {
        (0..3).find_map(|_| RedisServer::start_on(free_port())).expect("redis-server did not start")
    }

    /// Starts `redis-server` on `port`; `None` if it exited (the port was taken meanwhile).
    pub fn start_on(port: u16) -> Option<RedisServer> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install -y redis-server)");
        let mut s = RedisServer { child: Some(child), port };
        // Ready when it answers PING; a bounded number of polls, no fixed sleep.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if s.pings() {
                return Some(s);
            }
            if s.child.as_mut().and_then(|c| c.try_wait().ok().flatten()).is_some() {
                s.child = None;
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("redis-server on port {port} did not answer PING within 10 s");
    }

    fn pings(&self) -> bool {
        let Ok(mut c) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 16];
        c.write_all(b"PING\r\n").is_ok() && c.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
    }

    pub fn url(&self) -> String {
        url(self.port)
    }

    /// A connection for inspecting (and writing to) the server from the test.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url()).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
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

/// Waits (at most 10 s) until `f` holds, polling every few milliseconds while the stage's
/// background tasks run.
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
