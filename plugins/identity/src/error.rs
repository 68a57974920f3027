//! Why a request was refused, and the one place that turns a refusal into a [`Denial`] with the
//! exact RFC 6750 / RFC 9470 challenge.
//!
//! Causes are static strings: they never contain the token, a claim value or a header value.

use http::header::WWW_AUTHENTICATE;
use http::HeaderValue;
use phigate_plugin::{Denial, ErrorCode};

/// A refusal reason (log-only detail; the client sees the code and the challenge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    /// No bearer credentials (RFC 6750 §3.1: the challenge carries no error code).
    #[error("no bearer token presented")]
    Missing,
    /// The request presents the token in a way we do not accept (RFC 6750 `invalid_request`).
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// The token is not a well-formed JWT access token.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` lies in the future.
    #[error("token not yet valid: {0}")]
    NotYetValid(&'static str),
    /// Signature, algorithm or key selection rejected.
    #[error("signature rejected: {0}")]
    Signature(&'static str),
    /// `iss` is not a configured issuer.
    #[error("issuer not configured")]
    UnknownIssuer,
    /// No configured audience in the audience claim.
    #[error("audience not accepted")]
    Audience,
    /// RFC 8705 binding failed.
    #[error("certificate binding failed: {0}")]
    Binding(&'static str),
    /// The DPoP proof (RFC 9449) of a DPoP-bound token is missing or fails a check.
    #[error("DPoP proof rejected: {0}")]
    DpopProof(&'static str),
    /// The proof lacks the server nonce the route requires, or carries an unknown or expired
    /// one (RFC 9449 §9).
    #[error("DPoP nonce rejected: {0}")]
    DpopNonce(&'static str),
    /// The route requires a DPoP-bound token and this one is not.
    #[error("route requires a DPoP-bound token")]
    DpopRequired,
    /// The shared DPoP replay memory cannot answer and `failure_mode` is `deny`.
    #[error("shared DPoP replay memory unavailable")]
    ReplayUnavailable,
    /// Automatic logoff (HIPAA §164.312(a)(2)(iii)).
    #[error("session idle timeout")]
    IdleTimeout,
    /// The token does not prove MFA (RFC 9470 step-up).
    #[error("multi-factor authentication not proven")]
    MfaRequired,
    /// `auth_time` missing or older than the route allows (RFC 9470 step-up).
    #[error("authentication too old or auth_time missing")]
    AuthTooOld,
    /// The issuer's keys are unavailable or expired: we cannot verify anything (503).
    #[error("issuer keys unavailable")]
    KeysUnavailable,
    /// The authorization server says the token is not active, or its answer does not describe
    /// an access token of this issuer (RFC 7662).
    #[error("token not active: {0}")]
    Inactive(&'static str),
    /// The introspection endpoint gave no usable answer in time (503: retry).
    #[error("introspection endpoint unavailable")]
    IntrospectionUnavailable,
}

impl AuthError {
    /// The stable code.
    pub(crate) fn code(self) -> ErrorCode {
        match self {
            AuthError::Missing => ErrorCode::TokenMissing,
            AuthError::InvalidRequest(_) | AuthError::Malformed(_) => ErrorCode::TokenMalformed,
            AuthError::Expired => ErrorCode::TokenExpired,
            AuthError::NotYetValid(_) => ErrorCode::TokenNotYetValid,
            AuthError::Signature(_) => ErrorCode::TokenSignatureInvalid,
            AuthError::UnknownIssuer => ErrorCode::TokenIssuerUnknown,
            AuthError::Audience => ErrorCode::TokenAudienceInvalid,
            AuthError::Binding(_) => ErrorCode::TokenBindingMismatch,
            AuthError::DpopProof(_) => ErrorCode::DpopProofInvalid,
            AuthError::DpopNonce(_) => ErrorCode::DpopNonceRequired,
            AuthError::DpopRequired => ErrorCode::DpopRequired,
            AuthError::IdleTimeout => ErrorCode::SessionIdleTimeout,
            AuthError::MfaRequired => ErrorCode::MfaRequired,
            AuthError::AuthTooOld => ErrorCode::AuthTooOld,
            AuthError::Inactive(_) => ErrorCode::TokenInactive,
            AuthError::KeysUnavailable
            | AuthError::ReplayUnavailable
            | AuthError::IntrospectionUnavailable => ErrorCode::NotReady,
        }
    }
}

/// The `algs` a DPoP proof may use (RFC 9449 §7.1 challenge parameter).
const DPOP_ALGS: &str = "ES256 ES384 EdDSA PS256 PS384 PS512 RS256 RS384 RS512";

/// Challenge header values, built once (they depend only on the code and the route).
#[derive(Debug, Clone)]
pub(crate) struct Challenges {
    /// For a request without credentials: `Bearer`, or `DPoP algs=…` where the route requires
    /// DPoP-bound tokens.
    pub(crate) missing: HeaderValue,
    /// For `mfa_required` on this route.
    pub(crate) mfa: HeaderValue,
    /// For `auth_too_old` on this route.
    pub(crate) age: HeaderValue,
}

impl Challenges {
    /// RFC 9470 §3: `acr_values` (space-separated, quoted) and `max_age` (quoted seconds) tell
    /// the client what the new token must prove. Values come from config and were checked to be
    /// quotable when the config was built.
    pub(crate) fn for_route(acr_values: &[String], max_age_secs: Option<u64>, dpop: bool) -> Option<Self> {
        let mk = |desc: &str| {
            let mut s =
                format!("Bearer error=\"insufficient_user_authentication\", error_description=\"{desc}\"");
            if !acr_values.is_empty() {
                s.push_str(&format!(", acr_values=\"{}\"", acr_values.join(" ")));
            }
            if let Some(age) = max_age_secs {
                s.push_str(&format!(", max_age=\"{age}\""));
            }
            HeaderValue::from_str(&s).ok()
        };
        let missing = if dpop {
            HeaderValue::from_str(&format!("DPoP algs=\"{DPOP_ALGS}\"")).ok()?
        } else {
            HeaderValue::from_static("Bearer")
        };
        Some(Challenges {
            missing,
            mfa: mk(ErrorCode::MfaRequired.message())?,
            age: mk(ErrorCode::AuthTooOld.message())?,
        })
    }
}

/// Whether a config string may appear inside a quoted challenge parameter (RFC 6750 §3:
/// `%x20-21 / %x23-5B / %x5D-7E`).
pub(crate) fn quotable(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

/// Turns a refusal into the denial the gateway sends.
pub(crate) fn denial(err: AuthError, challenges: &Challenges) -> Denial {
    let code = err.code();
    let header = match err {
        AuthError::Missing => Some(challenges.missing.clone()),
        // RFC 9449 §7.1: DPoP errors are answered with the DPoP scheme and the accepted `algs`.
        AuthError::DpopProof(_) => Some(dpop_challenge("invalid_dpop_proof", code)),
        AuthError::DpopRequired => Some(dpop_challenge("invalid_token", code)),
        // §9: the caller adds the fresh nonce (`DPoP-Nonce`) to this challenge.
        AuthError::DpopNonce(_) => Some(dpop_challenge("use_dpop_nonce", code)),
        AuthError::InvalidRequest(_) => Some(static_challenge("invalid_request", code)),
        AuthError::MfaRequired => Some(challenges.mfa.clone()),
        AuthError::AuthTooOld => Some(challenges.age.clone()),
        // Not the client's fault: no challenge, a 503 the client may retry.
        AuthError::KeysUnavailable | AuthError::ReplayUnavailable | AuthError::IntrospectionUnavailable => {
            None
        }
        _ => Some(static_challenge("invalid_token", code)),
    };
    let d = Denial::new(code).with_cause(err.to_string());
    match header {
        Some(h) => d.with_header(WWW_AUTHENTICATE, h),
        None => d,
    }
}

fn dpop_challenge(error: &str, code: ErrorCode) -> HeaderValue {
    let s = format!("DPoP error=\"{error}\", error_description=\"{}\", algs=\"{DPOP_ALGS}\"", code.message());
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("DPoP"))
}

fn static_challenge(error: &str, code: ErrorCode) -> HeaderValue {
    let s = format!("Bearer error=\"{error}\", error_description=\"{}\"", code.message());
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}
