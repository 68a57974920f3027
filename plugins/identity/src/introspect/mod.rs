//! Token introspection (RFC 7662): asking an issuer's authorization server whether a token it
//! issued is active, for opaque tokens the gateway cannot verify itself and, optionally, for
//! JWTs that may have been revoked before they expire.
//!
//! ```text
//! ask(hash, token)
//!   refused recently (inactive, or active but failing a check)?  → the same refusal, no call
//!   a call for this token in flight?                              → wait for its answer
//!   otherwise one POST (client.rs), at most max_in_flight at once, within timeout_ms
//!     active: true   → the answer's members, checked like a JWT payload by the stage
//!     active: false  → 401 token_inactive (remembered refused_cache_ttl_secs)
//!     no answer      → 503 not_ready + Retry-After (never remembered: the next request asks again)
//! ```
//!
//! An accepted token goes into the stage's validated-token cache for at most `cache_ttl_secs`
//! (never past its `exp`): that is how late a revocation is noticed, and how often the
//! authorization server is asked per token. The token is sent only to the configured endpoint;
//! it is held in memory for the call alone and never logged. Keys of every map here are the
//! token's SHA-256.

mod client;
pub(crate) mod config;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::sync::Cache;
use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use crate::claims::numeric_date;
use crate::clock::Clock;
use crate::error::AuthError;
use crate::metrics;
use client::{Answer, CallError, Client, Settings};
pub(crate) use config::{IntrospectTokens, IntrospectionConfig};

type Flight = Arc<OnceCell<Result<Answer, CallError>>>;

/// One issuer's introspection endpoint with its caches.
pub(crate) struct Introspector {
    issuer: Arc<str>,
    client: Client,
    pub(crate) tokens: IntrospectTokens,
    /// Longest an accepted answer is reused.
    pub(crate) cache_ttl: Duration,
    /// Refusals with the moment they expire on the stage's clock (moka's own time to live, a
    /// little longer, only bounds memory).
    refused: Option<Cache<[u8; 32], (AuthError, tokio::time::Instant)>>,
    refused_ttl: Duration,
    clock: Arc<dyn Clock>,
    in_flight: Mutex<HashMap<[u8; 32], Flight>>,
    failing: AtomicBool,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

impl Introspector {
    /// Builds the client. `roots` trust the endpoint; `cache_size` bounds the refused-token memory,
    /// whose time runs on `clock`.
    pub(crate) fn new(
        issuer: Arc<str>,
        cfg: &IntrospectionConfig,
        roots: rustls::RootCertStore,
        credentials: config::Credentials,
        cache_size: u64,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        let client = Client::new(Settings {
            endpoint: &cfg.endpoint,
            roots,
            auth: cfg.client_auth,
            client_id: &cfg.client_id,
            credentials,
            max_in_flight: cfg.max_in_flight,
            timeout: Duration::from_millis(cfg.timeout_ms),
        })?;
        let refused = (cfg.refused_cache_ttl_secs > 0).then(|| {
            Cache::builder()
                .max_capacity(cache_size)
                .time_to_live(Duration::from_secs(cfg.refused_cache_ttl_secs + 1))
                .build()
        });
        Ok(Introspector {
            issuer,
            client,
            tokens: cfg.tokens,
            cache_ttl: Duration::from_secs(cfg.cache_ttl_secs),
            refused,
            refused_ttl: Duration::from_secs(cfg.refused_cache_ttl_secs),
            clock,
            in_flight: Mutex::new(HashMap::new()),
            failing: AtomicBool::new(false),
        })
    }

    /// The members of the endpoint's answer for an active token.
    ///
    /// # Errors
    /// `Inactive` for `active: false` or a refusal remembered from before, `IntrospectionUnavailable`
    /// when no answer came.
    pub(crate) async fn ask(
        &self,
        hash: [u8; 32],
        token: &str,
    ) -> Result<Arc<Map<String, Value>>, AuthError> {
        if let Some((e, until)) = self.refused.as_ref().and_then(|c| c.get(&hash)) {
            if self.clock.now() < until {
                return Err(e);
            }
        }
        let flight = InFlight::join(&self.in_flight, hash);
        let answer = flight.cell.get_or_init(|| self.call(token)).await.clone();
        drop(flight);
        match answer {
            Ok(Answer::Active(members)) => Ok(members),
            Ok(Answer::Inactive) => {
                let e = AuthError::Inactive("the authorization server reports it inactive");
                self.remember_refused(hash, e);
                Err(e)
            }
            Err(_) => Err(AuthError::IntrospectionUnavailable),
        }
    }

    /// Remembers a refusal of an active token (audience, binding claims, …) so the same token is
    /// not introspected again for `refused_cache_ttl_secs`.
    pub(crate) fn remember_refused(&self, hash: [u8; 32], e: AuthError) {
        if let Some(c) = &self.refused {
            c.insert(hash, (e, self.clock.now() + self.refused_ttl));
        }
    }

    async fn call(&self, token: &str) -> Result<Answer, CallError> {
        let started = Instant::now();
        let answer = self.client.introspect(token, self.clock.unix_secs()).await;
        let outcome = match &answer {
            Ok(Answer::Active(_)) => "active",
            Ok(Answer::Inactive) => "inactive",
            Err(e) => e.label(),
        };
        metrics::introspection(&self.issuer, outcome, started.elapsed());
        // One line per change between answering and failing, not one per request.
        match &answer {
            Err(e) if !self.failing.swap(true, Ordering::Relaxed) => {
                log::warn!(target: "phigate::identity", "issuer={} introspection failing: {e}; its opaque tokens get 503 until it answers", self.issuer);
            }
            Ok(_) if self.failing.swap(false, Ordering::Relaxed) => {
                log::info!(target: "phigate::identity", "issuer={} introspection answers again", self.issuer);
            }
            _ => {}
        }
        answer
    }
}

/// A request's share of the call for one token; the map entry goes when its last sharer leaves
/// (answered or cancelled), so the map holds only calls someone still waits for.
struct InFlight<'a> {
    map: &'a Mutex<HashMap<[u8; 32], Flight>>,
    hash: [u8; 32],
    cell: Flight,
}

impl<'a> InFlight<'a> {
    fn join(map: &'a Mutex<HashMap<[u8; 32], Flight>>, hash: [u8; 32]) -> Self {
        let mut m = map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let cell = Arc::clone(m.entry(hash).or_default());
        InFlight { map, hash, cell }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Clones are made under this lock: two owners are the map and this sharer.
        if m.get(&self.hash).is_some_and(|c| Arc::ptr_eq(c, &self.cell)) && Arc::strong_count(&self.cell) == 2
        {
            m.remove(&self.hash);
        }
    }
}

/// RFC 6749/9068 access-token type names an answer may carry; a refresh token (or anything
/// else) presented as an access token is refused.
const ACCESS_TOKEN_TYPES: [&str; 4] =
    ["bearer", "dpop", "access_token", "urn:ietf:params:oauth:token-type:access_token"];

/// The checks that differ from a JWT payload's: the answer's `iss` (when given) must be this
/// issuer, its `token_type` (when given) an access token's, and `exp` is optional (the answer is
/// then good for `cache_ttl`). Returns the expiry the principal carries.
pub(crate) fn check_answer(
    members: &Map<String, Value>,
    issuer: &str,
    now: i64,
    leeway: i64,
    cache_ttl: Duration,
) -> Result<i64, AuthError> {
    match members.get("iss") {
        None => {}
        Some(Value::String(s)) if s == issuer => {}
        Some(_) => return Err(AuthError::Inactive("the answer names another issuer")),
    }
    match members.get("token_type") {
        None => {}
        Some(Value::String(t)) if ACCESS_TOKEN_TYPES.iter().any(|a| t.eq_ignore_ascii_case(a)) => {}
        Some(_) => return Err(AuthError::Inactive("not an access token")),
    }
    let exp = numeric_date(members.get("exp"), "exp not numeric")?;
    if exp.is_some_and(|e| now >= e.saturating_add(leeway)) {
        return Err(AuthError::Expired);
    }
    if numeric_date(members.get("nbf"), "nbf not numeric")?.is_some_and(|n| n > now.saturating_add(leeway)) {
        return Err(AuthError::NotYetValid("nbf in the future"));
    }
    let ttl = i64::try_from(cache_ttl.as_secs()).unwrap_or(i64::MAX);
    Ok(exp.unwrap_or_else(|| now.saturating_add(ttl)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn members(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn answers_are_checked_for_issuer_type_and_time() {
        let ttl = Duration::from_secs(60);
        let ok = members(json!({"iss": "https://as", "token_type": "Bearer", "exp": 2000}));
        assert_eq!(check_answer(&ok, "https://as", 1000, 30, ttl), Ok(2000));
        assert_eq!(check_answer(&members(json!({})), "https://as", 1000, 30, ttl), Ok(1060));
        let other = members(json!({"iss": "https://other"}));
        assert!(matches!(check_answer(&other, "https://as", 1000, 30, ttl), Err(AuthError::Inactive(_))));
        let refresh = members(json!({"token_type": "refresh_token"}));
        assert!(matches!(check_answer(&refresh, "https://as", 1000, 30, ttl), Err(AuthError::Inactive(_))));
        let old = members(json!({"exp": 900}));
        assert_eq!(check_answer(&old, "https://as", 1000, 30, ttl), Err(AuthError::Expired));
        let early = members(json!({"nbf": 1100}));
        assert!(matches!(check_answer(&early, "https://as", 1000, 30, ttl), Err(AuthError::NotYetValid(_))));
        let text = members(json!({"exp": "2000"}));
        assert!(matches!(check_answer(&text, "https://as", 1000, 30, ttl), Err(AuthError::Malformed(_))));
    }
}
