//! The identity stage of phigate (pipeline step 3, after normalization and classification).
//!
//! **What it decides.** A request carries exactly one `Authorization: Bearer <JWT>` header. The
//! token is verified against its issuer's JWKS (asymmetric algorithms only), its time, audience
//! and issuer claims are checked, and it becomes a typed [`phigate_plugin::Principal`] on
//! `ctx.principal` (and `ctx.tenant` when the route did not name one). Then, per request and per
//! route: RFC 8705 certificate binding, RFC 9449 DPoP (a token bound to a client key by
//! `cnf.jkt` is accepted only as `Authorization: DPoP <JWT>` with a fresh, single-use proof signed
//! by that key for this method, URI and token; a route may require DPoP-bound tokens), automatic
//! logoff after idle time, MFA (`amr`/`acr`) and authentication age (`auth_time`).
//!
//! **DPoP nonces (RFC 9449 §8, §9).** Optional (`dpop.nonce`): proofs must then also carry a
//! nonce the gateway issued, so a key stolen for a moment (XSS) cannot be used to make proofs for
//! later. Nonces are stateless — `base64url(window || HMAC-SHA256(key, window))`, `window` =
//! `unix_time / rotation_secs`, the current and previous window accepted — so replicas sharing
//! the key file accept each other's. Every successful DPoP response carries the current nonce in
//! `DPoP-Nonce` (made once per window and cached); a proof without one, or with an unknown,
//! forged or expired one, gets 401 `dpop_nonce_required` with
//! `WWW-Authenticate: DPoP error="use_dpop_nonce"` and a fresh `DPoP-Nonce`; the other DPoP
//! refusals (`dpop_proof_invalid`, `dpop_required`) carry it as well. Routes require the
//! nonce by default once it is configured (`require_dpop_nonce: false` opts a route out; a nonce
//! presented there is still checked). The `jti` replay memory is unchanged.
//!
//! **Shared replay memory (RFC 9449 §11.1).** Each replica remembers the proofs it accepted.
//! With `dpop.shared_replay`, a proof that passed every local check is also claimed in a Redis
//! all replicas share (`SET <prefix><SHA-256 of jkt and jti> 1 NX PX <proof lifetime>`), so a
//! proof captured on its way to one replica is refused by every other. The connection is kept by
//! [`phigate_redis::Keeper`] (requests never wait to connect); when Redis cannot answer,
//! `failure_mode: deny` (default) refuses DPoP requests with 503 `not_ready` and
//! `Retry-After: 1`, and `local` falls back to the replica's own memory. Bearer-only traffic
//! never touches Redis.
//!
//! **Opaque tokens and revocation (RFC 7662).** An issuer with `introspection` asks its
//! authorization server about tokens the gateway cannot verify itself (tokens that are not JWTs;
//! at most one issuer takes them) and, with `tokens: jwt`/`all`, about its JWTs once they pass
//! every local check, so a revoked JWT is refused within `cache_ttl_secs`. The answer is read
//! through the issuer's claim mapping like a payload (audience, required claims, `cnf` binding,
//! MFA all apply); `active: false` is 401 `token_inactive`; no answer within `timeout_ms` is 503
//! `not_ready` with `Retry-After`. Concurrent requests with one new token share one call, and a
//! refused token is not asked about again for `refused_cache_ttl_secs`.
//!
//! **How it fails.** Closed. Every refusal is a [`phigate_plugin::Denial`] with a stable code and
//! the exact challenge: RFC 6750 `invalid_request`/`invalid_token`, the RFC 9470 step-up
//! challenge (`insufficient_user_authentication`, `acr_values`, `max_age`), or RFC 9449's
//! `DPoP error="invalid_dpop_proof"` (or `use_dpop_nonce`) with the accepted `algs`. An issuer whose keys
//! are gone (IdP unreachable beyond `max_stale_secs`) answers 503 `not_ready`.
//!
//! **What it never logs.** Tokens, claim values, header values. Causes are fixed strings; the
//! caches are keyed by the token's SHA-256.
//!
//! **Wiring.** [`IdentityConfig::build`] → [`IdentityStage`] (a [`phigate_plugin::Stage`]); spawn
//! its `background_tasks()` (JWKS refreshers, and the shared replay memory's connection keeper). [`dev::DevIssuer`] signs tokens for the demo and
//! tests.

mod build;
mod claims;
mod clock;
mod config;
pub mod dev;
mod dpop;
mod error;
mod fetch;
mod introspect;
mod jwks;
mod metrics;
mod nonce;
mod presets;
mod provider;
mod replay;
mod session;
mod sig;
mod stage;
mod token;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    Algorithm, ClaimMappingConfig, ClaimPath, DpopConfig, DpopNonceConfig, IdentityConfig, IssuerConfig,
    JwksRefreshConfig, Preset, RouteOverrideConfig, RoutePolicyConfig,
};
pub use introspect::config::{ClientAuth, IntrospectTokens, IntrospectionConfig};
pub use replay::{ReplayFailureMode, SharedReplayConfig};
pub use stage::IdentityStage;

impl IdentityStage {
    /// Runs one JWKS refresh for every issuer now and returns each issuer's next delay (zero for
    /// an issuer without a JWKS). The
    /// background tasks do this on their own schedule; this exists for tests and for a gateway
    /// that wants keys before it opens its listener.
    pub async fn refresh_jwks_now(&self) -> Vec<std::time::Duration> {
        let mut out = Vec::with_capacity(self.issuers.len());
        for i in &self.issuers {
            out.push(match &i.keys {
                Some(k) => k.refresh_once().await,
                None => std::time::Duration::ZERO,
            });
        }
        out
    }

    /// One receiver per issuer (config order) that changes after every finished JWKS fetch
    /// attempt, scheduled or not. Lets tests and operators' tooling wait for a refresh instead of
    /// guessing how long it takes.
    pub fn jwks_fetch_attempts(&self) -> Vec<tokio::sync::watch::Receiver<u64>> {
        self.issuers
            .iter()
            .map(|i| match &i.keys {
                Some(k) => k.attempts(),
                // An introspection-only issuer never fetches: a receiver that never changes.
                None => tokio::sync::watch::channel(0).1,
            })
            .collect()
    }
}
