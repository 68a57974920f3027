//! Time, injected: the stage never reads the clock directly, so tests drive idle timeouts, key
//! staleness and token expiry with a [`ManualClock`] or tokio's paused time instead of sleeping.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// A source of monotonic and wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Monotonic now (tokio's, so `tokio::time::pause()` applies).
    fn now(&self) -> Instant;
    /// Wall-clock seconds since the Unix epoch (for `exp`, `nbf`, `iat`, `auth_time`).
    fn unix_secs(&self) -> i64;
}

/// The production clock: tokio's monotonic clock and the system wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix_secs(&self) -> i64 {
        unix_now()
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A clock that only moves when told to (tests, demos). Both readings advance together.
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    base_unix: i64,
    offset: Mutex<Duration>,
}

impl ManualClock {
    /// A clock starting at the current time.
    pub fn new() -> Self {
        ManualClock { base: Instant::now(), base_unix: unix_now(), offset: Mutex::new(Duration::ZERO) }
    }

    /// Moves both readings forward.
    pub fn advance(&self, by: Duration) {
        let mut off = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        *off += by;
    }

    fn offset(&self) -> Duration {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + self.offset()
    }

    fn unix_secs(&self) -> i64 {
        self.base_unix + i64::try_from(self.offset().as_secs()).unwrap_or(i64::MAX)
    }
}
