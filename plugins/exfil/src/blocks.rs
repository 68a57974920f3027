//! Blocked principals: a small map read on every request, written only when a `block` rule fires.
//!
//! Blocks are rare and lookups are on every request, so this is a read-mostly map behind an
//! `RwLock` with an atomic "anything blocked at all?" check in front: with no block in force a
//! lookup touches one atomic. (A moka cache here cost several hundred ns per request.)

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;
use std::time::Instant;

/// Principal → the monotonic instant its block ends, at most `cap` entries.
#[derive(Debug)]
pub(crate) struct Blocks<K> {
    map: RwLock<HashMap<K, Instant>>,
    len: AtomicUsize,
    cap: usize,
}

impl<K: Hash + Eq + Clone> Blocks<K> {
    pub(crate) fn new(cap: usize) -> Self {
        Blocks { map: RwLock::new(HashMap::new()), len: AtomicUsize::new(0), cap: cap.max(1) }
    }

    /// The most blocks kept.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Whether no block is recorded (one atomic load).
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// Whether `key` is blocked at `now`.
    pub(crate) fn is_blocked(&self, key: &K, now: Instant) -> bool {
        if self.len.load(Ordering::Acquire) == 0 {
            return false;
        }
        let until = self.map.read().unwrap_or_else(|e| e.into_inner()).get(key).copied();
        match until {
            Some(until) if now < until => true,
            Some(_) => {
                self.sweep(now);
                false
            }
            None => false,
        }
    }

    /// Blocks `key` until `until` (never shortening a longer block in force). Returns false when
    /// the map is full of blocks still in force: the block is then not recorded.
    pub(crate) fn block(&self, key: &K, until: Instant, now: Instant) -> bool {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.cap && !map.contains_key(key) {
            map.retain(|_, u| now < *u);
        }
        let done = if map.len() < self.cap || map.contains_key(key) {
            let e = map.entry(key.clone()).or_insert(until);
            *e = (*e).max(until);
            true
        } else {
            false
        };
        self.len.store(map.len(), Ordering::Release);
        done
    }

    /// Ends the block on `key` if it ends no later than `covers` (a lift covers the blocks
    /// decided before it, not a later, longer one). Returns the end of the block removed, if it
    /// was still in force at `now`.
    pub(crate) fn lift(&self, key: &K, covers: Instant, now: Instant) -> Option<Instant> {
        if self.is_empty() {
            return None;
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let removed = match map.get(key) {
            Some(until) if *until <= covers => map.remove(key),
            _ => None,
        };
        self.len.store(map.len(), Ordering::Release);
        removed.filter(|until| now < *until)
    }

    /// When the block on `key` ends, if one is recorded.
    pub(crate) fn get(&self, key: &K) -> Option<Instant> {
        if self.is_empty() {
            return None;
        }
        self.map.read().unwrap_or_else(|e| e.into_inner()).get(key).copied()
    }

    /// The blocks in force at `now`, at most `cap` (the map's own bound).
    pub(crate) fn list(&self, now: Instant) -> Vec<(K, Instant)> {
        if self.is_empty() {
            return Vec::new();
        }
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.iter().filter(|(_, u)| now < **u).map(|(k, u)| (k.clone(), *u)).collect()
    }

    /// The keys of the blocks in force at `now` for which `pick` holds.
    pub(crate) fn keys_where(&self, now: Instant, mut pick: impl FnMut(&K) -> bool) -> Vec<K> {
        self.list(now).into_iter().map(|(k, _)| k).filter(|k| pick(k)).collect()
    }

    /// Forgets the blocks that ended by `now` (so that `is_empty` holds again).
    pub(crate) fn sweep(&self, now: Instant) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, u| now < *u);
        self.len.store(map.len(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_block_ends_at_its_instant_and_is_then_forgotten() {
        let t0 = Instant::now();
        let b = Blocks::new(4);
        assert!(!b.is_blocked(&"k", t0));
        assert!(b.block(&"k", t0 + Duration::from_secs(10), t0));
        assert!(b.is_blocked(&"k", t0 + Duration::from_secs(9)));
        assert!(!b.is_blocked(&"k", t0 + Duration::from_secs(10)));
        assert_eq!(b.len.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_shorter_block_never_shortens_a_longer_one() {
        let t0 = Instant::now();
        let b = Blocks::new(4);
        b.block(&"k", t0 + Duration::from_secs(100), t0);
        b.block(&"k", t0 + Duration::from_secs(10), t0);
        assert!(b.is_blocked(&"k", t0 + Duration::from_secs(50)));
    }

    #[test]
    fn a_lift_removes_the_blocks_it_covers_only() {
        let t0 = Instant::now();
        let b = Blocks::new(4);
        b.block(&"k", t0 + Duration::from_secs(100), t0);
        assert_eq!(b.lift(&"k", t0 + Duration::from_secs(99), t0), None, "a later block stays");
        assert!(b.is_blocked(&"k", t0));
        assert_eq!(b.lift(&"k", t0 + Duration::from_secs(100), t0), Some(t0 + Duration::from_secs(100)));
        assert!(!b.is_blocked(&"k", t0) && b.is_empty());
        assert_eq!(b.lift(&"k", t0 + Duration::from_secs(100), t0), None, "nothing left");
        b.block(&"e", t0 + Duration::from_secs(5), t0);
        assert_eq!(b.lift(&"e", t0 + Duration::from_secs(9), t0 + Duration::from_secs(6)), None, "ended");
    }

    #[test]
    fn list_shows_only_blocks_in_force() {
        let t0 = Instant::now();
        let b = Blocks::new(4);
        b.block(&"a", t0 + Duration::from_secs(5), t0);
        b.block(&"b", t0 + Duration::from_secs(50), t0);
        assert_eq!(b.list(t0 + Duration::from_secs(6)), vec![("b", t0 + Duration::from_secs(50))]);
        assert_eq!(b.keys_where(t0, |k| *k == "a"), vec!["a"]);
    }

    #[test]
    fn a_full_map_makes_room_from_expired_blocks_only() {
        let t0 = Instant::now();
        let b = Blocks::new(2);
        assert!(b.block(&"a", t0 + Duration::from_secs(5), t0));
        assert!(b.block(&"b", t0 + Duration::from_secs(50), t0));
        assert!(!b.block(&"c", t0 + Duration::from_secs(50), t0), "both still in force");
        assert!(b.block(&"c", t0 + Duration::from_secs(50), t0 + Duration::from_secs(6)));
        assert!(b.is_blocked(&"b", t0 + Duration::from_secs(6)));
    }
}
