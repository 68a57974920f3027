//! phigate's identity assertion: a short-lived JWS, signed by the gateway, that tells an upstream
//! who the verified caller is (what Pomerium users get as `X-Pomerium-Jwt-Assertion`).
//!
//! * **Phase**: after policy and the exfiltration watch, before audit.
//!   [`on_request`](phigate_plugin::Stage::on_request) always removes the configured header from
//!   the client's request (a client must never inject an assertion, with or without a token),
//!   then, when the identity stage verified a principal and the route has assertions, adds a
//!   compact JWS (`EdDSA` or `ES256`, following the key) with `iss`, `aud` (per route; default
//!   the upstream's name), `sub`, `iat`, `exp` (at most `ttl_secs`, never past the token's
//!   expiry), `idp` (the token's issuer) and, when present, `tenant`, `roles`, `sid`,
//!   `client_id`, `fhir_user`, `patient`, `amr`, `acr`, `auth_time` and `cnf`.
//! * **Never carries** query values, other headers or body data; **never logs** a subject or a
//!   token. Metric labels are bounded (algorithm, source, reason, outcome).
//! * **Fails closed**: a token that expires now (clock leeway upstream of us) is refused with
//!   401 `token_expired`, a signing failure with 500 `internal_error`; both are counted in
//!   `phigate_assertion_failures_total`.
//! * **Cached**: a signature costs tens of microseconds, so signed assertions are kept in a
//!   bounded moka cache keyed by (principal, incl. session and token expiry; audience) and
//!   reused until half their lifetime has passed.
//! * **JWKS**: [`AssertionStage::jwks_json`] (the gateway serves it on its admin port at
//!   `/.well-known/phigate/jwks.json`): the current key, the key the last reload replaced, and
//!   `previous_public_keys`.
//! * **SIGHUP** ([`reload`](phigate_plugin::Stage::reload)) re-reads the key files off the request
//!   path; a key that fails to load keeps the current one (logged, counted).
//!
//! How an upstream verifies an assertion is in the crate's `README.md`.

mod claims;
mod clock;
mod config;
mod error;
mod keys;
mod keyset;
mod metrics;
mod stage;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{AssertionConfig, RouteAssertionConfig, MAX_TTL_SECS};
pub use error::{KeyError, SignError};
pub use stage::{AssertionStage, ReloadOutcome};

/// The content type of [`AssertionStage::jwks_json`] (RFC 7517 §8.5).
pub const JWKS_CONTENT_TYPE: &str = "application/jwk-set+json";
