//! The connection keeper: subscribes, loads the recorded blocks, then applies announcements,
//! shares this replica's blocks and checks the connection, reconnecting with backoff.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Client, RedisError};
use tokio::sync::mpsc;

use super::{announcement, parse_announcement, parse_digest, Digest, Outgoing, SharedState, DOWN, UP};
use crate::config::SharedSettings;
use crate::metrics::{self, Stats};

/// How often the connections are checked with `PING` (and expired blocks forgotten).
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// First and longest pause between reconnection attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// Keys asked for per `SCAN` step, and most steps per load (the load is bounded also by the
/// size of the block map).
const SCAN_COUNT: usize = 512;
const MAX_SCAN_STEPS: usize = 10_000;

/// Records the block unless a longer one is recorded, and announces it, atomically: a replica
/// that announces a shorter block never shortens the recorded one.
const RECORD: &str = "local cur = tonumber(redis.call('GET', KEYS[1])) \
if cur and cur >= tonumber(ARGV[1]) then return 0 end \
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) \
redis.call('PUBLISH', ARGV[3], ARGV[4]) \
return 1";

/// Why the connection was given up; a metric label and a log word (never the URL or the
/// server's message, which may quote it).
#[derive(Debug, Clone, Copy)]
struct Failure(&'static str);

impl From<RedisError> for Failure {
    fn from(e: RedisError) -> Self {
        if e.is_timeout() {
            Failure("timeout")
        } else if phigate_redis::is_tls_error(&e) {
            // Before the other kinds: a certificate problem is not Redis being away, and is
            // fixed elsewhere (the CA, the server's certificate, the client certificate).
            Failure("tls")
        } else if e.is_connection_refusal() {
            Failure("connect")
        } else if e.is_io_error() || e.is_connection_dropped() {
            Failure("io")
        } else {
            Failure("command")
        }
    }
}

/// The task side of the shared blocks, until the gateway spawns it.
pub(crate) struct SharedTask {
    client: Client,
    channel: String,
    prefix: String,
    timeout: Duration,
    cap: usize,
    state: Arc<SharedState>,
    rx: mpsc::Receiver<Outgoing>,
    /// This replica's blocks still in force (hash → end, Unix seconds), recorded again after
    /// each reconnect: a block whose sharing failed, or that a restarted Redis lost, is shared
    /// once Redis is back. At most `cap`.
    own: HashMap<Digest, u64>,
}

/// One live link: a connection for commands, one subscribed to the channel.
struct Link {
    conn: MultiplexedConnection,
    sink: PubSubSink,
    stream: PubSubStream,
}

impl SharedTask {
    pub(super) fn new(
        s: SharedSettings,
        state: Arc<SharedState>,
        rx: mpsc::Receiver<Outgoing>,
        cap: usize,
    ) -> Self {
        SharedTask {
            client: s.client,
            channel: s.channel,
            prefix: s.key_prefix,
            timeout: s.timeout,
            cap,
            state,
            rx,
            own: HashMap::new(),
        }
    }

    /// Runs until the stage is dropped.
    pub(crate) async fn run(mut self) {
        let mut backoff = BACKOFF.0;
        loop {
            let served = match self.connect().await {
                Ok(link) => {
                    backoff = BACKOFF.0;
                    self.serve(link).await
                }
                Err(e) => Err(e),
            };
            let Err(e) = served else { return };
            metrics::SHARED_ERRORS.with_label_values(&[e.0]).inc();
            Stats::bump(&self.state.stats.shared_errors, 1);
            self.state.mark(DOWN, e.0);
            if self.rx.is_closed() && self.rx.is_empty() {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    }

    /// Connects both connections, subscribes, then loads what is recorded (in that order, so
    /// that a block recorded meanwhile is at least announced to us).
    async fn connect(&mut self) -> Result<Link, Failure> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let (client, channel) = (&self.client, &self.channel);
        let mut link = self
            .bounded(async {
                let conn = client.get_multiplexed_async_connection_with_config(&config).await?;
                let (mut sink, stream) = client.get_async_pubsub().await?.split();
                sink.subscribe(channel).await?;
                Ok::<_, RedisError>(Link { conn, sink, stream })
            })
            .await?;
        self.load(&mut link.conn).await?;
        let wall = self.wall_secs();
        self.own.retain(|_, until| *until > wall);
        let own: Vec<Outgoing> =
            self.own.iter().map(|(d, u)| Outgoing { digest: *d, until_unix: *u }).collect();
        for out in own {
            self.share(&mut link.conn, out).await?;
        }
        self.state.mark(UP, "");
        Ok(link)
    }

    /// Applies the blocks recorded under the prefix (bounded).
    async fn load(&self, conn: &mut MultiplexedConnection) -> Result<(), Failure> {
        let pattern = format!("{}*", self.prefix);
        let (mut cursor, mut seen) = (0u64, 0usize);
        for _ in 0..MAX_SCAN_STEPS {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(SCAN_COUNT);
            let (next, keys): (u64, Vec<String>) = self.bounded(scan.query_async(conn)).await?;
            if !keys.is_empty() {
                let values: Vec<Option<String>> =
                    self.bounded(redis::cmd("MGET").arg(&keys).query_async(conn)).await?;
                for (key, value) in keys.iter().zip(values) {
                    let digest = key.strip_prefix(self.prefix.as_str()).and_then(parse_digest);
                    let until = value.and_then(|v| v.parse::<u64>().ok());
                    if let (Some(digest), Some(until)) = (digest, until) {
                        self.state.apply(&digest, until);
                    }
                }
            }
            seen += keys.len();
            if next == 0 || seen >= self.cap {
                break;
            }
            cursor = next;
        }
        Ok(())
    }

    /// Serves one link until it fails, or until the stage is gone (`Ok`).
    async fn serve(&mut self, mut link: Link) -> Result<(), Failure> {
        let mut health = tokio::time::interval(HEALTH_INTERVAL);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = link.stream.next() => match msg {
                    Some(m) => self.receive(m.get_payload_bytes()),
                    None => return Err(Failure("io")),
                },
                out = self.rx.recv() => match out {
                    Some(out) => {
                        self.remember(out);
                        self.share(&mut link.conn, out).await?;
                    }
                    None => return Ok(()),
                },
                _ = health.tick() => {
                    if !self.state.remote.is_empty() {
                        self.state.remote.sweep(self.state.clock.now());
                    }
                    self.bounded(redis::cmd("PING").query_async::<()>(&mut link.conn)).await?;
                    self.bounded(link.sink.ping::<()>()).await?;
                }
            }
        }
    }

    fn wall_secs(&self) -> u64 {
        self.state.clock.wall().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
    }

    /// Keeps `out` for re-recording after a reconnect (the longer block wins).
    fn remember(&mut self, out: Outgoing) {
        if self.own.len() >= self.cap && !self.own.contains_key(&out.digest) {
            let wall = self.wall_secs();
            self.own.retain(|_, until| *until > wall);
        }
        if self.own.len() < self.cap || self.own.contains_key(&out.digest) {
            let until = self.own.entry(out.digest).or_insert(out.until_unix);
            *until = (*until).max(out.until_unix);
        }
    }

    /// Records and announces one of this replica's blocks (skipped once it has ended).
    async fn share(&self, conn: &mut MultiplexedConnection, out: Outgoing) -> Result<(), Failure> {
        let Some(ttl) = out.until_unix.checked_sub(self.wall_secs()).filter(|t| *t > 0) else {
            return Ok(());
        };
        let key = format!("{}{}", self.prefix, hex::encode(out.digest));
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RECORD).arg(1).arg(key).arg(out.until_unix).arg(ttl);
        cmd.arg(&self.channel).arg(announcement(&self.state.origin, &out));
        // 0: a block as long was recorded already (by another replica, or before a reconnect).
        if self.bounded(cmd.query_async::<i64>(conn)).await? == 1 {
            Stats::bump(&self.state.stats.shared_published, 1);
        }
        Ok(())
    }

    fn receive(&self, payload: &[u8]) {
        match parse_announcement(payload) {
            Some((origin, _, _)) if origin == self.state.origin => {}
            Some((_, digest, until)) => self.state.apply(&digest, until),
            None => {
                metrics::SHARED_ERRORS.with_label_values(&["malformed"]).inc();
                let n = Stats::bump(&self.state.stats.shared_errors, 1);
                if n.is_power_of_two() {
                    log::warn!("exfil shared blocks: malformed announcement ignored");
                }
            }
        }
    }

    /// Runs one Redis exchange within the timeout.
    async fn bounded<T>(&self, f: impl Future<Output = Result<T, RedisError>>) -> Result<T, Failure> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r.map_err(Failure::from),
            Err(_) => Err(Failure("timeout")),
        }
    }
}
