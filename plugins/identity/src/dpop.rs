//! DPoP (RFC 9449): a token bound to a client key (`cnf.jkt`) is only good with a proof signed
//! by that key for this very request, so a token copied from a log, a proxy or a compromised
//! upstream is useless on its own (HIPAA §164.312(d), person or entity authentication).
//!
//! The checks of RFC 9449 §4.3, cheapest first: one `DPoP` header of bounded size; a compact JWS
//! with `typ` `dpop+jwt`, an asymmetric `alg` and a public `jwk` (no private members); the key's
//! RFC 7638 thumbprint equals `cnf.jkt`; the signature verifies; `htm`, `htu` and `ath` name
//! this method, URI and token; `iat` is recent; and last, once everything else holds, the `jti`
//! was never seen (remembered for the proof's lifetime). With server nonces configured
//! ([`crate::nonce`]), the proof's `nonce` is checked just before the `jti`.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderMap, HeaderName};
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use moka::sync::Cache;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::{Algorithm, DpopConfig};
use crate::error::AuthError;
use crate::nonce::Nonces;
use crate::{claims, sig, token};

const DPOP: HeaderName = HeaderName::from_static("dpop");

/// JWK members that only a private key has (RFC 7518 §6.2.2, §6.3.2, §6.4): a proof carrying
/// one leaks its key, and is refused.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Longest `jti` accepted (it is hashed, never stored; the bound only limits work).
const MAX_JTI_BYTES: usize = 256;

/// The request a proof must be for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    /// The request method (`htm`).
    pub(crate) method: &'a str,
    /// The `Host` the client addressed (`htu`'s authority).
    pub(crate) host: Option<&'a str>,
    /// The normalized, percent-decoded path (`htu`'s path).
    pub(crate) path: &'a str,
}

/// Proof checking and the replay memory.
pub(crate) struct Dpop {
    max_age: i64,
    skew: i64,
    max_proof_bytes: usize,
    /// SHA-256 of (`cnf.jkt`, `jti`) of every accepted proof, for as long as it could be replayed.
    seen: Cache<[u8; 32], ()>,
    /// RFC 9449 §9 server nonces, when configured.
    nonces: Option<Nonces>,
}

fn bad(why: &'static str) -> AuthError {
    AuthError::DpopProof(why)
}

impl Dpop {
    /// Settings from the `identity.dpop` section (checked by the config build).
    pub(crate) fn new(cfg: &DpopConfig, nonces: Option<Nonces>) -> Self {
        let max_age = i64::try_from(cfg.proof_max_age_secs).unwrap_or(i64::MAX);
        let skew = i64::try_from(cfg.proof_clock_skew_secs).unwrap_or(0);
        Dpop {
            max_age,
            skew,
            max_proof_bytes: cfg.max_proof_bytes,
            seen: Cache::builder()
                .max_capacity(cfg.replay_cache_size)
                .time_to_live(Duration::from_secs(cfg.proof_max_age_secs + cfg.proof_clock_skew_secs + 1))
                .build(),
            nonces,
        }
    }

    /// The server nonces, when configured.
    pub(crate) fn nonces(&self) -> Option<&Nonces> {
        self.nonces.as_ref()
    }

    /// Checks the request's proof for `token`, bound to the key whose thumbprint is `jkt`;
    /// `require_nonce` is the route's `require_dpop_nonce` (used only when nonces are configured).
    /// Returns the proof's fingerprint, SHA-256 of (`jkt`, `jti`), remembered here and claimed in
    /// the shared replay memory when there is one.
    pub(crate) fn check(
        &self,
        headers: &HeaderMap,
        token: &str,
        jkt: &str,
        target: &Target<'_>,
        require_nonce: bool,
        now: i64,
    ) -> Result<[u8; 32], AuthError> {
        let proof = self.one_proof(headers)?;
        let (signing_input, signature) = proof.rsplit_once('.').ok_or(bad("not a compact JWS"))?;
        let (h, p) = signing_input.split_once('.').ok_or(bad("not a compact JWS"))?;
        let header = object(h)?;
        let (alg, jwk) = proof_key(&header, jkt)?;
        verify(alg, jwk, signing_input.as_bytes(), signature)?;
        let claims = object(p)?;
        let jti = self.check_claims(&claims, token, target, now)?;
        self.check_nonce(&claims, require_nonce, now)?;
        let mut h = Sha256::new();
        h.update(jkt.as_bytes());
        h.update([0]);
        h.update(jti.as_bytes());
        let fingerprint: [u8; 32] = h.finalize().into();
        // One atomic insert: of two requests racing with the same proof, one wins.
        if !self.seen.entry(fingerprint).or_insert(()).is_fresh() {
            return Err(bad("proof replayed (jti seen before)"));
        }
        Ok(fingerprint)
    }

    fn one_proof<'h>(&self, headers: &'h HeaderMap) -> Result<&'h str, AuthError> {
        let mut all = headers.get_all(DPOP).iter();
        let proof = all.next().ok_or(bad("no DPoP header"))?;
        if all.next().is_some() {
            return Err(bad("more than one DPoP header"));
        }
        if proof.len() > self.max_proof_bytes {
            return Err(bad("proof larger than max_proof_bytes"));
        }
        proof.to_str().map_err(|_| bad("DPoP header is not visible ASCII"))
    }

    /// Checks the proof's claims for this request and token; returns its `jti`.
    fn check_claims<'c>(
        &self,
        claims: &'c Map<String, Value>,
        token: &str,
        target: &Target<'_>,
        now: i64,
    ) -> Result<&'c str, AuthError> {
        let text =
            |name: &str, missing: &'static str| claims.get(name).and_then(Value::as_str).ok_or(bad(missing));
        let jti = text("jti", "jti missing or not a string")?;
        if jti.is_empty() || jti.len() > MAX_JTI_BYTES {
            return Err(bad("jti empty or too long"));
        }
        if text("htm", "htm missing or not a string")? != target.method {
            return Err(bad("htm is not this request's method"));
        }
        check_htu(text("htu", "htu missing or not a string")?, target)?;
        let iat = claims::numeric_date(claims.get("iat"), "iat not numeric")
            .ok()
            .flatten()
            .ok_or(bad("iat missing or not numeric"))?;
        if iat < now.saturating_sub(self.max_age) {
            return Err(bad("proof too old (iat)"));
        }
        if iat > now.saturating_add(self.skew) {
            return Err(bad("proof issued in the future (iat)"));
        }
        // RFC 9449 §4.2: `ath` is the base64url SHA-256 of the access token's ASCII.
        let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
        if text("ath", "ath missing or not a string")? != ath {
            return Err(bad("ath does not match the access token"));
        }
        Ok(jti)
    }

    /// RFC 9449 §9: checked after the signature (an unsigned nonce proves nothing) and before the
    /// `jti` is remembered, so the client's retry with a fresh nonce is not taken for a replay.
    fn check_nonce(&self, claims: &Map<String, Value>, require: bool, now: i64) -> Result<(), AuthError> {
        let Some(nonces) = &self.nonces else {
            return Ok(());
        };
        match claims.get("nonce") {
            None if require => Err(AuthError::DpopNonce("proof has no nonce")),
            None => Ok(()),
            // A route that does not require nonces still refuses a wrong one: it names a window
            // or key this gateway never used.
            Some(Value::String(n)) => nonces.check(n, now).map_err(AuthError::DpopNonce),
            Some(_) => Err(AuthError::DpopNonce("nonce is not a string")),
        }
    }
}

/// A base64url JSON object segment without duplicate members.
fn object(segment: &str) -> Result<Map<String, Value>, AuthError> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| bad("segment is not base64url"))?;
    token::strict_object(&bytes).map_err(|_| bad("segment is not a JSON object without duplicates"))
}

/// The proof's algorithm and public key, from its own header, once the header is a DPoP header
/// whose key is the one `cnf.jkt` names.
fn proof_key<'h>(
    header: &'h Map<String, Value>,
    jkt: &str,
) -> Result<(Algorithm, &'h Map<String, Value>), AuthError> {
    match header.get("typ").and_then(Value::as_str) {
        Some(t) if t.eq_ignore_ascii_case("dpop+jwt") => {}
        _ => return Err(bad("typ is not dpop+jwt")),
    }
    if header.contains_key("crit") {
        return Err(bad("crit header present"));
    }
    let alg = header.get("alg").and_then(Value::as_str).ok_or(bad("alg missing"))?;
    // Asymmetric algorithms only: `none` and HMAC are refused by name.
    let alg = token::alg(alg).map_err(|_| bad("alg not accepted"))?;
    let Some(Value::Object(raw)) = header.get("jwk") else {
        return Err(bad("jwk missing or not an object"));
    };
    if PRIVATE_MEMBERS.iter().any(|m| raw.contains_key(*m)) {
        return Err(bad("jwk holds private key material"));
    }
    // RFC 7517 §4.2, §4.4: a key restricted to another use or algorithm is not used here.
    if raw.get("use").is_some_and(|u| u != "sig")
        || raw.get("alg").is_some_and(|a| a.as_str() != header.get("alg").and_then(Value::as_str))
    {
        return Err(bad("jwk is restricted to another use or alg"));
    }
    let jwk: Jwk = serde_json::from_value(Value::Object(raw.clone())).map_err(|_| bad("jwk is not a JWK"))?;
    // Compared before any signature work: a proof by any other key fails here, cheaply.
    if jwk.thumbprint(ThumbprintHash::SHA256).ok().as_deref() != Some(jkt) {
        return Err(bad("jwk is not the key the token is bound to"));
    }
    Ok((alg, raw))
}

/// Verifies the proof's signature ([`crate::sig`]): it runs on every request (an
/// access token's is verified once and cached). The key is read from the proof's own `jwk`, whose
/// type and curve must be the algorithm's.
fn verify(
    alg: Algorithm,
    jwk: &Map<String, Value>,
    message: &[u8],
    signature: &str,
) -> Result<(), AuthError> {
    let member = |name: &str| {
        jwk.get(name)
            .and_then(Value::as_str)
            .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
            .ok_or(bad("jwk lacks a key member"))
    };
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| bad("signature is not base64url"))?;
    let ec_point = |size: usize| {
        let (x, y) = (member("x")?, member("y")?);
        if x.len() != size || y.len() != size {
            return Err(bad("jwk coordinates have the wrong size"));
        }
        Ok([&[4u8][..], &x, &y].concat())
    };
    use Algorithm::*;
    // Owned key bytes, decoded from the jwk, that the borrowed `sig::Key` points into.
    let (point, x, n, e);
    let key = match (alg, text("kty"), text("crv")) {
        (ES256, Some("EC"), Some("P-256")) => {
            point = ec_point(32)?;
            sig::Key::Ec(&point)
        }
        (ES384, Some("EC"), Some("P-384")) => {
            point = ec_point(48)?;
            sig::Key::Ec(&point)
        }
        (EdDSA, Some("OKP"), Some("Ed25519")) => {
            x = member("x")?;
            sig::Key::Ed25519(&x)
        }
        (RS256 | RS384 | RS512 | PS256 | PS384 | PS512, Some("RSA"), _) => {
            (n, e) = (member("n")?, member("e")?);
            sig::Key::Rsa { n: &n, e: &e }
        }
        _ => return Err(bad("alg does not fit the jwk")),
    };
    sig::verify(token::jwt_alg(alg), key, message, &signature).map_err(|e| match e {
        sig::SigError::KeyMismatch => bad("jwk key has the wrong size for its alg"),
        sig::SigError::Invalid => bad("signature does not verify with its jwk"),
    })
}

/// `htu` names this request: `https`, the `Host` the client used (port 443 when absent on both
/// sides), and the same path. Query and fragment are not part of the comparison (RFC 9449 §4.3).
fn check_htu(htu: &str, target: &Target<'_>) -> Result<(), AuthError> {
    let base = htu.split(['?', '#']).next().unwrap_or_default();
    let uri: http::Uri = base.parse().map_err(|_| bad("htu is not a URI"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("htu is not https"));
    }
    let authority = uri.authority().ok_or(bad("htu has no host"))?;
    let host: http::uri::Authority =
        target.host.and_then(|h| h.parse().ok()).ok_or(bad("no Host header to match htu"))?;
    let same_host = authority.host().eq_ignore_ascii_case(host.host())
        && authority.port_u16().unwrap_or(443) == host.port_u16().unwrap_or(443);
    if !same_host {
        return Err(bad("htu is for another host"));
    }
    let path = match uri.path() {
        "" => "/",
        p => p,
    };
    let decoded =
        percent_encoding::percent_decode_str(path).decode_utf8().map_err(|_| bad("htu path not UTF-8"))?;
    if decoded != target.path {
        return Err(bad("htu is for another path"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: Option<&'static str>) -> Target<'static> {
        Target { method: "GET", host, path: "/fhir/Patient/a b" }
    }

    #[test]
    fn the_thumbprint_is_rfc_7638_as_in_rfc_9449s_example() {
        // RFC 9449 §6.1: this P-256 key's `cnf.jkt`.
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "EC", "crv": "P-256",
            "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
            "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA"
        }))
        .unwrap();
        assert_eq!(
            jwk.thumbprint(ThumbprintHash::SHA256).unwrap(),
            "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
        );
    }

    #[test]
    fn htu_matches_scheme_host_port_and_decoded_path_ignoring_query() {
        let t = target(Some("API.example.test"));
        check_htu("https://api.example.test/fhir/Patient/a%20b?x=1#f", &t).unwrap();
        check_htu("https://api.example.test:443/fhir/Patient/a%20b", &t).unwrap();
        let on_8443 = target(Some("api.example.test:8443"));
        check_htu("https://api.example.test:8443/fhir/Patient/a%20b", &on_8443).unwrap();
    }

    #[test]
    fn htu_for_another_scheme_host_port_or_path_is_refused() {
        let t = target(Some("api.example.test"));
        for htu in [
            "http://api.example.test/fhir/Patient/a%20b",
            "https://evil.example.test/fhir/Patient/a%20b",
            "https://api.example.test:8443/fhir/Patient/a%20b",
            "https://api.example.test/fhir/Patient/other",
            "/fhir/Patient/a%20b",
            "not a uri",
        ] {
            assert!(check_htu(htu, &t).is_err(), "{htu}");
        }
        assert!(check_htu("https://api.example.test/fhir/Patient/a%20b", &target(None)).is_err());
    }
}
