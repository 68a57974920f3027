//! Per-issuer signing keys: parsing a JWKS, the refresh schedule (Cache-Control within bounds,
//! exponential backoff, stale keys up to a limit) and the rate-limited unknown-`kid` refetch.
//!
//! An IdP outage never turns into request latency: requests only read the current key set; the
//! one exception, an unknown `kid`, waits for at most one fetch per `min_refresh_secs` shared by
//! all concurrent requests, and none at all while the IdP is failing.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::DecodingKey;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::{Algorithm, JwksRefreshConfig};
use crate::fetch::{FetchError, JwksSource};
use crate::metrics;

/// A usable public key.
pub(crate) struct KeyEntry {
    pub(crate) kid: Option<String>,
    pub(crate) key: DecodingKey,
    /// Algorithms this key may verify (key type, curve, and the JWK's own `alg` if present).
    pub(crate) algs: Vec<Algorithm>,
}

/// One loaded JWKS.
pub(crate) struct KeySet {
    pub(crate) keys: Vec<Arc<KeyEntry>>,
    by_kid: HashMap<String, usize>,
    /// Changes only when the document's content changes; cached tokens remember it.
    pub(crate) generation: u64,
    digest: [u8; 32],
    /// After this the keys are stale (a refresh was due).
    refresh_due: Instant,
    /// After this the keys are unusable.
    expires: Instant,
}

impl KeySet {
    /// The key for `kid` that may verify `alg`; without a kid, the only such key.
    pub(crate) fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<&Arc<KeyEntry>> {
        match kid {
            Some(k) => self.by_kid.get(k).map(|&i| &self.keys[i]).filter(|e| e.algs.contains(&alg)),
            None => {
                let mut it = self.keys.iter().filter(|e| e.algs.contains(&alg));
                let first = it.next()?;
                it.next().is_none().then_some(first)
            }
        }
    }

    fn has_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }
}

#[derive(Debug, Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

/// Parses a JWKS, keeping only usable signature keys. Symmetric keys, encryption keys, unknown
/// types and RSA keys under 2048 bits are skipped.
pub(crate) fn parse_jwks(body: &[u8]) -> Result<(Vec<Arc<KeyEntry>>, [u8; 32]), FetchError> {
    let raw: RawJwks = serde_json::from_slice(body).map_err(|_| FetchError::NotJwks)?;
    let keys: Vec<Arc<KeyEntry>> = raw
        .keys
        .into_iter()
        .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
        .filter_map(|jwk| key_entry(&jwk).map(Arc::new))
        .collect();
    if keys.is_empty() {
        return Err(FetchError::NoKeys);
    }
    Ok((keys, Sha256::digest(body).into()))
}

fn key_entry(jwk: &Jwk) -> Option<KeyEntry> {
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let mut algs = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            use base64::Engine;
            let n =
                base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p.n.trim_end_matches('=')).ok()?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < 2048 {
                return None;
            }
            use Algorithm::*;
            vec![RS256, RS384, RS512, PS256, PS384, PS512]
        }
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        // Never HMAC: a shared secret published in a JWKS is no secret (and `oct` keys are
        // exactly what an RS256→HS256 confusion attack needs).
        _ => return None,
    };
    // RFC 7517 §4.4: a key that declares its algorithm is used with that one only.
    if let Some(ka) = jwk.common.key_algorithm {
        let declared = declared_alg(ka);
        algs.retain(|a| Some(*a) == declared);
    }
    if algs.is_empty() {
        return None;
    }
    Some(KeyEntry { kid: jwk.common.key_id.clone(), key: DecodingKey::from_jwk(jwk).ok()?, algs })
}

fn declared_alg(ka: KeyAlgorithm) -> Option<Algorithm> {
    use Algorithm::*;
    Some(match ka {
        KeyAlgorithm::RS256 => RS256,
        KeyAlgorithm::RS384 => RS384,
        KeyAlgorithm::RS512 => RS512,
        KeyAlgorithm::PS256 => PS256,
        KeyAlgorithm::PS384 => PS384,
        KeyAlgorithm::PS512 => PS512,
        KeyAlgorithm::ES256 => ES256,
        KeyAlgorithm::ES384 => ES384,
        KeyAlgorithm::EdDSA => EdDSA,
        _ => return None,
    })
}

#[derive(Debug, Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    failures: u32,
}

/// An issuer's keys and their lifecycle.
pub(crate) struct KeyStore {
    label: Arc<str>,
    source: JwksSource,
    bounds: JwksRefreshConfig,
    clock: Arc<dyn Clock>,
    current: RwLock<Option<Arc<KeySet>>>,
    fetch: tokio::sync::Mutex<FetchState>,
    /// Counts finished fetch attempts (success or failure), for anyone who must wait for one.
    attempts: tokio::sync::watch::Sender<u64>,
}

impl KeyStore {
    pub(crate) fn new(
        label: Arc<str>,
        source: JwksSource,
        bounds: JwksRefreshConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        KeyStore {
            label,
            source,
            bounds,
            clock,
            current: RwLock::new(None),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
            attempts: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The usable key set, if any (none before the first load or after `max_stale_secs`).
    pub(crate) fn keys(&self) -> Option<Arc<KeySet>> {
        let cur = self.current.read().unwrap_or_else(|e| e.into_inner());
        cur.as_ref().filter(|k| self.clock.now() < k.expires).map(Arc::clone)
    }

    /// Installs a document (also used at build time for `jwks_path`). Returns the refresh delay.
    pub(crate) fn install(&self, body: &[u8], max_age_secs: Option<u64>) -> Result<Duration, FetchError> {
        let (keys, digest) = parse_jwks(body)?;
        let ttl = Duration::from_secs(
            max_age_secs
                .unwrap_or(self.bounds.max_refresh_secs)
                .clamp(self.bounds.min_refresh_secs, self.bounds.max_refresh_secs),
        );
        let now = self.clock.now();
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        let generation = match cur.as_ref() {
            Some(old) if old.digest == digest => old.generation,
            Some(old) => old.generation + 1,
            None => 1,
        };
        let by_kid = keys.iter().enumerate().filter_map(|(i, k)| k.kid.clone().map(|kid| (kid, i))).collect();
        metrics::jwks_keys(&self.label, keys.len());
        *cur = Some(Arc::new(KeySet {
            keys,
            by_kid,
            generation,
            digest,
            refresh_due: now + ttl,
            expires: now + ttl + Duration::from_secs(self.bounds.max_stale_secs),
        }));
        Ok(ttl)
    }

    async fn fetch_locked(&self, st: &mut FetchState) -> Duration {
        st.last_attempt = Some(self.clock.now());
        let timeout = Duration::from_millis(self.bounds.fetch_timeout_ms);
        let res = match self.source.fetch(timeout).await {
            Ok(f) => self.install(&f.body, f.max_age_secs),
            Err(e) => Err(e),
        };
        self.attempts.send_modify(|n| *n += 1);
        match res {
            Ok(ttl) => {
                st.failures = 0;
                metrics::jwks_refresh(&self.label, "success");
                ttl
            }
            Err(e) => {
                st.failures = st.failures.saturating_add(1);
                metrics::jwks_refresh(&self.label, "failure");
                log::warn!(target: "phigate::identity", "jwks refresh failed issuer={} failures={} error={e}", self.label, st.failures);
                self.backoff(st.failures)
            }
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        let secs =
            self.bounds.backoff_initial_secs.saturating_mul(1u64 << exp).min(self.bounds.backoff_max_secs);
        Duration::from_secs(secs.max(1))
    }

    /// One scheduled refresh; returns how long to wait before the next.
    pub(crate) async fn refresh_once(&self) -> Duration {
        let mut st = self.fetch.lock().await;
        self.fetch_locked(&mut st).await
    }

    /// An unknown `kid`: one fetch at most per `min_refresh_secs`, shared by concurrent callers,
    /// and none while the IdP is failing (the background task retries with backoff).
    pub(crate) async fn refetch_for_kid(&self, kid: &str) -> Option<Arc<KeySet>> {
        let mut st = self.fetch.lock().await;
        if let Some(k) = self.keys().filter(|k| k.has_kid(kid)) {
            return Some(k);
        }
        let min = Duration::from_secs(self.bounds.min_refresh_secs);
        let recent = st.last_attempt.is_some_and(|t| self.clock.now().saturating_duration_since(t) < min);
        if recent || st.failures > 0 {
            return None;
        }
        self.fetch_locked(&mut st).await;
        self.keys()
    }

    /// A receiver that changes after every finished fetch attempt.
    pub(crate) fn attempts(&self) -> tokio::sync::watch::Receiver<u64> {
        self.attempts.subscribe()
    }

    /// The background refresher: runs for the life of the process.
    pub(crate) async fn run(self: Arc<Self>) {
        let mut delay = match self.keys() {
            Some(k) => k.refresh_due.saturating_duration_since(self.clock.now()),
            None => Duration::ZERO,
        };
        loop {
            tokio::time::sleep(delay).await;
            delay = self.refresh_once().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::DevIssuer;
    use base64::Engine;
    use serde_json::json;

    fn b64(n: usize) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vec![0xc5u8; n])
    }

    #[test]
    fn only_asymmetric_signature_keys_of_adequate_size_are_kept() {
        let es = DevIssuer::es256("i").unwrap();
        let mut declared_rs = json!({"kty": "RSA", "kid": "rs", "alg": "RS256", "n": b64(256), "e": "AQAB"});
        let doc = json!({"keys": [
            es.jwk(),
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "small", "n": b64(128), "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": b64(256), "e": "AQAB"},
            {"kty": "EC", "kid": "k1", "crv": "secp256k1", "x": b64(32), "y": b64(32)},
            {"kty": "weird"},
            declared_rs.take(),
        ]});
        let (keys, _) = parse_jwks(doc.to_string().as_bytes()).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, vec![es.kid().to_owned(), "rs".to_owned()]);
        // A key that declares RS256 is not usable for PS256 (RFC 7517 §4.4).
        assert_eq!(keys[1].algs, vec![Algorithm::RS256]);
    }

    #[test]
    fn a_document_without_usable_keys_is_refused() {
        let doc = br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#;
        assert!(matches!(parse_jwks(doc), Err(FetchError::NoKeys)));
        assert!(matches!(parse_jwks(b"[]"), Err(FetchError::NotJwks)));
    }
}
