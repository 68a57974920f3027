//! The Redis backend: the same GCRA as in memory, computed atomically by a Lua script in Redis
//! so that every replica shares one budget per key.
//!
//! Requests never wait for a connection: they use the current one (multiplexed, cheap to clone)
//! or fail at once. A background task connects, loads the script, and checks the connection with
//! `PING`; a request that sees the connection break asks it to reconnect. The script is called
//! with `EVALSHA`, falling back to `EVAL` (which also re-caches it) after a `NOSCRIPT`, for
//! example when Redis restarted or `SCRIPT FLUSH` ran. Up/down transitions are logged once each.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ErrorKind, ServerErrorKind};
use tokio::sync::Notify;

use crate::config::{FailureMode, RedisConfig};
use crate::error::BackendError;
use crate::key::{Key, KeyHash};
use crate::limit::Limit;
use crate::metrics;
use crate::stage::{Applied, Verdict};

/// The GCRA script (see the file for the algorithm).
pub(crate) const SCRIPT: &str = include_str!("gcra.lua");

/// How often a healthy connection is checked with `PING`.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// First and longest pause between reconnection attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// A live connection and the SHA-1 of the script as Redis reported it.
struct Connected {
    conn: MultiplexedConnection,
    sha: String,
}

/// The Redis backend.
pub(crate) struct RedisBackend {
    client: Client,
    current: ArcSwapOption<Connected>,
    reconnect: Notify,
    state: AtomicU8,
    ever_up: AtomicBool,
    /// What requests get when Redis cannot answer.
    pub(crate) failure_mode: FailureMode,
    timeout: Duration,
    connect_timeout: Duration,
    prefix: String,
    /// How keys name callers: SHA-256, or HMAC-SHA256 under `hmac_key_path`.
    hash: KeyHash,
    /// `(T, tau)` in microseconds per limit, as script arguments.
    args: Box<[(String, String)]>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client holds the URL, which may hold a password: never printed.
        f.debug_struct("RedisBackend").field("failure_mode", &self.failure_mode).finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// A backend that is not connected yet (see [`RedisBackend::run`]); `hmac_key` is the
    /// contents of `hmac_key_path`.
    pub(crate) fn new(
        cfg: &RedisConfig,
        client: Client,
        hmac_key: Option<&[u8]>,
        limits: &[Limit],
    ) -> RedisBackend {
        let args = limits
            .iter()
            .map(|l| (l.rate.emission_micros().to_string(), l.rate.tolerance_micros().to_string()))
            .collect();
        RedisBackend {
            client,
            current: ArcSwapOption::empty(),
            reconnect: Notify::new(),
            state: AtomicU8::new(UNKNOWN),
            ever_up: AtomicBool::new(false),
            failure_mode: cfg.failure_mode,
            timeout: Duration::from_millis(cfg.timeout_ms),
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            prefix: cfg.key_prefix.clone(),
            hash: KeyHash::new(hmac_key),
            args,
        }
    }

    /// Whether Redis has answered a `PING` since start.
    pub(crate) fn ever_up(&self) -> bool {
        self.ever_up.load(Ordering::Acquire)
    }

    /// Whether the last thing tried against Redis worked.
    pub(crate) fn is_up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == UP
    }

    /// Counts the request against each applicable limit in one script call.
    pub(crate) async fn check<'a>(
        &self,
        applicable: impl Iterator<Item = (usize, &'a Limit, Key)>,
        applied: Option<&mut Vec<Applied>>,
    ) -> Result<Verdict, (BackendError, Vec<usize>)> {
        let mut order = Vec::new();
        let mut cmd = redis::cmd("EVALSHA");
        let mut keys = Vec::new();
        let mut argv = Vec::new();
        for (i, limit, key) in applicable {
            let Some((t, tau)) = self.args.get(i) else { continue };
            // One allocation per key: prefix, limit name and digest written in place.
            let mut name = String::with_capacity(self.prefix.len() + limit.name.len() + 33);
            name.push_str(&self.prefix);
            name.push_str(&limit.name);
            name.push(':');
            key.write_digest(&self.hash, &mut name);
            keys.push(name);
            argv.push(t.as_str());
            argv.push(tau.as_str());
            order.push((i, limit));
        }
        if order.is_empty() {
            return Ok(Verdict::Allow);
        }
        let indices = |order: &[(usize, &Limit)]| order.iter().map(|&(i, _)| i).collect();
        let Some(c) = self.current.load_full() else {
            return Err((self.failed(BackendError::Unavailable, None), indices(&order)));
        };
        cmd.arg(&c.sha).arg(keys.len()).arg(&keys).arg(&argv);
        let mut conn = c.conn.clone();
        let reply = match tokio::time::timeout(self.timeout, eval(&mut conn, cmd, &keys, &argv)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err((self.failed(e, Some(&c)), indices(&order))),
            Err(_) => return Err((self.failed(BackendError::Timeout, Some(&c)), indices(&order))),
        };
        // Only the connection keeper marks Redis up again (after a PING), so intermittent
        // failures log at most one down/up pair per health interval, not one per request.
        let Some(verdict) = decode(&reply, &order, applied) else {
            return Err((self.failed(BackendError::Script, None), indices(&order)));
        };
        count(&order, verdict);
        Ok(verdict)
    }

    fn failed(&self, e: BackendError, conn: Option<&Arc<Connected>>) -> BackendError {
        metrics::BACKEND_ERRORS.with_label_values(&[e.kind()]).inc();
        if let (true, Some(c)) = (e.needs_reconnect(), conn) {
            // Only drop the connection this request used: the task may have replaced it already.
            self.current.compare_and_swap(c, None);
            self.reconnect.notify_one();
        }
        self.mark(DOWN, Some(e));
        e
    }

    /// Records an up/down transition; logs and sets the gauge only when the state changes.
    fn mark(&self, to: u8, why: Option<BackendError>) {
        if self.state.load(Ordering::Relaxed) == to || self.state.swap(to, Ordering::AcqRel) == to {
            return;
        }
        metrics::REDIS_UP.set(i64::from(to == UP));
        match (to, why) {
            (UP, _) => log::info!("rate-limit redis backend is available"),
            (_, why) => {
                let mode = match self.failure_mode {
                    FailureMode::Deny => "refusing requests (failure_mode: deny)",
                    FailureMode::Allow => "forwarding requests unlimited (failure_mode: allow)",
                    FailureMode::Local => "limiting per instance (failure_mode: local)",
                };
                let why = why.map_or("unknown", BackendError::kind);
                log::warn!("rate-limit redis backend unavailable ({why}); {mode}");
            }
        }
    }

    async fn connect(&self) -> Result<Connected, BackendError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.timeout.max(Duration::from_millis(250))));
        let attempt = async {
            let mut conn = self.client.get_multiplexed_async_connection_with_config(&config).await?;
            let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
            let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(SCRIPT).query_async(&mut conn).await?;
            Ok::<_, redis::RedisError>((conn, pong, sha))
        };
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(Ok((conn, pong, sha))) if pong == "PONG" => Ok(Connected { conn, sha }),
            Ok(Ok(_)) => Err(BackendError::Script),
            Ok(Err(e)) => Err(BackendError::from_redis(&e)),
            Err(_) => Err(BackendError::Timeout),
        }
    }

    async fn ping(&self, c: &Connected) -> Result<(), BackendError> {
        let mut conn = c.conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        match tokio::time::timeout(self.timeout.max(Duration::from_millis(250)), ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(BackendError::from_redis(&e)),
            Err(_) => Err(BackendError::Timeout),
        }
    }

    /// The connection keeper: connects (with backoff), then pings every second or as soon as a
    /// request saw the connection break. Runs for the life of the stage.
    pub(crate) async fn run(self: Arc<Self>) {
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
                        metrics::BACKEND_ERRORS.with_label_values(&[e.kind()]).inc();
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
                    metrics::BACKEND_ERRORS.with_label_values(&[e.kind()]).inc();
                    self.current.compare_and_swap(&c, None);
                    self.mark(DOWN, Some(e));
                }
            }
        }
    }
}

/// `EVALSHA`, and `EVAL` with the script text if Redis does not have it cached.
async fn eval(
    conn: &mut MultiplexedConnection,
    evalsha: redis::Cmd,
    keys: &[String],
    argv: &[&str],
) -> Result<Vec<i64>, BackendError> {
    match evalsha.query_async::<Vec<i64>>(conn).await {
        Ok(v) => Ok(v),
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(SCRIPT).arg(keys.len()).arg(keys).arg(argv);
            cmd.query_async::<Vec<i64>>(conn).await.map_err(|e| BackendError::from_redis(&e))
        }
        Err(e) => Err(BackendError::from_redis(&e)),
    }
}

/// Counts the limits the script passed as allowed and the one that refused as denied.
fn count(order: &[(usize, &Limit)], verdict: Verdict) {
    let passed = match verdict {
        Verdict::Allow => order.len(),
        Verdict::Limited { limit, .. } => order.iter().position(|&(i, _)| i == limit).unwrap_or(0),
    };
    for (n, (_, limit)) in order.iter().enumerate() {
        match n.cmp(&passed) {
            std::cmp::Ordering::Less => limit.metrics.allowed.inc(),
            std::cmp::Ordering::Equal => limit.metrics.denied.inc(),
            std::cmp::Ordering::Greater => break,
        }
    }
}

/// Turns the script's reply into a verdict (and the headers' facts); `None` if malformed.
fn decode(reply: &[i64], order: &[(usize, &Limit)], applied: Option<&mut Vec<Applied>>) -> Option<Verdict> {
    match reply {
        [0, pos, wait_us] => {
            let (limit, _) = *order.get(usize::try_from(*pos).ok()?.checked_sub(1)?)?;
            let retry_after = Duration::from_micros(u64::try_from(*wait_us).ok()?);
            Some(Verdict::Limited { limit, retry_after })
        }
        [1, rest @ ..] if rest.len() == 2 * order.len() => {
            if let Some(out) = applied {
                for (pair, &(limit, _)) in rest.chunks_exact(2).zip(order) {
                    let remaining = u32::try_from(pair[0]).unwrap_or(0);
                    let reset = Duration::from_micros(u64::try_from(pair[1]).unwrap_or(0));
                    out.push(Applied { limit, remaining, reset });
                }
            }
            Some(Verdict::Allow)
        }
        _ => None,
    }
}
