//! The detectors' windows counted over all replicas (`shared.windows`).
//!
//! Each replica counts its own windows at once (the stage). What a request added to them (a
//! [`Tally`]) is also queued, never waiting, for the [`WindowsTask`], which gathers 250 ms of
//! them per principal and adds them to Redis in one pipeline: per principal and rule, buckets of
//! a sixteenth of the window (`<prefix>{<hash>}:<rule>:<bucket>`, expiring after the window),
//! counts for the counting rules and HyperLogLogs of keyed patient hashes for
//! `distinct_patients`. One script per principal and rule adds, sums the window's seventeen
//! buckets (the window, up to one bucket more: an event may count a little longer, never
//! shorter) and, when the total is over the threshold, takes the rule's alert marker for one
//! window (`SET NX`): exactly one replica raises the alert, once per window over all replicas. A
//! rule that fired on a replica's own windows takes the marker too, so the same excess is not
//! alerted twice.
//!
//! Redis sees the keyed hashes only: of the principal (as for blocks) and of each patient.
//! With Redis away, the additions are dropped (counted): each replica still counts its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};
use tokio::sync::mpsc;

use super::Digest;
use crate::alert::Origin;
use crate::metrics::{self, Stats};
use crate::raise::Alerter;
use crate::rules::{Rule, Rules};
use crate::state::{Finding, Tally, SHARED_RULES};

/// Additions waiting for the task; beyond, dropped and counted.
const QUEUE_CAPACITY: usize = 8192;
/// How long additions are gathered before they go to Redis.
const GATHER: Duration = Duration::from_millis(250);
/// Most principals per pipeline.
const MAX_PRINCIPALS: usize = 2048;
/// Buckets per window; the sum covers one more.
const BUCKETS: u64 = 16;
/// Most patient hashes per `PFADD` call.
const MAX_MEMBERS: usize = 1024;
/// Longest pause after a failure before Redis is tried again (additions meanwhile are dropped).
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Adds to the current bucket, sums the window and takes the alert marker when over.
/// KEYS: the current bucket, the window's buckets (current included), the alert marker.
/// ARGV: kind (`c` count, `d` distinct), bucket ttl, threshold, window (s), `1` when a replica
/// already alerted on its own windows, then the weight (`c`) or the patient hashes (`d`).
const ADD: &str = "local n = #KEYS \
local total = 0 \
if ARGV[1] == 'c' then \
  if tonumber(ARGV[6]) > 0 then redis.call('INCRBY', KEYS[1], ARGV[6]) redis.call('EXPIRE', KEYS[1], ARGV[2]) end \
  for _, v in ipairs(redis.call('MGET', unpack(KEYS, 2, n - 1))) do if v then total = total + tonumber(v) end end \
else \
  if #ARGV >= 6 then redis.call('PFADD', KEYS[1], unpack(ARGV, 6)) redis.call('EXPIRE', KEYS[1], ARGV[2]) end \
  total = redis.call('PFCOUNT', unpack(KEYS, 2, n - 1)) \
end \
if ARGV[5] == '1' then redis.call('SET', KEYS[n], '1', 'EX', ARGV[4]) return {total, 0} end \
if total > tonumber(ARGV[3]) and redis.call('SET', KEYS[n], '1', 'NX', 'EX', ARGV[4]) then return {total, 1} end \
return {total, 0}";

/// One request's addition.
struct Addition {
    origin: Origin,
    tally: Tally,
}

/// The stage's side: queues additions without waiting.
pub(crate) struct Counting {
    tx: mpsc::Sender<Addition>,
    stats: Arc<Stats>,
}

impl Counting {
    /// Queues what a request added to its principal's windows (full queue: dropped, counted).
    pub(crate) fn add(&self, origin: Origin, tally: Tally) {
        if self.tx.try_send(Addition { origin, tally }).is_err() {
            dropped(&self.stats, 1);
        }
    }
}

fn dropped(stats: &Stats, n: u64) {
    metrics::SHARED_WINDOWS.with_label_values(&["dropped"]).inc_by(n);
    let before = stats.shared_window_dropped.load(std::sync::atomic::Ordering::Relaxed);
    let after = Stats::bump(&stats.shared_window_dropped, n);
    // Logged on the first drop and then at powers of two, so an outage cannot flood the log.
    if (before + 1..=after).any(u64::is_power_of_two) {
        log::warn!("exfil shared windows: additions not counted over the replicas; {after} so far");
    }
}

/// One principal's additions gathered for one pipeline.
struct Gathered {
    origin: Origin,
    weights: [u64; 6],
    fired: [bool; 6],
    patients: Vec<[u8; 16]>,
    /// The newest patients first, for the alert's samples.
    samples: Vec<phigate_plugin::PatientId>,
}

/// The task that adds to Redis and raises what goes over, until the gateway spawns it.
pub(crate) struct WindowsTask {
    client: Client,
    prefix: String,
    timeout: Duration,
    rules: Rules,
    alerter: Arc<Alerter>,
    rx: mpsc::Receiver<Addition>,
}

impl WindowsTask {
    /// `settings`: the Redis client, the key prefix and the time limit of one exchange.
    pub(crate) fn new(
        (client, prefix, timeout): (Client, String, Duration),
        rules: Rules,
        alerter: Arc<Alerter>,
    ) -> (Counting, WindowsTask) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let counting = Counting { tx, stats: alerter.stats.clone() };
        (counting, WindowsTask { client, prefix, timeout, rules, alerter, rx })
    }

    /// Runs until the stage is dropped and what was queued was tried.
    pub(crate) async fn run(mut self) {
        let mut conn: Option<MultiplexedConnection> = None;
        let mut retry_at: Option<Instant> = None;
        let mut backoff = Duration::from_millis(100);
        while let Some(first) = self.rx.recv().await {
            let (batch, requests) = self.gather(first).await;
            if retry_at.is_some_and(|t| Instant::now() < t) {
                dropped(&self.alerter.stats, requests);
                continue;
            }
            if conn.is_none() {
                conn = self.connect().await;
            }
            let result = match conn.as_mut() {
                Some(c) => self.add(c, &batch).await,
                None => Err("connect"),
            };
            match result {
                Ok(fired) => {
                    (retry_at, backoff) = (None, Duration::from_millis(100));
                    metrics::SHARED_WINDOWS.with_label_values(&["counted"]).inc_by(requests);
                    Stats::bump(&self.alerter.stats.shared_window_batches, 1);
                    for (origin, finding) in fired {
                        self.alerter.raise_shared(origin, &finding);
                    }
                }
                Err(kind) => {
                    metrics::SHARED_ERRORS.with_label_values(&[kind]).inc();
                    Stats::bump(&self.alerter.stats.shared_errors, 1);
                    dropped(&self.alerter.stats, requests);
                    conn = None;
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// `first` and what arrives within [`GATHER`], by principal; and how many requests.
    async fn gather(&mut self, first: Addition) -> (HashMap<Digest, Gathered>, u64) {
        let mut batch: HashMap<Digest, Gathered> = HashMap::new();
        let mut requests = 0u64;
        let mut put = |a: Addition, batch: &mut HashMap<Digest, Gathered>| {
            requests += 1;
            let Some(shared) = &self.alerter.shared else { return };
            let p = &a.origin.principal;
            let g = batch.entry(shared.digest(&p.issuer, p.subject.as_str())).or_insert_with(|| Gathered {
                origin: a.origin.clone(),
                weights: [0; 6],
                fired: [false; 6],
                patients: Vec::new(),
                samples: Vec::new(),
            });
            for i in 0..6 {
                g.weights[i] += a.tally.weights[i];
                g.fired[i] |= a.tally.fired[i];
            }
            for patient in &a.tally.patients {
                let tag = shared.state.patient_tag(patient.as_str());
                if !g.patients.contains(&tag) {
                    g.patients.push(tag);
                }
            }
            for patient in &a.tally.patients {
                g.samples.retain(|s| s != patient);
                g.samples.insert(0, patient.clone());
            }
            g.samples.truncate(self.rules.samples);
            g.origin = a.origin;
        };
        put(first, &mut batch);
        let deadline = tokio::time::sleep(GATHER);
        tokio::pin!(deadline);
        while batch.len() < MAX_PRINCIPALS {
            tokio::select! {
                () = &mut deadline => break,
                next = self.rx.recv() => match next {
                    Some(a) => put(a, &mut batch),
                    None => break,
                },
            }
        }
        (batch, requests)
    }

    async fn connect(&self) -> Option<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let conn = self.client.get_multiplexed_async_connection_with_config(&config);
        match tokio::time::timeout(self.timeout, conn).await {
            Ok(Ok(c)) => Some(c),
            _ => None,
        }
    }

    /// Adds the batch in one pipeline; returns the findings that go over and whose marker this
    /// replica took, with the request that tipped each.
    async fn add<'a>(
        &self,
        conn: &mut MultiplexedConnection,
        batch: &'a HashMap<Digest, Gathered>,
    ) -> Result<Vec<(&'a Origin, Finding)>, &'static str> {
        let wall = self.alerter.clock.wall().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut pipe = redis::pipe();
        let mut asked: Vec<(&Gathered, usize, &Rule)> = Vec::new();
        for (digest, g) in batch {
            let hash = hex::encode(digest);
            for (i, rule) in SHARED_RULES.iter().enumerate() {
                let Some(r) = self.rules.rule(*rule) else { continue };
                if g.weights[i] == 0 && !g.fired[i] {
                    continue;
                }
                let window = r.window.as_secs().max(1);
                let bucket = window.div_ceil(BUCKETS).max(1);
                let now = wall / bucket;
                let key = |b: u64| format!("{}{{{hash}}}:{}:{b}", self.prefix, rule.as_str());
                let fired = if g.fired[i] { "1" } else { "0" };
                let chunks: Vec<&[[u8; 16]]> =
                    if i == 0 { g.patients.chunks(MAX_MEMBERS).collect() } else { vec![&[]] };
                for chunk in chunks {
                    let eval = pipe.cmd("EVAL").arg(ADD).arg(BUCKETS + 3).arg(key(now));
                    for b in (now.saturating_sub(BUCKETS)..=now).rev() {
                        eval.arg(key(b));
                    }
                    eval.arg(format!("{}{{{hash}}}:{}:alerted", self.prefix, rule.as_str()));
                    eval.arg(if i == 0 { "d" } else { "c" }).arg(bucket * (BUCKETS + 2));
                    eval.arg(r.threshold).arg(window).arg(fired);
                    if i == 0 {
                        for tag in chunk {
                            eval.arg(&tag[..]);
                        }
                    } else {
                        eval.arg(g.weights[i]);
                    }
                    asked.push((g, i, r));
                }
            }
        }
        if asked.is_empty() {
            return Ok(Vec::new());
        }
        let answers: Vec<(u64, u8)> = match tokio::time::timeout(self.timeout, pipe.query_async(conn)).await {
            Err(_) => return Err("timeout"),
            // The failure kinds of the blocks' link (timeout, tls, connect, io, command).
            Ok(Err(e)) => return Err(super::task::Failure::from(e).0),
            Ok(Ok(a)) => a,
        };
        let mut fired = Vec::new();
        for ((g, i, r), (total, took)) in asked.into_iter().zip(answers) {
            if took == 1 {
                let samples = g.samples.clone();
                let f = Finding {
                    rule: SHARED_RULES[i],
                    observed: total,
                    threshold: r.threshold,
                    window: r.window,
                    action: r.action,
                    block: r.block,
                    samples,
                };
                fired.push((&g.origin, f));
            }
        }
        Ok(fired)
    }
}
