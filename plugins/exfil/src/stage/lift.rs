//! What an operator does with blocks: list those in force, and lift one confirmed to be a false
//! positive (a clinician legitimately reviewing many charts) at once, on every replica, leaving
//! an alert line as evidence.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use phigate_plugin::Subject;
use serde::Serialize;

use super::ExfilStage;
use crate::alert;
use crate::error::UnblockError;
use crate::local::PrincipalKey;
use crate::metrics::{self, Stats};

/// Longest operator reason accepted by [`ExfilStage::unblock`], in bytes.
pub const MAX_REASON_BYTES: usize = 512;

/// One block in force on this replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockView {
    /// Issuer, when this replica knows it (its own blocks); `None` for a block received from
    /// another replica (known only by its keyed hash).
    pub issuer: Option<String>,
    /// Subject, when this replica knows it (its own blocks); `None` for a received block.
    pub subject: Option<String>,
    /// Hex HMAC name in Redis when blocks are shared, else `None`.
    pub shared_name: Option<String>,
    /// When the block ends, Unix seconds (wall clock, rounded up).
    pub until_unix: u64,
    /// `"local"` (this replica decided it) or `"shared"` (received).
    pub source: &'static str,
}

impl ExfilStage {
    /// Blocks in force now, sorted by `until_unix` then subject; at most `max_principals`. A
    /// block this replica decided and also received back from Redis is listed once, as local.
    pub fn blocks(&self) -> Vec<BlockView> {
        let (now, wall) = (self.clock.now(), self.clock.wall());
        let mut names = HashSet::new();
        let mut out: Vec<BlockView> = Vec::new();
        for ((iss, sub), until) in self.local.blocks.list(now) {
            let digest = self.shared.as_ref().map(|s| s.digest(&iss, sub.as_str()));
            names.extend(digest);
            out.push(BlockView {
                issuer: Some(iss.to_string()),
                subject: Some(sub.as_str().to_owned()),
                shared_name: digest.map(hex::encode),
                until_unix: unix_at(wall, now, until),
                source: "local",
            });
        }
        for (digest, until) in self.shared.as_ref().map(|s| s.received(now)).unwrap_or_default() {
            if !names.contains(&digest) {
                out.push(BlockView {
                    issuer: None,
                    subject: None,
                    shared_name: Some(hex::encode(digest)),
                    until_unix: unix_at(wall, now, until),
                    source: "shared",
                });
            }
        }
        out.sort_by(|a, b| (a.until_unix, &a.subject).cmp(&(b.until_unix, &b.subject)));
        out.truncate(self.local.blocks.cap());
        out
    }

    /// Lifts the block on (`issuer`, `subject`) on this replica and, with `shared`, on every
    /// replica (queued for the Redis task like a block: never waits on Redis). Resets the
    /// principal's windows, so that the counts that caused the block do not cause it again;
    /// writes an alert line (`rule: block_lifted`, `action: lift`, `lift_reason`) and counts
    /// it (`phigate_exfil_blocks_lifted_total`).
    ///
    /// Returns whether a block was in force here for that principal (decided here or
    /// received); the lift is shared either way, since another replica may hold a block this
    /// one never heard of.
    ///
    /// # Errors
    /// [`UnblockError::ReasonInvalid`] when `reason` is empty after trimming, over
    /// [`MAX_REASON_BYTES`], or holds control characters; nothing is lifted.
    pub fn unblock(&self, issuer: &str, subject: &str, reason: &str) -> Result<bool, UnblockError> {
        let reason = checked_reason(reason)?;
        let key: PrincipalKey = (Arc::from(issuer), Subject::from(subject));
        let now = self.clock.now();
        // Every block this replica decided before now ends by then.
        let covers = now + self.rules.longest_block();
        let local = self.local.blocks.lift(&key, covers, now);
        self.local.principals.invalidate(&key);
        let received = self.shared.as_ref().and_then(|s| s.lift(issuer, subject, covers));
        let until = local.max(received);
        metrics::BLOCKS_LIFTED.inc();
        Stats::bump(&self.stats.blocks_lifted, 1);
        log::info!("exfil block lifted by an operator: in_force={}", until.is_some());
        let wall = self.clock.wall();
        let ends = until.map(|u| wall + u.saturating_duration_since(now));
        match alert::lift_line((issuer, subject), reason, wall, ends) {
            Some(line) => self.queue.push(line),
            None => self.queue.dropped("unserializable"),
        }
        Ok(until.is_some())
    }
}

/// The reason, trimmed, if a lift may carry it: non-empty after trimming, at most
/// [`MAX_REASON_BYTES`], no control characters (what [`ExfilStage::unblock`] accepts; callers
/// that record the lift elsewhere first check with this).
///
/// # Errors
/// [`UnblockError::ReasonInvalid`] otherwise.
pub fn checked_reason(reason: &str) -> Result<&str, UnblockError> {
    let trimmed = reason.trim();
    if trimmed.is_empty() || reason.len() > MAX_REASON_BYTES || reason.chars().any(char::is_control) {
        return Err(UnblockError::ReasonInvalid);
    }
    Ok(trimmed)
}

/// The Unix second (rounded up) of the monotonic `at`, `now` being `wall`.
fn unix_at(wall: SystemTime, now: Instant, at: Instant) -> u64 {
    let d = (wall + at.saturating_duration_since(now)).duration_since(UNIX_EPOCH).unwrap_or_default();
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_bounded_printable_text() {
        assert_eq!(checked_reason("  FP: ward round, ticket SOC-12 "), Ok("FP: ward round, ticket SOC-12"));
        assert_eq!(checked_reason(&"é".repeat(256)).map(str::len), Ok(512));
        for bad in ["", "   ", "a\nb", "a\u{1b}[31m", "a\u{85}b", &"x".repeat(513)] {
            assert_eq!(checked_reason(bad), Err(UnblockError::ReasonInvalid), "{bad:?}");
        }
    }
}
