//! The active keys with what derives from them: the JWKS document and the cache of assertions
//! they signed. Swapped as a whole on reload, so an assertion is never served from the cache
//! after its key has been replaced.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use moka::sync::Cache;
use phigate_plugin::Principal;

use crate::claims;
use crate::config::MAX_TTL_SECS;
use crate::error::KeyError;
use crate::keys::{self, PublicKey, SigningKey};

/// Most signed assertions kept (one per caller, session, token and audience).
const CACHE_MAX_ENTRIES: u64 = 10_000;

/// The stage's settings, fixed at build.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) issuer: String,
    pub(crate) header: HeaderName,
    pub(crate) ttl_secs: i64,
    /// The audience per route index; `None`: no assertion on that route.
    pub(crate) audiences: Vec<Option<Arc<str>>>,
    pub(crate) key_path: PathBuf,
    pub(crate) previous: Vec<PathBuf>,
    pub(crate) kid: Option<String>,
}

/// A signed assertion and the times that decide its reuse.
#[derive(Debug, Clone)]
pub(crate) struct Signed {
    pub(crate) value: HeaderValue,
    /// Reused while the clock is before this: half the lifetime.
    pub(crate) refresh_at: i64,
}

/// The cache key: the principal (hashed by issuer, subject, session and token expiry; compared
/// whole, so two tokens differing in any claim never share an assertion) and the audience.
#[derive(Debug, Clone)]
pub(crate) struct CacheKey {
    pub(crate) principal: Arc<Principal>,
    pub(crate) audience: Arc<str>,
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let p = &*self.principal;
        p.issuer.hash(state);
        p.subject.hash(state);
        p.session_id.hash(state);
        p.expires_at.hash(state);
        self.audience.hash(state);
    }
}

impl PartialEq for CacheKey {
    fn eq(&self, other: &Self) -> bool {
        // The identity stage shares one `Arc` per token: pointer equality is the common case.
        (Arc::ptr_eq(&self.principal, &other.principal) || self.principal == other.principal)
            && self.audience == other.audience
    }
}

impl Eq for CacheKey {}

/// The active signing key, the public keys published with it, and its assertion cache.
pub(crate) struct KeySet {
    pub(crate) key: SigningKey,
    pub(crate) kid: String,
    /// The encoded JWS header, computed once.
    pub(crate) header_b64: String,
    /// The key a reload replaced, kept in the JWKS until the next rotation.
    pub(crate) retired: Option<PublicKey>,
    /// Every public key in the JWKS after the current one (deduplicated), with its kid.
    pub(crate) others: Vec<(PublicKey, String)>,
    /// The JWKS document (`application/jwk-set+json`).
    pub(crate) jwks: Arc<[u8]>,
    pub(crate) cache: Cache<CacheKey, Signed>,
    /// `phigate_assertion_issued_total{alg, source}` for this key, resolved once (not per request).
    pub(crate) issued_cached: prometheus::IntCounter,
    pub(crate) issued_signed: prometheus::IntCounter,
}

impl KeySet {
    /// Loads the key files of `s`. `retired` gets the new signing key's public half and names
    /// the key a reload replaced, kept in the JWKS (none at build).
    ///
    /// # Errors
    /// The config key of the failing file (`key_path`, `previous_public_keys[i]`) and why.
    pub(crate) fn load(
        s: &Settings,
        retired: impl FnOnce(&PublicKey) -> Option<PublicKey>,
    ) -> Result<KeySet, (String, KeyError)> {
        let key = keys::load_signing_key(&s.key_path).map_err(|e| ("key_path".to_owned(), e))?;
        let retired = retired(&key.public);
        let kid = s.kid.clone().unwrap_or_else(|| key.public.thumbprint());
        let mut others: Vec<(PublicKey, String)> = Vec::new();
        let previous = s.previous.iter().enumerate().map(|(i, path)| {
            keys::load_public_key(path).map_err(|e| (format!("previous_public_keys[{i}]"), e))
        });
        for public in retired.clone().map(Ok).into_iter().chain(previous) {
            let public = public?;
            if public != key.public && !others.iter().any(|(o, _)| *o == public) {
                let thumbprint = public.thumbprint();
                others.push((public, thumbprint));
            }
        }
        let keys: Vec<_> =
            std::iter::once(key.public.jwk(&kid)).chain(others.iter().map(|(k, kid)| k.jwk(kid))).collect();
        let jwks = serde_json::json!({ "keys": keys }).to_string().into_bytes().into();
        let header_b64 = claims::encoded_header(key.public.alg(), &kid);
        let cache = Cache::builder()
            .max_capacity(CACHE_MAX_ENTRIES)
            .time_to_live(Duration::from_secs(u64::from(MAX_TTL_SECS)))
            .build();
        let alg = key.public.alg();
        let issued_cached = crate::metrics::ISSUED.with_label_values(&[alg, "cached"]);
        let issued_signed = crate::metrics::ISSUED.with_label_values(&[alg, "signed"]);
        Ok(KeySet { key, kid, header_b64, retired, others, jwks, cache, issued_cached, issued_signed })
    }

    /// Whether `other` publishes and signs exactly as this set does (a reload that changed nothing).
    pub(crate) fn same_keys(&self, other: &KeySet) -> bool {
        self.key.public == other.key.public && self.kid == other.kid && self.others == other.others
    }
}
