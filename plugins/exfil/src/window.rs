//! Memory-bounded sliding windows: a weighted event count and a distinct-patient set.
//!
//! Both answer one question exactly — "has this principal gone over the threshold within the last
//! `window`?" — while keeping at most `threshold + 1` elements (the count also merges events that
//! fall within `window / 64` of each other, so it holds at most ~65). The trick is that once the
//! newest elements alone exceed the threshold, older ones cannot change the answer (they expire
//! first), so they may be dropped. When a detector fires it clears its window: the alert is
//! de-duplicated for one window, and by the time it may fire again every cleared element has
//! expired anyway, so the answer stays exact.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use phigate_plugin::PatientId;

/// Events closer together than `window / MERGE_SLOTS` share one slot.
const MERGE_SLOTS: u32 = 64;

fn live(at: Instant, now: Instant, window: Duration) -> bool {
    now.saturating_duration_since(at) < window
}

/// A weighted event count over a sliding window.
#[derive(Debug, Default)]
pub(crate) struct SlidingCount {
    /// (time of the newest event in the slot, summed weight), oldest first.
    slots: VecDeque<(Instant, u64)>,
    sum: u64,
}

impl SlidingCount {
    /// Adds `weight` at `now`; returns the total within the window.
    pub(crate) fn add(&mut self, now: Instant, weight: u64, window: Duration, threshold: u64) -> u64 {
        while let Some(&(at, w)) = self.slots.front() {
            if live(at, now, window) {
                break;
            }
            self.sum -= w;
            self.slots.pop_front();
        }
        if weight == 0 {
            return self.sum;
        }
        let merge = window / MERGE_SLOTS;
        match self.slots.back_mut() {
            // Stamping the slot with its newest event keeps it alive a little longer, never
            // shorter: the window errs on the side of alerting.
            Some((at, w)) if now.saturating_duration_since(*at) < merge => {
                *at = now;
                *w += weight;
            }
            _ => self.slots.push_back((now, weight)),
        }
        self.sum += weight;
        let total = self.sum;
        // Older slots cannot change the answer while the newer ones alone exceed the threshold.
        while let Some(&(_, w)) = self.slots.front() {
            if self.sum - w <= threshold {
                break;
            }
            self.sum -= w;
            self.slots.pop_front();
        }
        total
    }

    /// Forgets everything (after an alert).
    pub(crate) fn clear(&mut self) {
        self.slots.clear();
        self.sum = 0;
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.len()
    }
}

/// The distinct patients a principal touched within a sliding window, at most `threshold + 1`.
#[derive(Debug, Default)]
pub(crate) struct DistinctSet {
    seen: HashMap<PatientId, Instant>,
}

impl DistinctSet {
    /// Records `patients` at `now`. When one of them is new, returns how many distinct patients
    /// are within the window; a request touching only known patients cannot raise that count and
    /// returns `None` (so the common case skips the O(threshold) expiry pass).
    pub(crate) fn add<'a>(
        &mut self,
        now: Instant,
        patients: impl IntoIterator<Item = &'a PatientId>,
        window: Duration,
        threshold: usize,
    ) -> Option<usize> {
        let cap = threshold.saturating_add(1);
        let mut grew = false;
        for p in patients {
            if let Some(at) = self.seen.get_mut(p) {
                *at = now;
                continue;
            }
            if self.seen.len() >= cap {
                self.seen.retain(|_, at| live(*at, now, window));
            }
            if self.seen.len() >= cap {
                // Keep the newest `cap`: they alone decide whether the threshold is exceeded.
                if let Some(oldest) = self.seen.iter().min_by_key(|(_, at)| **at).map(|(p, _)| p.clone()) {
                    self.seen.remove(&oldest);
                }
            }
            self.seen.insert(p.clone(), now);
            grew = true;
        }
        if !grew {
            return None;
        }
        self.seen.retain(|_, at| live(*at, now, window));
        Some(self.seen.len())
    }

    /// Up to `n` of the most recently seen patients, newest first.
    pub(crate) fn newest(&self, n: usize) -> Vec<PatientId> {
        let mut all: Vec<(&PatientId, &Instant)> = self.seen.iter().collect();
        all.sort_unstable_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        all.into_iter().take(n).map(|(p, _)| p.clone()).collect()
    }

    /// Forgets everything (after an alert).
    pub(crate) fn clear(&mut self) {
        self.seen.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(64);

    #[test]
    fn count_expires_events_older_than_the_window() {
        let t0 = Instant::now();
        let mut c = SlidingCount::default();
        assert_eq!(c.add(t0, 3, W, 100), 3);
        assert_eq!(c.add(t0 + Duration::from_secs(10), 2, W, 100), 5);
        assert_eq!(c.add(t0 + W, 1, W, 100), 3, "the first event left the window");
        assert_eq!(c.add(t0 + W + Duration::from_secs(10), 0, W, 100), 1);
    }

    #[test]
    fn count_stays_bounded_under_a_flood() {
        let t0 = Instant::now();
        let mut c = SlidingCount::default();
        for i in 0..100_000u64 {
            c.add(t0 + Duration::from_millis(i * 7), 1, W, 10);
        }
        assert!(c.len() <= 11, "{}", c.len());
        assert!(c.sum > 10);
    }

    #[test]
    fn distinct_set_counts_repeats_once_and_keeps_at_most_threshold_plus_one() {
        let t0 = Instant::now();
        let mut s = DistinctSet::default();
        let ids: Vec<PatientId> = (0..50).map(|i| PatientId::from(format!("p{i}").as_str())).collect();
        assert_eq!(s.add(t0, &ids[..2], W, 5), Some(2));
        assert_eq!(s.add(t0, &ids[..2], W, 5), None, "nothing new");
        assert_eq!(s.add(t0, &ids, W, 5), Some(6));
        assert_eq!(s.seen.len(), 6);
        let fresh = [PatientId::from("new")];
        assert_eq!(s.add(t0 + W, &fresh, W, 5), Some(1), "everything else expired");
    }
}
