//! A kept Redis connection for request paths that must never wait to connect.
//!
//! Requests take the current connection (multiplexed, cheap to clone) or fail at once with
//! [`Failure::Unavailable`]. One background task ([`Keeper::run`]) connects with backoff, loads
//! the caller's script if it has one, checks the connection with `PING` every second, and
//! replaces it as soon as a request reports it broken ([`Keeper::failed`]). Up/down transitions
//! are reported once each through [`Transitions`], so a flapping Redis logs one pair per check
//! interval, not one line per request.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};
use tokio::sync::Notify;

/// How often a healthy connection is checked with `PING`.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// First and longest pause between connection attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// Why Redis could not answer. Only the kind is kept: a client error's text may quote the
/// address or the URL's password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// No connection to Redis (never made, or dropped and not yet made again).
    #[error("no connection to redis")]
    Unavailable,
    /// Redis did not answer in time.
    #[error("redis did not answer in time")]
    Timeout,
    /// The connection failed.
    #[error("redis connection failed")]
    Io,
    /// The TLS handshake failed or TLS broke the connection: an untrusted, expired or misnamed
    /// server certificate, or Redis refused (or required) the client certificate.
    #[error("redis TLS failed")]
    Tls,
    /// Redis answered with an error or an unexpected reply.
    #[error("redis answered with an error")]
    Reply,
}

impl Failure {
    /// Classifies a client error.
    pub fn from_redis(e: &redis::RedisError) -> Failure {
        if e.is_timeout() {
            Failure::Timeout
        } else if crate::is_tls_error(e) {
            Failure::Tls
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
            Failure::Io
        } else {
            Failure::Reply
        }
    }

    /// Whether the connection should be replaced after this failure.
    pub fn needs_reconnect(self) -> bool {
        matches!(self, Failure::Io | Failure::Tls)
    }
}

/// What the owner of a [`Keeper`] is told: each failed attempt (for counters) and each change
/// between up and down (for one log line and a gauge).
pub trait Transitions: Send + Sync + 'static {
    /// A connection attempt or health check failed.
    fn attempt_failed(&self, why: Failure);
    /// Redis became reachable (`true`) or unreachable (`false`, with the failure that showed it).
    fn changed(&self, up: bool, why: Option<Failure>);
}

/// A live connection, and the SHA-1 of the caller's script as Redis reported it when loaded.
#[derive(Debug)]
pub struct Connected {
    /// The connection; clone it for each command.
    pub conn: MultiplexedConnection,
    /// The script's SHA-1 for `EVALSHA`, when the keeper was given a script.
    pub script_sha: Option<String>,
}

/// Timeouts of a [`Keeper`].
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Longest a connection attempt (with its `PING` and script load) may take.
    pub connect: Duration,
    /// Longest a `PING` (and any command sent through the connection) may wait for its answer.
    pub response: Duration,
}

/// The kept connection. Share it in an `Arc`; spawn [`Keeper::run`] once.
pub struct Keeper {
    client: Client,
    current: ArcSwapOption<Connected>,
    reconnect: Notify,
    state: AtomicU8,
    ever_up: AtomicBool,
    timeouts: Timeouts,
    script: Option<&'static str>,
    transitions: Box<dyn Transitions>,
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client holds the URL, which may hold a password: never printed.
        f.debug_struct("Keeper").field("up", &self.is_up()).finish_non_exhaustive()
    }
}

impl Keeper {
    /// A keeper that is not connected yet; `script` is loaded (`SCRIPT LOAD`) on every new
    /// connection, so `EVALSHA` works after Redis restarted.
    pub fn new(
        client: Client,
        timeouts: Timeouts,
        script: Option<&'static str>,
        transitions: Box<dyn Transitions>,
    ) -> Keeper {
        Keeper {
            client,
            current: ArcSwapOption::empty(),
            reconnect: Notify::new(),
            state: AtomicU8::new(UNKNOWN),
            ever_up: AtomicBool::new(false),
            timeouts,
            script,
            transitions,
        }
    }

    /// The current connection, or `None` while there is none (never waits).
    pub fn current(&self) -> Option<Arc<Connected>> {
        self.current.load_full()
    }

    /// Whether Redis has answered a `PING` since start.
    pub fn ever_up(&self) -> bool {
        self.ever_up.load(Ordering::Acquire)
    }

    /// Whether the last thing tried against Redis worked.
    pub fn is_up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == UP
    }

    /// Reports a failure a request saw on `conn` (the connection it used, if any): marks Redis
    /// down, and when the failure says the connection is broken, drops that connection (not a
    /// newer one the task may have made meanwhile) and wakes the task to reconnect. Only the
    /// task marks Redis up again, after a `PING`.
    pub fn failed(&self, why: Failure, conn: Option<&Arc<Connected>>) {
        if let (true, Some(c)) = (why.needs_reconnect(), conn) {
            self.current.compare_and_swap(c, None);
            self.reconnect.notify_one();
        }
        self.mark(DOWN, Some(why));
    }

    fn mark(&self, to: u8, why: Option<Failure>) {
        if self.state.load(Ordering::Relaxed) == to || self.state.swap(to, Ordering::AcqRel) == to {
            return;
        }
        self.transitions.changed(to == UP, why);
    }

    async fn connect(&self) -> Result<Connected, Failure> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeouts.connect))
            .set_response_timeout(Some(self.timeouts.response));
        let attempt = async {
            let mut conn = self.client.get_multiplexed_async_connection_with_config(&config).await?;
            let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
            let script_sha = match self.script {
                Some(s) => {
                    Some(redis::cmd("SCRIPT").arg("LOAD").arg(s).query_async::<String>(&mut conn).await?)
                }
                None => None,
            };
            Ok::<_, redis::RedisError>((conn, pong, script_sha))
        };
        match tokio::time::timeout(self.timeouts.connect, attempt).await {
            Ok(Ok((conn, pong, script_sha))) if pong == "PONG" => Ok(Connected { conn, script_sha }),
            Ok(Ok(_)) => Err(Failure::Reply),
            Ok(Err(e)) => Err(Failure::from_redis(&e)),
            Err(_) => Err(Failure::Timeout),
        }
    }

    async fn ping(&self, c: &Connected) -> Result<(), Failure> {
        let mut conn = c.conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        match tokio::time::timeout(self.timeouts.response, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Failure::from_redis(&e)),
            Err(_) => Err(Failure::Timeout),
        }
    }

    /// Connects (with backoff), then pings every second or as soon as a request saw the
    /// connection break. Runs for the life of the keeper's owner.
    pub async fn run(self: Arc<Self>) {
        let mut backoff = BACKOFF.0;
        loop {
            let Some(c) = self.current.load_full() else {
                match self.connect().await {
                    Ok(c) => {
                        self.current.store(Some(Arc::new(c)));
                        self.ever_up.store(true, Ordering::Release);
                        self.mark(UP, None);
                        backoff = BACKOFF.0;
                    }
                    Err(e) => {
                        self.transitions.attempt_failed(e);
                        self.mark(DOWN, Some(e));
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF.1);
                    }
                }
                continue;
            };
            tokio::select! {
                () = self.reconnect.notified() => continue,
                () = tokio::time::sleep(HEALTH_INTERVAL) => {}
            }
            match self.ping(&c).await {
                Ok(()) => self.mark(UP, None),
                Err(e) => {
                    self.transitions.attempt_failed(e);
                    self.current.compare_and_swap(&c, None);
                    self.mark(DOWN, Some(e));
                }
            }
        }
    }
}
