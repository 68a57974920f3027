//! The `identity:` config section. Every field's `///` doc is its reference entry.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

/// Bearer-token identity: trusted issuers, validation limits, JWKS refresh, and the per-route
/// authentication requirements (MFA, freshness, certificate binding, forwarding).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Trusted token issuers (each tenant may bring its own IdP). At least one.
    pub issuers: Vec<IssuerConfig>,
    /// Largest accepted token, in bytes; larger tokens are refused before any parsing.
    /// Default 8192.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Entries in the validated-token cache (keyed by SHA-256 of the token, each entry lives no
    /// longer than the token's `exp`). Default 10000.
    #[serde(default = "default_token_cache_size")]
    pub token_cache_size: u64,
    /// JWKS refresh schedule, staleness bound and backoff.
    #[serde(default)]
    pub jwks: JwksRefreshConfig,
    /// DPoP proofs (RFC 9449) for tokens bound to a client key (`cnf.jkt`): how fresh a proof
    /// must be, how many proofs are remembered to refuse replays, and optional server nonces.
    #[serde(default)]
    pub dpop: DpopConfig,
    /// Requirements applied to every route unless the route overrides them.
    #[serde(default)]
    pub defaults: RoutePolicyConfig,
    /// Per-route overrides, keyed by route name; unset fields fall back to `defaults`.
    #[serde(default)]
    pub routes: BTreeMap<String, RouteOverrideConfig>,
    /// Automatic logoff (HIPAA §164.312(a)(2)(iii)): a session (`sid`, else the token) with no
    /// request for this many seconds is refused with `session_idle_timeout` until the user
    /// authenticates again (new `sid` or newer `auth_time`). 0 disables. Default 900.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Sessions tracked for the idle timeout (bounded memory). Default 100000.
    #[serde(default = "default_session_cache_size")]
    pub session_cache_size: u64,
}

/// One trusted issuer.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The exact `iss` string (compared byte for byte; an `iss` that is not a string is refused).
    pub issuer: String,
    /// Accepted audiences: the token's audience claim must contain one of them. At least one.
    pub audiences: Vec<String>,
    /// JWKS endpoint; must be `https`. Exactly one of `jwks_uri` and `jwks_path` is set, or
    /// neither when `introspection` is set (an issuer of opaque tokens only).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// PEM file of CA certificates trusted for `jwks_uri` (relative to the config file).
    /// Default: the Mozilla root set.
    #[serde(default)]
    pub ca_path: Option<PathBuf>,
    /// JWKS file (relative to the config file), reloaded on the refresh schedule.
    #[serde(default)]
    pub jwks_path: Option<PathBuf>,
    /// Accepted signature algorithms. `none` and HMAC cannot be configured.
    /// Default `[RS256, PS256, ES256, EdDSA]`.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated on `exp`, `nbf`, `iat` and `auth_time`, in seconds. Default 30.
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    /// Claim layout of a known IdP; `claims` entries override single fields.
    #[serde(default)]
    pub preset: Option<Preset>,
    /// Claim mapping; unset fields use the preset, then the generic defaults.
    #[serde(default)]
    pub claims: ClaimMappingConfig,
    /// A fixed tenant for every principal of this issuer (instead of `claims.tenant`).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Require the RFC 9068 header `typ: at+jwt` (rejects ID tokens replayed as access tokens).
    /// Default false.
    #[serde(default)]
    pub require_at_jwt_typ: bool,
    /// Claims that must be present with exactly this string value (for example Cognito's
    /// `token_use: access`). Merged over the preset's.
    #[serde(default)]
    pub required_claims: BTreeMap<String, String>,
    /// Token introspection (RFC 7662) for opaque tokens, or to notice revoked JWTs. Default:
    /// absent, tokens are verified locally only.
    #[serde(default)]
    pub introspection: Option<crate::introspect::IntrospectionConfig>,
}

/// A signature algorithm (asymmetric only, by construction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[allow(missing_docs)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// A known IdP's access-token layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// Amazon Cognito user pools.
    Cognito,
    /// Microsoft Entra ID (v2.0 access tokens).
    Entra,
    /// Auth0 (Auth0 or RFC 9068 token profile).
    Auth0,
    /// Okta custom authorization servers.
    Okta,
    /// Keycloak realms.
    Keycloak,
}

/// Where a claim is read: a top-level claim name (taken literally, so namespaced names such as
/// `https://example.com/tenant` work), or `{path: [a, b]}` for a nested claim.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum ClaimPath {
    /// A top-level claim.
    Name(String),
    /// A nested claim, outermost name first.
    Nested {
        /// Object keys from the top level down.
        path: Vec<String>,
    },
}

/// Which claims feed the principal. Unset fields fall back to the preset, then to the generic
/// default named in each field.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimMappingConfig {
    /// Subject. Default `sub`.
    #[serde(default)]
    pub subject: Option<ClaimPath>,
    /// Audience claim checked against `audiences`. Default `aud`.
    #[serde(default)]
    pub audience: Option<ClaimPath>,
    /// Tenant. No default: set it, a preset that has one, or the issuer's fixed `tenant`.
    #[serde(default)]
    pub tenant: Option<ClaimPath>,
    /// Roles or groups (array or single string). Default `roles`.
    #[serde(default)]
    pub roles: Option<ClaimPath>,
    /// Scopes (space-separated string or array). Default `scope`, then `scp`.
    #[serde(default)]
    pub scopes: Option<ClaimPath>,
    /// SMART `fhirUser`. Default `fhirUser`.
    #[serde(default)]
    pub fhir_user: Option<ClaimPath>,
    /// SMART `patient` launch context. Default `patient`.
    #[serde(default)]
    pub patient: Option<ClaimPath>,
    /// Session id (idle timeout key). Default `sid`.
    #[serde(default)]
    pub session_id: Option<ClaimPath>,
    /// OAuth client. Default `client_id`, then `azp`.
    #[serde(default)]
    pub client_id: Option<ClaimPath>,
    /// Authentication methods. Default `amr`.
    #[serde(default)]
    pub amr: Option<ClaimPath>,
    /// Authentication context class (string, or array joined with spaces). Default `acr`.
    #[serde(default)]
    pub acr: Option<ClaimPath>,
    /// Time of authentication (seconds since the epoch). Default `auth_time`.
    #[serde(default)]
    pub auth_time: Option<ClaimPath>,
}

/// JWKS refresh bounds.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwksRefreshConfig {
    /// Shortest refresh interval, in seconds, whatever `Cache-Control` says; also the minimum
    /// spacing of unknown-`kid` refetches per issuer. Default 60.
    #[serde(default = "default_min_refresh_secs")]
    pub min_refresh_secs: u64,
    /// Longest refresh interval, in seconds (used when `Cache-Control` has no `max-age`).
    /// Default 900.
    #[serde(default = "default_max_refresh_secs")]
    pub max_refresh_secs: u64,
    /// How long keys stay usable after their refresh interval ran out while the IdP cannot be
    /// reached, in seconds; after that the issuer is not ready and its tokens get 503. Default 21600.
    #[serde(default = "default_max_stale_secs")]
    pub max_stale_secs: u64,
    /// First retry delay after a failed fetch, in seconds; doubles per failure. Default 1.
    #[serde(default = "default_backoff_initial_secs")]
    pub backoff_initial_secs: u64,
    /// Largest retry delay, in seconds. Default 300.
    #[serde(default = "default_backoff_max_secs")]
    pub backoff_max_secs: u64,
    /// Time limit for one JWKS fetch (connect, TLS, response), in milliseconds. Default 3000.
    #[serde(default = "default_fetch_timeout_ms")]
    pub fetch_timeout_ms: u64,
}

impl Default for JwksRefreshConfig {
    fn default() -> Self {
        JwksRefreshConfig {
            min_refresh_secs: default_min_refresh_secs(),
            max_refresh_secs: default_max_refresh_secs(),
            max_stale_secs: default_max_stale_secs(),
            backoff_initial_secs: default_backoff_initial_secs(),
            backoff_max_secs: default_backoff_max_secs(),
            fetch_timeout_ms: default_fetch_timeout_ms(),
        }
    }
}

/// DPoP proof checks. A token carrying `cnf.jkt` is accepted only as `Authorization: DPoP
/// <token>` with one `DPoP` header: a JWT (`typ` `dpop+jwt`, an asymmetric `alg`, the public
/// `jwk` whose RFC 7638 thumbprint is `cnf.jkt`) signed by that key, for this method (`htm`) and
/// URI (`htu`: `https`, the request's `Host`, its path; query ignored), for this token (`ath`),
/// issued within `proof_max_age_secs`, with a `jti` not seen before. With `nonce` set, proofs
/// must also carry a nonce this gateway issued (RFC 9449 §9, `DPoP-Nonce`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DpopConfig {
    /// How old a proof's `iat` may be, in seconds (also how long its `jti` is remembered).
    /// 1..=300. Default 60.
    #[serde(default = "default_proof_max_age_secs")]
    pub proof_max_age_secs: u64,
    /// How far in the future a proof's `iat` may be (client clock ahead), in seconds. 0..=60.
    /// Default 5.
    #[serde(default = "default_proof_clock_skew_secs")]
    pub proof_clock_skew_secs: u64,
    /// Proofs remembered to refuse a replayed `jti`: at least the proofs this replica accepts
    /// within `proof_max_age_secs` at peak (beyond that the oldest may be forgotten early).
    /// Each replica remembers its own; `shared_replay` adds a memory all replicas share.
    /// Default 262144.
    #[serde(default = "default_replay_cache_size")]
    pub replay_cache_size: u64,
    /// Largest accepted `DPoP` header, in bytes. Default 4096.
    #[serde(default = "default_max_proof_bytes")]
    pub max_proof_bytes: usize,
    /// Server-provided nonces (RFC 9449 §8, §9): a proof must carry a nonce issued by the
    /// gateway within the last one or two `rotation_secs`, so proofs cannot be made ahead of time.
    /// Routes opt out with `require_dpop_nonce: false`. Default: absent, no nonces.
    #[serde(default)]
    pub nonce: Option<DpopNonceConfig>,
    /// Replay memory shared by every replica through Redis (RFC 9449 §11.1): a proof accepted
    /// by one replica is refused by all the others. Default: absent, each replica remembers only
    /// the proofs it accepted itself (a proof captured in flight could then be replayed to
    /// another replica within `proof_max_age_secs`).
    #[serde(default)]
    pub shared_replay: Option<crate::replay::SharedReplayConfig>,
}

/// Stateless DPoP nonces: `base64url(window || HMAC-SHA256(key, window))` with `window` =
/// `unix_time / rotation_secs`. The current and the previous window are accepted, so a nonce is
/// good for between `rotation_secs` and twice that. Every successful DPoP response carries the
/// current nonce in `DPoP-Nonce`; a proof without it (or with an unknown or expired one) gets 401
/// `dpop_nonce_required` with `WWW-Authenticate: DPoP error="use_dpop_nonce"` and a fresh nonce.
/// Every other DPoP refusal (`dpop_proof_invalid`, `dpop_required`) carries the current nonce too,
/// so the client's corrected proof needs no extra round trip.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DpopNonceConfig {
    /// File whose raw bytes are the nonce key (at least 32 bytes; relative to the config file).
    /// Use the same file on every replica, so each accepts the nonces the others issue.
    pub key_path: PathBuf,
    /// How often the issued nonce changes, in seconds. 10..=3600. Default 60.
    #[serde(default = "default_nonce_rotation_secs")]
    pub rotation_secs: u64,
}

fn default_nonce_rotation_secs() -> u64 {
    60
}

impl Default for DpopConfig {
    fn default() -> Self {
        DpopConfig {
            proof_max_age_secs: default_proof_max_age_secs(),
            proof_clock_skew_secs: default_proof_clock_skew_secs(),
            replay_cache_size: default_replay_cache_size(),
            max_proof_bytes: default_max_proof_bytes(),
            nonce: None,
            shared_replay: None,
        }
    }
}

fn default_proof_max_age_secs() -> u64 {
    60
}
fn default_proof_clock_skew_secs() -> u64 {
    5
}
fn default_replay_cache_size() -> u64 {
    262_144
}
fn default_max_proof_bytes() -> usize {
    4096
}

/// What a route requires of the token and what is forwarded upstream.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutePolicyConfig {
    /// Require proof of multi-factor authentication (HIPAA: MFA for any ePHI access).
    /// Default true.
    #[serde(default = "default_true")]
    pub require_mfa: bool,
    /// `amr` values that prove MFA (any one suffices).
    /// Default `[mfa, otp, hwk, swk, sms, fpt, face, pop]`.
    #[serde(default = "default_mfa_amr")]
    pub mfa_amr: Vec<String>,
    /// `acr` values that prove MFA (any one suffices); also sent as `acr_values` in the step-up
    /// challenge. Default none.
    #[serde(default)]
    pub mfa_acr: Vec<String>,
    /// Maximum age of the authentication (`now - auth_time`), in seconds; sent as `max_age` in
    /// the step-up challenge. Default: not checked.
    #[serde(default)]
    pub max_auth_age_secs: Option<u64>,
    /// Refuse tokens that are not certificate-bound (RFC 8705 `cnf.x5t#S256`). Default false.
    #[serde(default)]
    pub require_bound_token: bool,
    /// Refuse tokens that are not DPoP-bound (RFC 9449 `cnf.jkt`) with `dpop_required`. A
    /// DPoP-bound token is always checked against its proof, whatever this says. Default false.
    #[serde(default)]
    pub require_dpop: bool,
    /// When `dpop.nonce` is set: refuse DPoP proofs without a valid server nonce with
    /// `dpop_nonce_required` (RFC 9449 §9). A route set to false still accepts a proof with a
    /// valid nonce and refuses one with an invalid nonce. No effect without `dpop.nonce`.
    /// Default true.
    #[serde(default = "default_true")]
    pub require_dpop_nonce: bool,
    /// Remove the client's `Authorization` header before forwarding. Default false.
    #[serde(default)]
    pub strip_authorization: bool,
    /// Send the subject upstream as `X-Phigate-Subject`. Default false.
    #[serde(default)]
    pub forward_subject_header: bool,
    /// Send the tenant upstream as `X-Phigate-Tenant`. Default false.
    #[serde(default)]
    pub forward_tenant_header: bool,
    /// On a FHIR route, let a request without credentials read the server's capabilities:
    /// `GET [base]/metadata` and `GET [base]/.well-known/smart-configuration`, which SMART apps
    /// read before they have a token (SMART App Launch: the discovery document "SHALL" be
    /// public). Such a request goes on without a principal, and the policy decides it (the
    /// shipped policies allow it as `public_discovery`). A request that does carry a token is
    /// authenticated as usual. Default true.
    #[serde(default = "default_true")]
    pub anonymous_discovery: bool,
}

impl Default for RoutePolicyConfig {
    fn default() -> Self {
        RoutePolicyConfig {
            require_mfa: true,
            mfa_amr: default_mfa_amr(),
            mfa_acr: Vec::new(),
            max_auth_age_secs: None,
            require_bound_token: false,
            require_dpop: false,
            require_dpop_nonce: true,
            strip_authorization: false,
            forward_subject_header: false,
            forward_tenant_header: false,
            anonymous_discovery: true,
        }
    }
}

/// A route's overrides of `defaults` (a `RoutePolicyConfig`); unset fields keep the default.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteOverrideConfig {
    /// Overrides `defaults.require_mfa`.
    #[serde(default)]
    pub require_mfa: Option<bool>,
    /// Overrides `defaults.mfa_amr`.
    #[serde(default)]
    pub mfa_amr: Option<Vec<String>>,
    /// Overrides `defaults.mfa_acr`.
    #[serde(default)]
    pub mfa_acr: Option<Vec<String>>,
    /// Overrides `defaults.max_auth_age_secs`.
    #[serde(default)]
    pub max_auth_age_secs: Option<u64>,
    /// Overrides `defaults.require_bound_token`.
    #[serde(default)]
    pub require_bound_token: Option<bool>,
    /// Overrides `defaults.require_dpop`.
    #[serde(default)]
    pub require_dpop: Option<bool>,
    /// Overrides `defaults.require_dpop_nonce`.
    #[serde(default)]
    pub require_dpop_nonce: Option<bool>,
    /// Overrides `defaults.strip_authorization`.
    #[serde(default)]
    pub strip_authorization: Option<bool>,
    /// Overrides `defaults.forward_subject_header`.
    #[serde(default)]
    pub forward_subject_header: Option<bool>,
    /// Overrides `defaults.forward_tenant_header`.
    #[serde(default)]
    pub forward_tenant_header: Option<bool>,
    /// Overrides `defaults.anonymous_discovery`.
    #[serde(default)]
    pub anonymous_discovery: Option<bool>,
}

impl RouteOverrideConfig {
    /// The effective policy for the route.
    pub(crate) fn apply(&self, d: &RoutePolicyConfig) -> RoutePolicyConfig {
        RoutePolicyConfig {
            require_mfa: self.require_mfa.unwrap_or(d.require_mfa),
            mfa_amr: self.mfa_amr.clone().unwrap_or_else(|| d.mfa_amr.clone()),
            mfa_acr: self.mfa_acr.clone().unwrap_or_else(|| d.mfa_acr.clone()),
            max_auth_age_secs: self.max_auth_age_secs.or(d.max_auth_age_secs),
            require_bound_token: self.require_bound_token.unwrap_or(d.require_bound_token),
            require_dpop: self.require_dpop.unwrap_or(d.require_dpop),
            require_dpop_nonce: self.require_dpop_nonce.unwrap_or(d.require_dpop_nonce),
            strip_authorization: self.strip_authorization.unwrap_or(d.strip_authorization),
            forward_subject_header: self.forward_subject_header.unwrap_or(d.forward_subject_header),
            anonymous_discovery: self.anonymous_discovery.unwrap_or(d.anonymous_discovery),
            forward_tenant_header: self.forward_tenant_header.unwrap_or(d.forward_tenant_header),
        }
    }
}

fn default_max_token_bytes() -> usize {
    8192
}
fn default_token_cache_size() -> u64 {
    10_000
}
fn default_idle_timeout_secs() -> u64 {
    900
}
fn default_session_cache_size() -> u64 {
    100_000
}
fn default_algorithms() -> Vec<Algorithm> {
    vec![Algorithm::RS256, Algorithm::PS256, Algorithm::ES256, Algorithm::EdDSA]
}
fn default_leeway_secs() -> u64 {
    30
}
fn default_min_refresh_secs() -> u64 {
    60
}
fn default_max_refresh_secs() -> u64 {
    900
}
fn default_max_stale_secs() -> u64 {
    21_600
}
fn default_backoff_initial_secs() -> u64 {
    1
}
fn default_backoff_max_secs() -> u64 {
    300
}
fn default_fetch_timeout_ms() -> u64 {
    3000
}
fn default_true() -> bool {
    true
}
fn default_mfa_amr() -> Vec<String> {
    // RFC 8176 method values that involve a second factor or a possession/inherence factor.
    ["mfa", "otp", "hwk", "swk", "sms", "fpt", "face", "pop"].into_iter().map(String::from).collect()
}
