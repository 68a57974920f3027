//! Blocks shared between replicas through Redis.
//!
//! A replica that blocks a principal queues the block (bounded, never waiting) for the
//! background [`SharedTask`], which records it under `<prefix><hash>` (expiring with the block,
//! for replicas that start later) and announces it on the channel. Every replica's task listens
//! on the channel and loads the recorded blocks on each (re)connect; what it receives goes into
//! a map of its own, keyed by the hash, that `on_request` reads without touching Redis.
//!
//! The hash is an HMAC-SHA256 of issuer and subject under a key the replicas share: subjects are
//! often guessable (e-mail addresses, staff numbers), so an unkeyed hash would tell whoever
//! reads Redis (or its backups) who was blocked, and would let a writer to Redis target a
//! chosen principal. Without the key, Redis holds opaque names.

mod task;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use phigate_plugin::Principal;
use sha2::Sha256;
use tokio::sync::mpsc;

pub(crate) use task::SharedTask;

use crate::blocks::Blocks;
use crate::clock::Clock;
use crate::config::SharedSettings;
use crate::metrics::{self, Stats};

/// The keyed hash naming a principal in Redis.
pub(crate) type Digest = [u8; 32];

/// Blocks waiting to be shared; beyond, they are dropped and counted (blocks are rare: a full
/// queue means Redis has been away for long).
const QUEUE_CAPACITY: usize = 1024;
/// Longest block accepted from another replica (the longest `block_secs`).
const MAX_BLOCK: Duration = Duration::from_secs(7 * 86_400);

const CONNECTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// A block to share: who (hashed) and until when (Unix seconds).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outgoing {
    pub(crate) digest: Digest,
    pub(crate) until_unix: u64,
}

/// What the stage and the task share.
pub(crate) struct SharedState {
    mac: Hmac<Sha256>,
    remote: Blocks<Digest>,
    clock: Arc<dyn Clock>,
    stats: Arc<Stats>,
    link: AtomicU8,
    /// Names this replica in its announcements, so it skips its own.
    origin: String,
}

/// The stage's side: hashes principals, checks received blocks, queues its own.
pub(crate) struct Shared {
    state: Arc<SharedState>,
    tx: mpsc::Sender<Outgoing>,
}

impl Shared {
    /// The handle and its task (not connected until spawned).
    pub(crate) fn new(
        s: SharedSettings,
        cap: usize,
        clock: Arc<dyn Clock>,
        stats: Arc<Stats>,
    ) -> (Shared, SharedTask) {
        let mac = Hmac::<Sha256>::new_from_slice(&s.key).unwrap_or_else(|_| unreachable!("any key length"));
        let state = Arc::new(SharedState {
            mac,
            remote: Blocks::new(cap),
            clock,
            stats,
            link: AtomicU8::new(CONNECTING),
            origin: uuid::Uuid::new_v4().simple().to_string(),
        });
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let task = SharedTask::new(s, state.clone(), rx, cap);
        (Shared { state, tx }, task)
    }

    /// Whether another replica blocked `p` until after `now`. With no shared block in force,
    /// one atomic load: the hash is computed only when there is something to look up.
    pub(crate) fn is_blocked(&self, p: &Principal, now: Instant) -> bool {
        !self.state.remote.is_empty() && self.state.remote.is_blocked(&self.state.digest(p), now)
    }

    /// Queues the block of `p` until `until` (monotonic) for the other replicas; never waits.
    pub(crate) fn publish(&self, p: &Principal, until: Instant) {
        let st = &self.state;
        let left = until.saturating_duration_since(st.clock.now());
        let wall = st.clock.wall().duration_since(UNIX_EPOCH).unwrap_or_default() + left;
        // Rounded up: a replica must never end the block before this one does.
        let until_unix = wall.as_secs() + u64::from(wall.subsec_nanos() > 0);
        let out = Outgoing { digest: st.digest(p), until_unix };
        if self.tx.try_send(out).is_err() {
            metrics::SHARED_ERRORS.with_label_values(&["queue_full"]).inc();
            let n = Stats::bump(&st.stats.shared_dropped, 1);
            if n.is_power_of_two() {
                log::warn!("exfil shared block dropped (queue full); {n} dropped so far");
            }
        }
    }

    /// A short readiness detail while blocks are not being shared, `None` while they are.
    pub(crate) fn trouble(&self) -> Option<&'static str> {
        match self.state.link.load(Ordering::Acquire) {
            UP => None,
            CONNECTING => Some("exfil shared blocks: connecting to redis"),
            _ => Some("exfil shared blocks: redis unavailable, blocking locally only"),
        }
    }
}

impl SharedState {
    fn digest(&self, p: &Principal) -> Digest {
        let mut mac = self.mac.clone();
        // Length-prefixed, so that no two (issuer, subject) pairs feed the same bytes.
        for field in [p.issuer.as_bytes(), p.subject.as_str().as_bytes()] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        mac.finalize().into_bytes().into()
    }

    /// Applies a block received from Redis, ending at `until_unix` (wall clock); a block in
    /// force that ends later is kept.
    fn apply(&self, digest: &Digest, until_unix: u64) {
        let wall = self.clock.wall().duration_since(UNIX_EPOCH).unwrap_or_default();
        let Some(left) = Duration::from_secs(until_unix).checked_sub(wall).filter(|d| !d.is_zero()) else {
            return;
        };
        let now = self.clock.now();
        if self.remote.block(digest, now + left.min(MAX_BLOCK), now) {
            Stats::bump(&self.stats.shared_received, 1);
        } else {
            metrics::BLOCKS_NOT_RECORDED.inc();
            log::error!("exfil shared block not recorded: max_principals blocks already in force");
        }
    }

    /// Records an up/down transition: logged and set in the gauge once per change.
    fn mark(&self, to: u8, why: &'static str) {
        if self.link.swap(to, Ordering::AcqRel) == to {
            return;
        }
        metrics::SHARED_UP.set(i64::from(to == UP));
        if to == UP {
            log::info!("exfil shared blocks: redis available");
        } else {
            log::warn!("exfil shared blocks: redis unavailable ({why}); blocking locally only");
        }
    }
}

/// `<origin> <hash hex> <until unix secs>`: what goes on the channel.
fn announcement(origin: &str, out: &Outgoing) -> String {
    format!("{origin} {} {}", hex::encode(out.digest), out.until_unix)
}

/// Parses an announcement; `None` when malformed.
fn parse_announcement(msg: &[u8]) -> Option<(&str, Digest, u64)> {
    let mut parts = std::str::from_utf8(msg).ok()?.split(' ');
    let origin = parts.next()?;
    let digest = parse_digest(parts.next()?)?;
    let until = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((origin, digest, until))
}

fn parse_digest(hex_text: &str) -> Option<Digest> {
    let mut d = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut d).ok()?;
    Some(d)
}

#[cfg(test)]
mod tests {
    use phigate_plugin::Subject;

    use super::*;
    use crate::clock::ManualClock;

    fn shared(key: u8) -> Shared {
        let s = SharedSettings {
            client: redis::Client::open("redis://127.0.0.1:1/0").unwrap(),
            key: vec![key; 32],
            channel: "c".into(),
            key_prefix: "p:".into(),
            timeout: Duration::from_secs(1),
        };
        Shared::new(s, 8, Arc::new(ManualClock::new()), Arc::default()).0
    }

    #[test]
    fn the_name_depends_on_the_key_and_on_where_the_issuer_ends() {
        let (one, two) = (shared(1), shared(2));
        let p = |iss: &str, sub: &str| Principal::new(iss, Subject::from(sub));
        let d = one.state.digest(&p("https://idp/", "eve"));
        assert_eq!(d, one.state.digest(&p("https://idp/", "eve")), "stable");
        assert_ne!(d, two.state.digest(&p("https://idp/", "eve")), "keyed");
        assert_ne!(d, one.state.digest(&p("https://idp/e", "ve")), "fields are delimited");
    }

    #[test]
    fn a_received_block_applies_until_its_wall_clock_end_and_no_later_than_a_week() {
        let s = shared(1);
        let clock = ManualClock::new();
        let st = SharedState { clock: Arc::new(clock.clone()), ..Arc::into_inner(s.state).unwrap() };
        let wall = clock.wall().duration_since(UNIX_EPOCH).unwrap().as_secs();
        st.apply(&[1; 32], wall.saturating_sub(5));
        assert!(st.remote.is_empty(), "already ended: ignored");
        st.apply(&[1; 32], wall + 100);
        st.apply(&[2; 32], u64::MAX);
        clock.advance(Duration::from_secs(99));
        assert!(st.remote.is_blocked(&[1; 32], clock.now()));
        clock.advance(Duration::from_secs(1));
        assert!(!st.remote.is_blocked(&[1; 32], clock.now()));
        clock.advance(MAX_BLOCK - Duration::from_secs(100));
        assert!(!st.remote.is_blocked(&[2; 32], clock.now()), "capped at a week");
    }

    #[test]
    fn an_announcement_reads_back_and_garbage_does_not() {
        let out = Outgoing { digest: [7; 32], until_unix: 1_800_000_000 };
        let text = announcement("me", &out);
        assert_eq!(parse_announcement(text.as_bytes()), Some(("me", [7; 32], 1_800_000_000)));
        for bad in ["", "me", "me 0707 1", "me zz 1", &format!("{text} extra"), &format!("{text}x")] {
            assert_eq!(parse_announcement(bad.as_bytes()), None, "{bad}");
        }
    }
}
