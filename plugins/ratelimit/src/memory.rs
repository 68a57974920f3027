//! The in-memory backend: one governor (GCRA) keyed limiter per limit, state in a DashMap.
//!
//! Memory stays bounded: a periodic sweep ([`MemoryBackend::sweep`], run by the stage's
//! background task) drops every key whose bucket is full again. Such a key is indistinguishable
//! from a new one, so the sweep never changes a decision; what remains is the keys active within
//! the last `burst × T` (plus one `T`: governor's margin) plus the sweep interval.

use std::time::Instant;

use governor::clock::{Clock, FakeRelativeClock};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::RateLimiter;

use crate::key::Key;
use crate::limit::Limit;
use crate::metrics;
use crate::stage::{Applied, Verdict};

/// The clock the limiters read: monotonic in production, fake (advanced by hand) in tests.
#[derive(Debug, Clone)]
pub(crate) enum LimitClock {
    /// Nanoseconds since the stage was built.
    Monotonic(Instant),
    /// A test clock.
    #[cfg_attr(not(test), allow(dead_code))]
    Fake(FakeRelativeClock),
}

impl Clock for LimitClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        match self {
            LimitClock::Monotonic(origin) => Nanos::from(origin.elapsed()),
            LimitClock::Fake(c) => c.now(),
        }
    }
}

type Limiter = RateLimiter<Key, DashMapStateStore<Key>, LimitClock, StateInformationMiddleware>;

/// The in-memory backend: `limiters[i]` serves `limits[i]`.
pub(crate) struct MemoryBackend {
    limiters: Box<[Limiter]>,
    clock: LimitClock,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend").field("limiters", &self.limiters.len()).finish_non_exhaustive()
    }
}

impl MemoryBackend {
    /// A limiter per limit, all on `clock`.
    pub(crate) fn new(limits: &[Limit], clock: LimitClock) -> MemoryBackend {
        let limiters = limits
            .iter()
            .map(|l| {
                RateLimiter::dashmap_with_clock(l.rate.quota(), clock.clone())
                    .with_middleware::<StateInformationMiddleware>()
            })
            .collect();
        MemoryBackend { limiters, clock }
    }

    /// Counts the request against each applicable limit in order, stopping at the first one it
    /// exceeds. With `applied`, records what each passed limit has left (for the headers).
    pub(crate) fn check<'a>(
        &self,
        applicable: impl Iterator<Item = (usize, &'a Limit, Key)>,
        mut applied: Option<&mut Vec<Applied>>,
    ) -> Verdict {
        for (i, limit, key) in applicable {
            let Some(limiter) = self.limiters.get(i) else { continue };
            match limiter.check_key(&key) {
                Ok(snapshot) => {
                    limit.metrics.allowed.inc();
                    if let Some(out) = applied.as_deref_mut() {
                        let remaining = snapshot.remaining_burst_capacity();
                        out.push(Applied { limit: i, remaining, reset: limit.rate.reset_after(remaining) });
                    }
                }
                Err(not_until) => {
                    limit.metrics.denied.inc();
                    let retry_after = not_until.wait_time_from(self.clock.now());
                    return Verdict::Limited { limit: i, retry_after };
                }
            }
        }
        Verdict::Allow
    }

    /// Forgets every key whose bucket is full again and returns the keys left, in total.
    pub(crate) fn sweep(&self, limits: &[Limit]) -> usize {
        let mut total = 0;
        for (limiter, limit) in self.limiters.iter().zip(limits) {
            limiter.retain_recent();
            limiter.shrink_to_fit();
            let n = limiter.len();
            metrics::KEYS.with_label_values(&[&limit.name]).set(i64::try_from(n).unwrap_or(i64::MAX));
            total += n;
        }
        total
    }

    /// Keys currently held, in total.
    pub(crate) fn key_count(&self) -> usize {
        self.limiters.iter().map(|l| l.len()).sum()
    }
}
