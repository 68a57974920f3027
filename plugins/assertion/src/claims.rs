//! The assertion's claims and its compact JWS serialization (RFC 7515 §7.1).
//!
//! Only facts of the verified token go in: who (`sub`, `idp`, `tenant`, `roles`, SMART
//! `fhir_user` and `patient`), how they authenticated (`amr`, `acr`, `auth_time`, the `cnf`
//! binding) and for whom the assertion is (`aud`). Never query values, headers or body data: the
//! assertion is logged by upstreams and must not carry PHI beyond the caller's own identity.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use phigate_plugin::Principal;
use serde::Serialize;

use crate::error::SignError;
use crate::keys::SigningKey;

/// The claims, borrowed from the principal.
#[derive(Debug, Serialize)]
pub(crate) struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    iat: i64,
    exp: i64,
    /// The token's issuer: upstreams that trust several IdPs tell subjects apart with it.
    idp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    roles: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fhir_user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patient: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    amr: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    acr: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<Cnf<'a>>,
}

/// The token's proof-of-possession binding (RFC 7800 `cnf`), so an upstream can see the caller
/// was held to a certificate (RFC 8705) or a DPoP key (RFC 9449), and which.
#[derive(Debug, Serialize)]
struct Cnf<'a> {
    #[serde(rename = "x5t#S256", skip_serializing_if = "Option::is_none")]
    x5t_s256: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jkt: Option<&'a str>,
}

impl<'a> Claims<'a> {
    /// The claims for `p` towards `aud`, valid from `now` for `ttl_secs` but never past the
    /// token's own expiry.
    ///
    /// # Errors
    /// [`SignError::TokenExpired`] when the token expires at or before `now`.
    pub(crate) fn new(
        iss: &'a str,
        aud: &'a str,
        p: &'a Principal,
        now: i64,
        ttl_secs: i64,
    ) -> Result<Self, SignError> {
        let exp = now.saturating_add(ttl_secs).min(p.expires_at);
        if exp <= now {
            return Err(SignError::TokenExpired);
        }
        let cnf = (p.cert_thumbprint.is_some() || p.dpop_jkt.is_some())
            .then_some(Cnf { x5t_s256: p.cert_thumbprint.as_deref(), jkt: p.dpop_jkt.as_deref() });
        Ok(Claims {
            iss,
            aud,
            sub: p.subject.as_str(),
            iat: now,
            exp,
            idp: &p.issuer,
            tenant: p.tenant.as_ref().map(|t| t.as_str()),
            roles: &p.roles,
            sid: p.session_id.as_deref(),
            client_id: p.client_id.as_deref(),
            fhir_user: p.fhir_user.as_deref(),
            patient: p.patient.as_ref().map(|t| t.as_str()),
            amr: &p.amr,
            acr: p.acr.as_deref(),
            auth_time: p.auth_time,
            cnf,
        })
    }

    /// The expiry (`exp`).
    pub(crate) fn exp(&self) -> i64 {
        self.exp
    }
}

/// The base64url JWS protected header for a key: `{"alg","typ":"JWT","kid"}`, computed once per key.
pub(crate) fn encoded_header(alg: &str, kid: &str) -> String {
    let header = serde_json::json!({ "alg": alg, "typ": "JWT", "kid": kid });
    B64.encode(header.to_string())
}

/// The compact JWS `header.payload.signature`.
///
/// # Errors
/// [`SignError::Crypto`] when the key fails to sign.
pub(crate) fn sign(header_b64: &str, claims: &Claims<'_>, key: &SigningKey) -> Result<String, SignError> {
    // Serializing borrowed strings cannot fail; an error here would be a bug, refused as crypto.
    let payload = serde_json::to_vec(claims).map_err(|_| SignError::Crypto)?;
    let mut out = String::with_capacity(header_b64.len() + payload.len() * 4 / 3 + 100);
    out.push_str(header_b64);
    out.push('.');
    B64.encode_string(&payload, &mut out);
    let signature = key.sign(out.as_bytes())?;
    out.push('.');
    B64.encode_string(signature, &mut out);
    Ok(out)
}
