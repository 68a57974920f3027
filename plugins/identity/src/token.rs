//! Parsing and verifying one compact JWS access token.
//!
//! Order matters: cheap structural checks, then the issuer (by exact `iss` string), then the key
//! (by `kid`, from the issuer's own JWKS only), then the signature, and only then the claims, so
//! that a forged token learns nothing about its claims.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::Algorithm;
use crate::error::AuthError;
use crate::sig;

/// The JOSE header fields we read. Key-reference headers are captured only to refuse them.
#[derive(Debug, Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
    #[serde(default)]
    jku: Option<IgnoredAny>,
    #[serde(default)]
    x5u: Option<IgnoredAny>,
    #[serde(default)]
    jwk: Option<IgnoredAny>,
    #[serde(default)]
    x5c: Option<IgnoredAny>,
}

/// A structurally valid token whose signature is not checked yet.
#[derive(Debug)]
pub(crate) struct Parsed<'t> {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<String>,
    pub(crate) typ: Option<String>,
    pub(crate) signing_input: &'t str,
    pub(crate) signature: &'t str,
    pub(crate) claims: Map<String, Value>,
    pub(crate) iss: String,
}

pub(crate) fn alg(s: &str) -> Result<Algorithm, AuthError> {
    use Algorithm::*;
    // Exact, case-sensitive names (RFC 7518 §3.1). `none`, `None`, `NONE`, HS*, anything else:
    // refused here, before a key is even looked up.
    Ok(match s {
        "RS256" => RS256,
        "RS384" => RS384,
        "RS512" => RS512,
        "PS256" => PS256,
        "PS384" => PS384,
        "PS512" => PS512,
        "ES256" => ES256,
        "ES384" => ES384,
        "EdDSA" => EdDSA,
        _ => return Err(AuthError::Signature("algorithm not accepted")),
    })
}

fn b64(part: &str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| AuthError::Malformed("segment is not base64url"))
}

/// Splits and decodes the token, and applies the header rules.
pub(crate) fn parse(token: &str) -> Result<Parsed<'_>, AuthError> {
    let (signing_input, signature) =
        token.rsplit_once('.').ok_or(AuthError::Malformed("not a compact JWS"))?;
    let (h, p) = signing_input.split_once('.').ok_or(AuthError::Malformed("not a compact JWS"))?;
    if p.contains('.') || h.is_empty() || p.is_empty() || signature.is_empty() {
        return Err(AuthError::Malformed("not a compact JWS"));
    }
    let header: RawHeader =
        serde_json::from_slice(&b64(h)?).map_err(|_| AuthError::Malformed("header is not a JOSE header"))?;
    // RFC 7515 §4.1.11: we implement no extensions, so any `crit` makes the token invalid.
    if header.crit.is_some() {
        return Err(AuthError::Malformed("crit header present"));
    }
    // Keys come from the issuer's configured JWKS only; a token naming its own key or key URL
    // is an attack (CVE-2018-0114 style embedded jwk, jku/x5u SSRF).
    if header.jku.is_some() || header.x5u.is_some() || header.jwk.is_some() || header.x5c.is_some() {
        return Err(AuthError::Signature("key reference header present"));
    }
    let alg = alg(&header.alg)?;
    let claims = strict_object(&b64(p)?)?;
    let iss = match claims.get("iss") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(AuthError::Malformed("iss is not a string")),
        None => return Err(AuthError::Malformed("iss missing")),
    };
    Ok(Parsed { alg, kid: header.kid, typ: header.typ, signing_input, signature, claims, iss })
}

/// A JSON object with no duplicate member names: two `iss` or two `exp` would let two parsers
/// (the IdP's, ours) disagree about what was signed (RFC 7519 §4 says reject or use the last;
/// we reject).
pub(crate) fn strict_object(bytes: &[u8]) -> Result<Map<String, Value>, AuthError> {
    struct Strict(Map<String, Value>);
    impl<'de> Deserialize<'de> for Strict {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Strict;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Strict, A::Error> {
                    let mut m = Map::new();
                    while let Some((k, v)) = a.next_entry::<String, Value>()? {
                        if m.insert(k, v).is_some() {
                            return Err(serde::de::Error::custom("duplicate claim"));
                        }
                    }
                    Ok(Strict(m))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_slice::<Strict>(bytes)
        .map(|s| s.0)
        .map_err(|_| AuthError::Malformed("payload is not a JSON object without duplicates"))
}

/// Verifies the signature with [`crate::sig`] directly: the process-wide jsonwebtoken
/// provider is not consulted, so nothing installed elsewhere changes how tokens are checked.
pub(crate) fn verify_signature(p: &Parsed<'_>, key: &jsonwebtoken::DecodingKey) -> Result<(), AuthError> {
    const INVALID: AuthError = AuthError::Signature("signature does not verify");
    // Room for a 4096-bit RSA signature and base64's rounding; anything longer is refused
    // here or by `sig` (no RSA modulus above 4096 bits), with no allocation either way.
    let mut buf = [0u8; 520];
    let len = URL_SAFE_NO_PAD.decode_slice(p.signature, &mut buf).map_err(|_| INVALID)?;
    let signature = buf.get(..len).ok_or(INVALID)?;
    sig::verify(jwt_alg(p.alg), sig::Key::of(key), p.signing_input.as_bytes(), signature).map_err(|_| INVALID)
}

/// The `jsonwebtoken` name of an accepted algorithm.
pub(crate) fn jwt_alg(alg: Algorithm) -> jsonwebtoken::Algorithm {
    match alg {
        Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        Algorithm::RS384 => jsonwebtoken::Algorithm::RS384,
        Algorithm::RS512 => jsonwebtoken::Algorithm::RS512,
        Algorithm::PS256 => jsonwebtoken::Algorithm::PS256,
        Algorithm::PS384 => jsonwebtoken::Algorithm::PS384,
        Algorithm::PS512 => jsonwebtoken::Algorithm::PS512,
        Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        Algorithm::ES384 => jsonwebtoken::Algorithm::ES384,
        Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
    }
}

/// Time claims, checked after the signature: `exp` and `iat` required NumericDates, `nbf`
/// optional. Returns `exp`.
pub(crate) fn check_times(claims: &Map<String, Value>, now: i64, leeway: i64) -> Result<i64, AuthError> {
    use crate::claims::numeric_date;
    let exp =
        numeric_date(claims.get("exp"), "exp not numeric")?.ok_or(AuthError::Malformed("exp missing"))?;
    let iat =
        numeric_date(claims.get("iat"), "iat not numeric")?.ok_or(AuthError::Malformed("iat missing"))?;
    let nbf = numeric_date(claims.get("nbf"), "nbf not numeric")?;
    if now >= exp.saturating_add(leeway) {
        return Err(AuthError::Expired);
    }
    if nbf.is_some_and(|n| n > now.saturating_add(leeway)) {
        return Err(AuthError::NotYetValid("nbf in the future"));
    }
    if iat > now.saturating_add(leeway) {
        return Err(AuthError::NotYetValid("iat in the future"));
    }
    Ok(exp)
}

/// The audience claim must contain a configured audience (string or array of strings).
pub(crate) fn check_audience(v: Option<&Value>, accepted: &[String]) -> Result<(), AuthError> {
    let ok = match v {
        Some(Value::String(s)) => accepted.iter().any(|a| a == s),
        Some(Value::Array(items)) => {
            items.iter().any(|i| i.as_str().is_some_and(|s| accepted.iter().any(|a| a == s)))
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(AuthError::Audience)
    }
}

/// RFC 9068 §4: `typ` must be `at+jwt` (or `application/at+jwt`), case-insensitively.
pub(crate) fn check_typ(typ: Option<&str>) -> Result<(), AuthError> {
    match typ {
        Some(t) if t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt") => Ok(()),
        _ => Err(AuthError::Malformed("typ is not at+jwt")),
    }
}

/// The SHA-256 of the token: cache and session key (the token itself is never stored).
pub(crate) fn token_hash(token: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes()).into()
}
