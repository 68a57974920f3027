//! Blocks, and operators' lifts of them, shared between replicas through Redis.
//!
//! A replica that blocks a principal queues the block (bounded, never waiting) for the
//! background [`SharedTask`], which records it under `<prefix><hash>` (expiring with the block,
//! for replicas that start later) and announces it on the channel. Every replica's task listens
//! on the channel and loads the recorded blocks on each (re)connect; what it receives goes into
//! a map of its own, keyed by the hash, that `on_request` reads without touching Redis.
//!
//! A lift (an operator ending a block early) goes the same way: the task deletes the block's
//! record, records the lift under `<prefix>lifted:<hash>` until the latest block end it covers,
//! and announces it. A lift covers every block of that principal ending no later than its
//! `covers` time (the lifting replica's `now` plus its longest `block_secs`, or the end of the
//! received block it lifted if later): a block decided before the lift always ends by then, so
//! a copy of it announced, recorded again or loaded after the lift is ignored, while a block
//! decided after the lift by the same rules ends later and applies.
//!
//! The hash is an HMAC-SHA256 of issuer and subject under a key the replicas share: subjects are
//! often guessable (e-mail addresses, staff numbers), so an unkeyed hash would tell whoever
//! reads Redis (or its backups) who was blocked, and would let a writer to Redis target a
//! chosen principal. Without the key, Redis holds opaque names.

mod message;
mod task;
mod windows;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;

pub(crate) use task::SharedTask;
pub(crate) use windows::{Counting, WindowsTask};

use crate::blocks::Blocks;
use crate::clock::Clock;
use crate::config::SharedSettings;
use crate::local::Local;
use crate::metrics::{self, Stats};

/// The keyed hash naming a principal in Redis.
pub(crate) type Digest = [u8; 32];

/// Blocks and lifts waiting to be shared; beyond, they are dropped and counted (both are rare:
/// a full queue means Redis has been away for long).
const QUEUE_CAPACITY: usize = 1024;
/// Longest block accepted from another replica (the longest `block_secs`).
const MAX_BLOCK: Duration = Duration::from_secs(7 * 86_400);

const CONNECTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// A block (until `until_unix`) or a lift (of the blocks ending by `until_unix`) to share,
/// naming the principal by its hash. Unix seconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outgoing {
    pub(crate) digest: Digest,
    pub(crate) until_unix: u64,
}

/// What the stage asks the task to share.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Command {
    Block(Outgoing),
    Lift(Outgoing),
}

/// What the stage and the task share.
pub(crate) struct SharedState {
    mac: Hmac<Sha256>,
    remote: Blocks<Digest>,
    /// Lifts remembered (hash → the latest block end they cover, Unix seconds), so that a block
    /// they cover, announced or loaded after them, is not applied again. At most `cap`, each
    /// forgotten once what it covers has ended.
    lifted: Mutex<HashMap<Digest, u64>>,
    cap: usize,
    local: Arc<Local>,
    clock: Arc<dyn Clock>,
    stats: Arc<Stats>,
    link: AtomicU8,
    /// Names this replica in its announcements, so it skips its own.
    origin: String,
}

/// The stage's side: hashes principals, checks received blocks, queues its own.
#[derive(Clone)]
pub(crate) struct Shared {
    state: Arc<SharedState>,
    tx: mpsc::Sender<Command>,
}

impl Shared {
    /// The handle and its task (not connected until spawned).
    pub(crate) fn new(
        s: SharedSettings,
        local: Arc<Local>,
        clock: Arc<dyn Clock>,
        stats: Arc<Stats>,
    ) -> (Shared, SharedTask) {
        let mac = Hmac::<Sha256>::new_from_slice(&s.key).unwrap_or_else(|_| unreachable!("any key length"));
        let cap = local.blocks.cap();
        let state = Arc::new(SharedState {
            mac,
            remote: Blocks::new(cap),
            lifted: Mutex::default(),
            cap,
            local,
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
    pub(crate) fn is_blocked(&self, issuer: &str, subject: &str, now: Instant) -> bool {
        !self.state.remote.is_empty()
            && self.state.remote.is_blocked(&self.state.digest(issuer, subject), now)
    }

    /// The hash naming (issuer, subject) in Redis.
    pub(crate) fn digest(&self, issuer: &str, subject: &str) -> Digest {
        self.state.digest(issuer, subject)
    }

    /// Blocks received from other replicas, in force at `now`.
    pub(crate) fn received(&self, now: Instant) -> Vec<(Digest, Instant)> {
        self.state.remote.list(now)
    }

    /// Queues the block of (issuer, subject) until `until` (monotonic) for the other replicas;
    /// never waits.
    pub(crate) fn publish(&self, issuer: &str, subject: &str, until: Instant) {
        let st = &self.state;
        let out = Outgoing { digest: st.digest(issuer, subject), until_unix: st.unix_at(until) };
        self.send(Command::Block(out));
    }

    /// Lifts the blocks of (issuer, subject) ending by `covers` (monotonic): the received one
    /// here at once, on the other replicas through the queue (never waits). Returns the end of
    /// the received block lifted, if one was in force.
    /// The lift covers at least the received block in force, whatever its end.
    pub(crate) fn lift(&self, issuer: &str, subject: &str, covers: Instant) -> Option<Instant> {
        let st = &self.state;
        let now = st.clock.now();
        let digest = st.digest(issuer, subject);
        let covers = st.remote.get(&digest).map_or(covers, |u| u.max(covers));
        let lifted = st.remote.lift(&digest, covers, now);
        let out = Outgoing { digest, until_unix: st.unix_at(covers) };
        st.remember_lift(&out);
        self.send(Command::Lift(out));
        lifted
    }

    fn send(&self, cmd: Command) {
        if self.tx.try_send(cmd).is_err() {
            metrics::SHARED_ERRORS.with_label_values(&["queue_full"]).inc();
            let n = Stats::bump(&self.state.stats.shared_dropped, 1);
            if n.is_power_of_two() {
                log::warn!("exfil shared block or lift dropped (queue full); {n} dropped so far");
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
    fn digest(&self, issuer: &str, subject: &str) -> Digest {
        let mut mac = self.mac.clone();
        // Length-prefixed, so that no two (issuer, subject) pairs feed the same bytes.
        for field in [issuer.as_bytes(), subject.as_bytes()] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        mac.finalize().into_bytes().into()
    }

    /// The name of a patient in Redis (`shared.windows`): the first 16 bytes of an HMAC under
    /// the same key, in a domain of its own (never equal to a principal's).
    fn patient_tag(&self, patient: &str) -> [u8; 16] {
        let mut mac = self.mac.clone();
        mac.update(b"patient");
        mac.update(&(patient.len() as u64).to_be_bytes());
        mac.update(patient.as_bytes());
        let full: [u8; 32] = mac.finalize().into_bytes().into();
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&full[..16]);
        tag
    }

    fn wall_now(&self) -> Duration {
        self.clock.wall().duration_since(UNIX_EPOCH).unwrap_or_default()
    }

    /// The Unix second of the monotonic `at`, rounded up: a replica must never end a block
    /// before this one does.
    fn unix_at(&self, at: Instant) -> u64 {
        let wall = self.wall_now() + at.saturating_duration_since(self.clock.now());
        wall.as_secs() + u64::from(wall.subsec_nanos() > 0)
    }

    /// The monotonic instant of `unix` (capped at a week ahead); `None` when it has passed.
    fn instant_at(&self, unix: u64) -> Option<Instant> {
        let left = Duration::from_secs(unix).checked_sub(self.wall_now()).filter(|d| !d.is_zero())?;
        Some(self.clock.now() + left.min(MAX_BLOCK))
    }

    /// Applies a block received from Redis, ending at `until_unix` (wall clock); a block in
    /// force that ends later is kept, and a block that a remembered lift covers is ignored.
    fn apply(&self, digest: &Digest, until_unix: u64) {
        let covered = self.lifted.lock().unwrap_or_else(|e| e.into_inner()).get(digest).copied();
        if covered.is_some_and(|c| until_unix <= c) {
            return;
        }
        let Some(until) = self.instant_at(until_unix) else {
            return;
        };
        let now = self.clock.now();
        if self.remote.block(digest, until, now) {
            Stats::bump(&self.stats.shared_received, 1);
        } else {
            metrics::BLOCKS_NOT_RECORDED.inc();
            log::error!("exfil shared block not recorded: max_principals blocks already in force");
        }
    }

    /// Remembers a lift until what it covers has ended (the latest lift wins).
    fn remember_lift(&self, out: &Outgoing) {
        let wall = self.wall_now().as_secs();
        let mut lifted = self.lifted.lock().unwrap_or_else(|e| e.into_inner());
        if lifted.len() >= self.cap {
            lifted.retain(|_, c| *c > wall);
        }
        if lifted.len() < self.cap || lifted.contains_key(&out.digest) {
            let c = lifted.entry(out.digest).or_insert(out.until_unix);
            *c = (*c).max(out.until_unix);
        }
    }

    /// Applies a lift from another replica: its received block at once, then this replica's
    /// own block and windows of the principal with that hash. This replica knows its principals
    /// by identity only, so it hashes each of its blocks (few) and each principal whose windows
    /// it keeps (up to `max_principals`, about 0.13-0.2 µs each: some 20 ms for 100k). That walk
    /// runs on a blocking thread, not on a runtime worker, and never on a request;
    /// `shared_lifts_received` counts the lift once it is done.
    ///
    /// A lift already applied (sent again after the lifting replica reconnected, or read back
    /// from Redis on a reconnect) is not walked again: that would reset windows filled since.
    fn apply_lift(self: &Arc<Self>, digest: &Digest, covers_unix: u64) {
        let known = self.lifted.lock().unwrap_or_else(|e| e.into_inner()).get(digest).copied();
        if known.is_some_and(|c| c >= covers_unix) {
            return;
        }
        self.remember_lift(&Outgoing { digest: *digest, until_unix: covers_unix });
        let now = self.clock.now();
        let Some(covers) = self.instant_at(covers_unix) else {
            return; // whatever it covered has ended
        };
        let remote = self.remote.lift(digest, covers, now).is_some();
        let (st, digest) = (Arc::clone(self), *digest);
        let walk = move || {
            let hit = |(iss, sub): &crate::local::PrincipalKey| st.digest(iss, sub.as_str()) == digest;
            let (blocks, windows) = st.local.lift_where(covers, now, hit);
            Stats::bump(&st.stats.shared_lifts_received, 1);
            log::info!(
                "exfil shared lift applied: received_block={remote} own_blocks={blocks} windows_reset={windows}"
            );
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(walk)),
            Err(_) => walk(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn shared(key: u8) -> Shared {
        let s = SharedSettings {
            client: redis::Client::open("redis://127.0.0.1:1/0").unwrap(),
            key: vec![key; 32],
            channel: "c".into(),
            key_prefix: "p:".into(),
            windows: None,
            timeout: Duration::from_secs(1),
        };
        let local = Arc::new(Local::new(8, Duration::from_secs(60)));
        Shared::new(s, local, Arc::new(ManualClock::new()), Arc::default()).0
    }

    #[test]
    fn the_name_depends_on_the_key_and_on_where_the_issuer_ends() {
        let (one, two) = (shared(1), shared(2));
        let d = one.digest("https://idp/", "eve");
        assert_eq!(d, one.digest("https://idp/", "eve"), "stable");
        assert_ne!(d, two.digest("https://idp/", "eve"), "keyed");
        assert_ne!(d, one.digest("https://idp/e", "ve"), "fields are delimited");
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
    fn a_remembered_lift_keeps_out_the_blocks_it_covers_only() {
        let s = shared(1);
        let wall = s.state.wall_now().as_secs();
        s.state.remember_lift(&Outgoing { digest: [1; 32], until_unix: wall + 100 });
        s.state.apply(&[1; 32], wall + 100);
        assert!(s.state.remote.is_empty(), "an older block announced late stays lifted");
        s.state.apply(&[1; 32], wall + 101);
        assert!(s.state.remote.is_blocked(&[1; 32], s.state.clock.now()), "a later block applies");
    }

    #[test]
    fn a_lift_resets_the_windows_of_the_hashed_principal_once() {
        let s = shared(1);
        let st = &s.state;
        let key: crate::local::PrincipalKey = (Arc::from("https://idp/"), "eve".into());
        let other: crate::local::PrincipalKey = (Arc::from("https://idp/"), "bob".into());
        let fresh = || Arc::new(std::sync::Mutex::new(crate::state::PrincipalState::default()));
        st.local.principals.insert(key.clone(), fresh());
        st.local.principals.insert(other.clone(), fresh());
        let covers = st.wall_now().as_secs() + 300;
        st.apply_lift(&s.digest("https://idp/", "eve"), covers);
        assert!(!st.local.principals.contains_key(&key) && st.local.principals.contains_key(&other));
        assert_eq!(st.stats.shared_lifts_received.load(Ordering::Relaxed), 1);

        st.local.principals.insert(key.clone(), fresh());
        st.apply_lift(&s.digest("https://idp/", "eve"), covers);
        assert!(st.local.principals.contains_key(&key), "the same lift again is not walked again");
        assert_eq!(st.stats.shared_lifts_received.load(Ordering::Relaxed), 1);
    }
}
