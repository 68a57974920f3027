//! The Redis backend: the same GCRA as in memory, computed atomically by a Lua script in Redis
//! so that every replica shares one budget per key.
//!
//! Requests never wait for a connection: they use the one `phigate_redis::Keeper` holds or fail
//! at once. The keeper's task connects, loads the script, checks the connection with `PING`,
//! and reconnects when a request reports it broken. The script is called with `EVALSHA`, falling
//! back to `EVAL` (which also re-caches it) after a `NOSCRIPT`, for example when Redis restarted
//! or `SCRIPT FLUSH` ran. Up/down transitions are logged once each.

use std::sync::Arc;
use std::time::Duration;

use phigate_redis::{Connected, Failure, Keeper, Timeouts, Transitions};
use redis::aio::MultiplexedConnection;
use redis::{Client, ErrorKind, ServerErrorKind};

use crate::config::{FailureMode, RedisConfig};
use crate::error::kind;
use crate::key::{Key, KeyHash};
use crate::limit::Limit;
use crate::metrics;
use crate::stage::{Applied, Verdict};

/// The GCRA script (see the file for the algorithm).
pub(crate) const SCRIPT: &str = include_str!("gcra.lua");

/// The Redis backend.
pub(crate) struct RedisBackend {
    keeper: Arc<Keeper>,
    /// What requests get when Redis cannot answer.
    pub(crate) failure_mode: FailureMode,
    timeout: Duration,
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

/// The backend's log lines and metrics for the keeper's up/down transitions.
struct Logged(FailureMode);

impl Transitions for Logged {
    fn attempt_failed(&self, why: Failure) {
        metrics::BACKEND_ERRORS.with_label_values(&[kind(why)]).inc();
    }

    fn changed(&self, up: bool, why: Option<Failure>) {
        metrics::REDIS_UP.set(i64::from(up));
        if up {
            log::info!("rate-limit redis backend is available");
            return;
        }
        let mode = match self.0 {
            FailureMode::Deny => "refusing requests (failure_mode: deny)",
            FailureMode::Allow => "forwarding requests unlimited (failure_mode: allow)",
            FailureMode::Local => "limiting per instance (failure_mode: local)",
        };
        let why = why.map_or("unknown", kind);
        log::warn!("rate-limit redis backend unavailable ({why}); {mode}");
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
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let timeouts = Timeouts {
            connect: Duration::from_millis(cfg.connect_timeout_ms),
            response: timeout.max(Duration::from_millis(250)),
        };
        RedisBackend {
            keeper: Arc::new(Keeper::new(client, timeouts, Some(SCRIPT), Box::new(Logged(cfg.failure_mode)))),
            failure_mode: cfg.failure_mode,
            timeout,
            prefix: cfg.key_prefix.clone(),
            hash: KeyHash::new(hmac_key),
            args,
        }
    }

    /// Whether Redis has answered a `PING` since start.
    pub(crate) fn ever_up(&self) -> bool {
        self.keeper.ever_up()
    }

    /// Whether the last thing tried against Redis worked.
    pub(crate) fn is_up(&self) -> bool {
        self.keeper.is_up()
    }

    /// The connection keeper's task; runs for the life of the stage.
    pub(crate) async fn run(self: Arc<Self>) {
        Arc::clone(&self.keeper).run().await;
    }

    /// Counts the request against each applicable limit in one script call.
    pub(crate) async fn check<'a>(
        &self,
        applicable: impl Iterator<Item = (usize, &'a Limit, Key)>,
        applied: Option<&mut Vec<Applied>>,
    ) -> Result<Verdict, (Failure, Vec<usize>)> {
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
        let Some(c) = self.keeper.current() else {
            return Err((self.failed(Failure::Unavailable, None), indices(&order)));
        };
        cmd.arg(c.script_sha.as_deref().unwrap_or_default()).arg(keys.len()).arg(&keys).arg(&argv);
        let mut conn = c.conn.clone();
        let reply = match tokio::time::timeout(self.timeout, eval(&mut conn, cmd, &keys, &argv)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err((self.failed(e, Some(&c)), indices(&order))),
            Err(_) => return Err((self.failed(Failure::Timeout, Some(&c)), indices(&order))),
        };
        // Only the connection keeper marks Redis up again (after a PING), so intermittent
        // failures log at most one down/up pair per health interval, not one per request.
        let Some(verdict) = decode(&reply, &order, applied) else {
            return Err((self.failed(Failure::Reply, None), indices(&order)));
        };
        count(&order, verdict);
        Ok(verdict)
    }

    /// Counts the failure and tells the keeper (which drops a broken connection and logs the
    /// transition once).
    fn failed(&self, e: Failure, conn: Option<&Arc<Connected>>) -> Failure {
        metrics::BACKEND_ERRORS.with_label_values(&[kind(e)]).inc();
        self.keeper.failed(e, conn);
        e
    }
}

/// `EVALSHA`, and `EVAL` with the script text if Redis does not have it cached.
async fn eval(
    conn: &mut MultiplexedConnection,
    evalsha: redis::Cmd,
    keys: &[String],
    argv: &[&str],
) -> Result<Vec<i64>, Failure> {
    match evalsha.query_async::<Vec<i64>>(conn).await {
        Ok(v) => Ok(v),
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(SCRIPT).arg(keys.len()).arg(keys).arg(argv);
            cmd.query_async::<Vec<i64>>(conn).await.map_err(|e| Failure::from_redis(&e))
        }
        Err(e) => Err(Failure::from_redis(&e)),
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
