//! The stage: removes any client-sent assertion header and attaches a signed one (cached) for
//! requests with a verified principal; serves the JWKS; reloads its key files.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue};
use phigate_plugin::{async_trait, Denial, ErrorCode, Flow, Principal, Readiness, RequestCtx, Stage};

use crate::claims::{self, Claims};
use crate::clock::Clock;
use crate::error::{KeyError, SignError};
use crate::keyset::{CacheKey, KeySet, Settings, Signed};
use crate::metrics;

/// What a key reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The files hold the keys already in use: nothing changed (the cache is kept).
    Unchanged,
    /// New keys are active; the replaced signing key stays in the JWKS.
    Rotated,
}

/// The identity assertion stage. Build it with
/// [`AssertionConfig::build`](crate::AssertionConfig::build).
pub struct AssertionStage {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    keys: ArcSwap<KeySet>,
    clock: Arc<dyn Clock>,
    /// One reload at a time, so two SIGHUPs cannot both retire the same key.
    reload_lock: Mutex<()>,
}

impl std::fmt::Debug for AssertionStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionStage").field("kid", &self.kid()).finish_non_exhaustive()
    }
}

impl AssertionStage {
    pub(crate) fn new(settings: Settings, keys: KeySet, clock: Arc<dyn Clock>) -> Self {
        let inner = Inner { settings, keys: ArcSwap::from_pointee(keys), clock, reload_lock: Mutex::new(()) };
        AssertionStage { inner: Arc::new(inner) }
    }

    /// The JWKS (`{"keys":[...]}`: the current key first, then the retired and previous ones),
    /// to serve as `application/jwk-set+json`. Public keys only.
    pub fn jwks_json(&self) -> Arc<[u8]> {
        self.inner.keys.load().jwks.clone()
    }

    /// The `kid` of the current signing key.
    pub fn kid(&self) -> String {
        self.inner.keys.load().kid.clone()
    }

    /// The header assertions are sent in.
    pub fn header(&self) -> &HeaderName {
        &self.inner.settings.header
    }

    /// The assertion for `principal` on the route with index `route_index`: a cached one while
    /// it is in its first half-life, else a new signature. `None` when the route has assertions
    /// turned off.
    ///
    /// # Errors
    /// [`SignError::TokenExpired`] when the token expires now or earlier, [`SignError::Crypto`]
    /// when signing fails.
    pub fn assertion(
        &self,
        principal: &Arc<Principal>,
        route_index: usize,
    ) -> Result<Option<HeaderValue>, SignError> {
        let Some(Some(audience)) = self.inner.settings.audiences.get(route_index) else {
            return Ok(None);
        };
        let keys = self.inner.keys.load();
        let now = self.inner.clock.unix_now();
        let key = CacheKey { principal: principal.clone(), audience: audience.clone() };
        if let Some(hit) = keys.cache.get(&key).filter(|s| now < s.refresh_at) {
            keys.issued_cached.inc();
            return Ok(Some(hit.value));
        }
        let signed = self.inner.sign(&keys, principal, audience, now)?;
        keys.cache.insert(key, signed.clone());
        keys.issued_signed.inc();
        Ok(Some(signed.value))
    }

    /// A new assertion for `principal` towards `audience`, bypassing the cache (benches, tools).
    ///
    /// # Errors
    /// As [`AssertionStage::assertion`].
    pub fn sign_uncached(&self, principal: &Principal, audience: &str) -> Result<HeaderValue, SignError> {
        let keys = self.inner.keys.load();
        Ok(self.inner.sign(&keys, principal, audience, self.inner.clock.unix_now())?.value)
    }

    /// Re-reads the key files now (blocking file reads: call it off the request path). A key
    /// that fails to load leaves the active keys in place; the rejection is logged and counted.
    ///
    /// # Errors
    /// Why the new files were rejected.
    pub fn reload_now(&self) -> Result<ReloadOutcome, KeyError> {
        self.inner.reload()
    }
}

impl Inner {
    fn sign(&self, keys: &KeySet, p: &Principal, aud: &str, now: i64) -> Result<Signed, SignError> {
        let claims = Claims::new(&self.settings.issuer, aud, p, now, self.settings.ttl_secs)?;
        let jws = claims::sign(&keys.header_b64, &claims, &keys.key)?;
        let value = HeaderValue::try_from(jws).map_err(|_| SignError::Crypto)?;
        Ok(Signed { value, refresh_at: now + (claims.exp() - now) / 2 })
    }

    fn reload(&self) -> Result<ReloadOutcome, KeyError> {
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.keys.load_full();
        let retired = |new: &crate::keys::PublicKey| {
            if *new == current.key.public {
                current.retired.clone()
            } else {
                Some(current.key.public.clone())
            }
        };
        match KeySet::load(&self.settings, retired) {
            Err((key, e)) => {
                metrics::KEY_RELOADS.with_label_values(&["rejected"]).inc();
                log::warn!(target: "phigate::assertion", "assertion key reload rejected ({key}): {e}; the current keys stay active");
                Err(e)
            }
            Ok(new) if new.same_keys(&current) => {
                metrics::KEY_RELOADS.with_label_values(&["unchanged"]).inc();
                Ok(ReloadOutcome::Unchanged)
            }
            Ok(new) => {
                log::info!(target: "phigate::assertion", "assertion signing key now {} ({})", new.kid, new.key.public.alg());
                self.keys.store(Arc::new(new));
                metrics::KEY_RELOADS.with_label_values(&["rotated"]).inc();
                Ok(ReloadOutcome::Rotated)
            }
        }
    }
}

#[async_trait]
impl Stage for AssertionStage {
    fn name(&self) -> &'static str {
        "assertion"
    }

    fn readiness(&self) -> Readiness {
        let keys = self.inner.keys.load();
        Readiness::Ready(Some(format!("signing key {} ({})", keys.kid, keys.key.public.alg())))
    }

    /// SIGHUP: re-read the key files on a thread of their own (never on a request worker).
    fn reload(&self) {
        let inner = self.inner.clone();
        let spawned = std::thread::Builder::new().name("phigate-assertion-reload".into()).spawn(move || {
            let _ = inner.reload();
        });
        if let Err(e) = spawned {
            log::warn!(target: "phigate::assertion", "assertion key reload could not start: {e}");
        }
    }

    /// Removes the header from what the client sent (always: a client must never inject an
    /// assertion), then adds the gateway's for a request with a principal on a route that has
    /// assertions. Fails closed: when none can be made, the request is refused.
    async fn on_request(&self, ctx: &mut RequestCtx) -> Result<Flow, Denial> {
        let header = &self.inner.settings.header;
        ctx.request.headers.remove(header);
        ctx.upstream.remove_headers.push(header.clone());
        let Some(principal) = ctx.principal.as_ref() else {
            return Ok(Flow::Continue);
        };
        match self.assertion(principal, ctx.route.index) {
            Ok(Some(value)) => ctx.upstream.set_headers.push((header.clone(), value)),
            Ok(None) => {}
            Err(e) => {
                let (reason, code) = match e {
                    SignError::TokenExpired => ("token_expired", ErrorCode::TokenExpired),
                    SignError::Crypto => ("sign_error", ErrorCode::InternalError),
                };
                metrics::FAILURES.with_label_values(&[reason]).inc();
                return Err(Denial::new(code).with_cause(format!("identity assertion: {e}")));
            }
        }
        Ok(Flow::Continue)
    }
}
