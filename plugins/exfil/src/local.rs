//! What this replica knows about principals by identity: the blocks it decided and the windows
//! it keeps. Shared between the stage (request path, `unblock`) and the Redis task (which lifts
//! them when another replica announces a lift).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use phigate_plugin::{Principal, Subject};

use crate::blocks::Blocks;
use crate::state::PrincipalState;

/// A principal: the subject is unique only within its issuer.
pub(crate) type PrincipalKey = (Arc<str>, Subject);

pub(crate) fn key_of(p: &Principal) -> PrincipalKey {
    (p.issuer.clone(), p.subject.clone())
}

/// This replica's blocks and windows, by principal.
pub(crate) struct Local {
    pub(crate) blocks: Blocks<PrincipalKey>,
    pub(crate) principals: Cache<PrincipalKey, Arc<Mutex<PrincipalState>>>,
}

impl Local {
    /// At most `max_principals` windows (idle ones forgotten after `idle`) and blocks.
    pub(crate) fn new(max_principals: u64, idle: Duration) -> Self {
        // Real-time idle expiry only bounds memory: a principal idle for longer than every
        // window has nothing left in any window (nor an alert to de-duplicate). What is inside a
        // window is always decided with the stage's clock.
        let principals = Cache::builder()
            .max_capacity(max_principals)
            .time_to_idle(idle)
            // LRU, not moka's default TinyLFU: TinyLFU may refuse to admit a new principal while
            // the cache is full, and an unadmitted principal would never be watched.
            .eviction_policy(EvictionPolicy::lru())
            .build();
        let cap = usize::try_from(max_principals).unwrap_or(usize::MAX);
        Local { blocks: Blocks::new(cap), principals }
    }

    /// Lifts the blocks in force at `now` that end by `covers` and forgets the windows of every
    /// principal for which `hit` holds. Blocks are few; the windows are walked in full (at most
    /// `max_principals`), so this runs in the background task, never on a request. Returns how
    /// many blocks and windows went.
    pub(crate) fn lift_where(
        &self,
        covers: Instant,
        now: Instant,
        mut hit: impl FnMut(&PrincipalKey) -> bool,
    ) -> (usize, usize) {
        let mut lifted = 0;
        for key in self.blocks.keys_where(now, &mut hit) {
            lifted += usize::from(self.blocks.lift(&key, covers, now).is_some());
        }
        let mut reset = 0;
        for (key, _) in self.principals.iter() {
            if hit(&key) {
                self.principals.invalidate(&*key);
                reset += 1;
            }
        }
        (lifted, reset)
    }
}
