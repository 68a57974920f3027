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

use super::message::{self, Message, Record, LIFTED};
use super::{Command, Digest, Outgoing, SharedState, DOWN, UP};
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

/// Records the block unless a longer one is recorded, or a lift covering it, and announces it,
/// atomically: a replica that announces a shorter block never shortens the recorded one, and a
/// replica that missed a lift (it was away from Redis) does not record again the block lifted.
/// KEYS: the block's record, the lift's record.
const RECORD: &str = "local lifted = tonumber(redis.call('GET', KEYS[2])) \
if lifted and lifted >= tonumber(ARGV[1]) then return 0 end \
local cur = tonumber(redis.call('GET', KEYS[1])) \
if cur and cur >= tonumber(ARGV[1]) then return 0 end \
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) \
redis.call('PUBLISH', ARGV[3], ARGV[4]) \
return 1";

/// Deletes the block's record if the lift covers it (a later block recorded meanwhile stays),
/// records the lift until what it covers ends (for replicas away now: they read it on
/// reconnect), and announces it. ARGV: covers (Unix s), seconds left, channel, message.
const LIFT: &str = "local cur = tonumber(redis.call('GET', KEYS[1])) \
if cur and cur <= tonumber(ARGV[1]) then redis.call('DEL', KEYS[1]) end \
local was = tonumber(redis.call('GET', KEYS[2])) \
if not was or was < tonumber(ARGV[1]) then redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2]) end \
redis.call('PUBLISH', ARGV[3], ARGV[4]) \
return 1";

/// Why the connection was given up; a metric label and a log word (never the URL or the
/// server's message, which may quote it).
#[derive(Debug, Clone, Copy)]
pub(super) struct Failure(pub(super) &'static str);

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
    rx: mpsc::Receiver<Command>,
    /// This replica's blocks still in force (hash → end, Unix seconds), recorded again after
    /// each reconnect: a block whose sharing failed, or that a restarted Redis lost, is shared
    /// once Redis is back. At most `cap`.
    own: HashMap<Digest, u64>,
    /// This replica's lifts (hash → latest block end covered), sent again after each reconnect
    /// until what they cover has ended, for the same reasons. At most `cap`.
    lifts: HashMap<Digest, u64>,
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
        rx: mpsc::Receiver<Command>,
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
            lifts: HashMap::new(),
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
        for lift in self.load(&mut link.conn).await? {
            self.lifted_elsewhere(&lift);
        }
        let wall = self.wall_secs();
        self.own.retain(|_, until| *until > wall);
        self.lifts.retain(|_, covers| *covers > wall);
        let listed = |m: &HashMap<Digest, u64>| -> Vec<Outgoing> {
            m.iter().map(|(d, u)| Outgoing { digest: *d, until_unix: *u }).collect()
        };
        for out in listed(&self.lifts) {
            self.share(&mut link.conn, Command::Lift(out)).await?;
        }
        for out in listed(&self.own) {
            self.share(&mut link.conn, Command::Block(out)).await?;
        }
        self.state.mark(UP, "");
        Ok(link)
    }

    /// Applies the blocks recorded under the prefix (bounded); returns the lifts recorded, for
    /// the caller to apply.
    async fn load(&self, conn: &mut MultiplexedConnection) -> Result<Vec<Outgoing>, Failure> {
        let mut lifts = Vec::new();
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
                    let record = message::parse_record(&self.prefix, key);
                    match (record, value.and_then(|v| v.parse::<u64>().ok())) {
                        (Some(Record::Block(digest)), Some(until)) => self.state.apply(&digest, until),
                        (Some(Record::Lifted(digest)), Some(until)) => {
                            lifts.push(Outgoing { digest, until_unix: until });
                        }
                        _ => {}
                    }
                }
            }
            seen += keys.len();
            if next == 0 || seen >= self.cap {
                break;
            }
            cursor = next;
        }
        Ok(lifts)
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
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => {
                        self.remember(cmd);
                        self.share(&mut link.conn, cmd).await?;
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

    /// Keeps a block or a lift for sending again after a reconnect (the later end wins). A
    /// lift drops the blocks of this replica it covers, so a reconnect does not record them
    /// again.
    fn remember(&mut self, cmd: Command) {
        let wall = self.wall_secs();
        let (map, out) = match cmd {
            Command::Block(out) => (&mut self.own, out),
            Command::Lift(out) => {
                if self.own.get(&out.digest).is_some_and(|until| *until <= out.until_unix) {
                    self.own.remove(&out.digest);
                }
                (&mut self.lifts, out)
            }
        };
        if map.len() >= self.cap && !map.contains_key(&out.digest) {
            map.retain(|_, until| *until > wall);
        }
        if map.len() < self.cap || map.contains_key(&out.digest) {
            let until = map.entry(out.digest).or_insert(out.until_unix);
            *until = (*until).max(out.until_unix);
        }
    }

    /// Applies a lift decided by another replica, here and to this replica's own blocks.
    fn lifted_elsewhere(&mut self, lift: &Outgoing) {
        if self.own.get(&lift.digest).is_some_and(|until| *until <= lift.until_unix) {
            self.own.remove(&lift.digest);
        }
        self.state.apply_lift(&lift.digest, lift.until_unix);
    }

    /// Records and announces one of this replica's blocks or lifts (skipped once it has ended).
    async fn share(&self, conn: &mut MultiplexedConnection, cmd: Command) -> Result<(), Failure> {
        let (Command::Block(out) | Command::Lift(out)) = cmd;
        let Some(ttl) = out.until_unix.checked_sub(self.wall_secs()).filter(|t| *t > 0) else {
            return Ok(());
        };
        let hash = hex::encode(out.digest);
        let (origin, digest) = (self.state.origin.as_str(), out.digest);
        let (script, msg) = match cmd {
            Command::Block(_) => (RECORD, Message::Block { origin, digest, until: out.until_unix }),
            Command::Lift(_) => (LIFT, Message::Lift { origin, digest, covers: out.until_unix }),
        };
        let mut eval = redis::cmd("EVAL");
        eval.arg(script).arg(2).arg(format!("{}{hash}", self.prefix));
        eval.arg(format!("{}{LIFTED}{hash}", self.prefix)).arg(out.until_unix).arg(ttl);
        eval.arg(&self.channel).arg(msg.encode());
        // 0: a block as long, or a lift covering it, was recorded already.
        if self.bounded(eval.query_async::<i64>(conn)).await? == 1 {
            let sent = match cmd {
                Command::Block(_) => &self.state.stats.shared_published,
                Command::Lift(_) => &self.state.stats.shared_lifts_published,
            };
            Stats::bump(sent, 1);
        }
        Ok(())
    }

    fn receive(&mut self, payload: &[u8]) {
        match message::parse(payload) {
            Some(m) if m.origin() == self.state.origin => {}
            Some(Message::Block { digest, until, .. }) => self.state.apply(&digest, until),
            Some(Message::Lift { digest, covers, .. }) => {
                self.lifted_elsewhere(&Outgoing { digest, until_unix: covers });
            }
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
