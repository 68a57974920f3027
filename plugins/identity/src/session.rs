//! Automatic logoff (HIPAA §164.312(a)(2)(iii)): idle timeout per session.
//!
//! A session is the token's `sid` (per issuer), else the token itself. A session idle longer than
//! the timeout is marked timed out and stays refused (even if requests keep coming) until the
//! user authenticates again: a new `sid`, or a token with a newer `auth_time`.

use std::time::Duration;

use moka::sync::Cache;
use tokio::time::Instant;

use crate::error::AuthError;

/// How long a session record is kept after its last request. Longer than any sensible idle
/// timeout, so a timed-out session is remembered while its tokens can still be refreshed.
const RETENTION: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Copy)]
struct SessionState {
    last_seen: Instant,
    auth_time: Option<i64>,
    timed_out: bool,
}

/// Bounded session tracker.
pub(crate) struct Sessions {
    idle: Option<Duration>,
    cache: Cache<[u8; 32], SessionState>,
}

impl Sessions {
    /// `idle_secs == 0` disables the timeout.
    pub(crate) fn new(idle_secs: u64, capacity: u64) -> Self {
        Sessions {
            idle: (idle_secs > 0).then(|| Duration::from_secs(idle_secs)),
            cache: Cache::builder().max_capacity(capacity).time_to_idle(RETENTION).build(),
        }
    }

    /// Records a request of session `key` at `now`, or refuses it.
    pub(crate) fn touch(&self, key: [u8; 32], auth_time: Option<i64>, now: Instant) -> Result<(), AuthError> {
        let Some(idle) = self.idle else {
            return Ok(());
        };
        let fresh = SessionState { last_seen: now, auth_time, timed_out: false };
        let Some(s) = self.cache.get(&key) else {
            self.cache.insert(key, fresh);
            return Ok(());
        };
        let reauthenticated = matches!((auth_time, s.auth_time), (Some(new), Some(old)) if new > old)
            || (auth_time.is_some() && s.auth_time.is_none());
        if reauthenticated {
            self.cache.insert(key, fresh);
            return Ok(());
        }
        if s.timed_out {
            return Err(AuthError::IdleTimeout);
        }
        if now.saturating_duration_since(s.last_seen) > idle {
            self.cache.insert(key, SessionState { timed_out: true, ..s });
            return Err(AuthError::IdleTimeout);
        }
        self.cache.insert(key, SessionState { last_seen: now, ..s });
        Ok(())
    }
}
