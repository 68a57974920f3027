//! The `assertion:` config section and its validation into a running [`AssertionStage`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use http::HeaderName;
use phigate_plugin::{ConfigIssue, StageBuildCtx};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::clock::{Clock, SystemClock};
use crate::keyset::{KeySet, Settings};
use crate::stage::AssertionStage;

/// The longest lifetime an assertion may have, in seconds: it is a bearer credential towards the
/// upstream, so a leaked one must die fast.
pub const MAX_TTL_SECS: u32 = 300;

/// Headers the assertion may not be sent in: credentials, framing and the gateway's own.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "x-request-id",
    "traceparent",
    "tracestate",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "dpop",
];

/// Config of the identity assertion stage (section `assertion:`): for each request with a
/// verified caller, the gateway sends the upstream a short-lived JWS it signed, naming the
/// caller (like Pomerium's `X-Pomerium-Jwt-Assertion`). A value of the header sent by the client
/// is always removed. Upstreams verify it with the JWKS served on the admin port at
/// `/.well-known/phigate/jwks.json`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct AssertionConfig {
    /// The signing key: a PKCS#8 PEM file (`-----BEGIN PRIVATE KEY-----`) holding an Ed25519
    /// key (assertions signed `EdDSA`) or an ECDSA P-256 key (`ES256`). Required; keep it readable
    /// by the gateway only (0600). Re-read on SIGHUP; a key that fails to load then keeps the
    /// current one (logged, counted in `phigate_assertion_key_reloads_total{outcome="rejected"}`).
    pub key_path: PathBuf,
    /// The `iss` of every assertion, for example `https://phigate.example`. Required.
    pub issuer: String,
    /// The request header the assertion is sent in (lowercase). Default `x-phigate-assertion`.
    #[serde(default = "default_header")]
    pub header: String,
    /// Lifetime of an assertion, in seconds; never past the token's own expiry. At most 300.
    /// Default 60. A signed assertion is reused for the same caller and audience until half its
    /// lifetime has passed.
    #[serde(default = "default_ttl_secs")]
    pub ttl_secs: u32,
    /// The `kid` of the signing key in assertions and the JWKS. Default: the key's RFC 7638
    /// thumbprint (base64url SHA-256), which changes with the key. Keys in
    /// `previous_public_keys` are always listed under their thumbprint.
    #[serde(default)]
    pub kid: Option<String>,
    /// SPKI PEM files (`-----BEGIN PUBLIC KEY-----`) of earlier signing keys, kept in the JWKS
    /// during a rotation so assertions signed before it still verify. Re-read on SIGHUP with the
    /// key. Default: none. (The key replaced by a SIGHUP reload also stays in the JWKS until the
    /// next rotation or restart.)
    #[serde(default)]
    pub previous_public_keys: Vec<PathBuf>,
    /// Per-route settings, keyed by route name: `audience` (the `aud` of assertions on the route;
    /// default the name of the route's upstream) and `enabled` (default true; false sends none,
    /// the client's header is still removed). A route not listed gets assertions for its
    /// upstream's name. Example: `routes: { fhir: { audience: https://ehr.internal }, metrics: { enabled: false } }`.
    #[serde(default)]
    pub routes: BTreeMap<String, RouteAssertionConfig>,
}

/// Assertion settings of one route.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RouteAssertionConfig {
    /// The `aud` of assertions sent on this route. Default: the name of the route's upstream.
    #[serde(default)]
    pub audience: Option<String>,
    /// Send assertions on this route. When false, the header is still removed from client
    /// requests, and none is added. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_header() -> String {
    "x-phigate-assertion".to_owned()
}
fn default_ttl_secs() -> u32 {
    60
}
fn default_true() -> bool {
    true
}

impl AssertionConfig {
    /// A config with every default, for tests and the bench.
    pub fn new(key_path: impl Into<PathBuf>, issuer: impl Into<String>) -> Self {
        AssertionConfig {
            key_path: key_path.into(),
            issuer: issuer.into(),
            header: default_header(),
            ttl_secs: default_ttl_secs(),
            kid: None,
            previous_public_keys: Vec::new(),
            routes: BTreeMap::new(),
        }
    }

    /// Validates the section and loads the keys.
    ///
    /// # Errors
    /// Every problem found, each with its key path (`key_path`, `previous_public_keys[1]`,
    /// `routes.api.audience`, ...); messages never contain key material.
    pub fn build(self, ctx: &StageBuildCtx<'_>) -> Result<AssertionStage, Vec<ConfigIssue>> {
        self.build_with_clock(ctx, Arc::new(SystemClock))
    }

    /// [`AssertionConfig::build`] with an injected clock (tests, benches).
    ///
    /// # Errors
    /// As [`AssertionConfig::build`].
    pub fn build_with_clock(
        self,
        ctx: &StageBuildCtx<'_>,
        clock: Arc<dyn Clock>,
    ) -> Result<AssertionStage, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let settings = self.settings(ctx, &mut issues);
        match KeySet::load(&settings, |_| None) {
            Ok(keys) if issues.is_empty() => Ok(AssertionStage::new(settings, keys, clock)),
            Ok(_) => Err(issues),
            Err((key, e)) => {
                issues.push(ConfigIssue::new(key, e.reason()));
                Err(issues)
            }
        }
    }

    /// The runtime settings; problems go to `issues` (an invalid header falls back to the
    /// default so that the key files are still checked and reported in the same run).
    fn settings(&self, ctx: &StageBuildCtx<'_>, issues: &mut Vec<ConfigIssue>) -> Settings {
        let mut bad = |k: String, m: &str| issues.push(ConfigIssue::new(k, m));
        if self.issuer.trim().is_empty() {
            bad("issuer".into(), "must not be empty");
        }
        let header = HeaderName::from_bytes(self.header.as_bytes()).ok();
        match &header {
            None => bad("header".into(), "is not a valid header name"),
            Some(h) if RESERVED_HEADERS.contains(&h.as_str()) => bad(
                "header".into(),
                "is a credential, framing or gateway header and cannot carry the assertion",
            ),
            Some(_) => {}
        }
        if self.ttl_secs == 0 || self.ttl_secs > MAX_TTL_SECS {
            bad("ttl_secs".into(), "must be between 1 and 300");
        }
        if self.kid.as_deref().is_some_and(|k| k.is_empty() || !k.bytes().all(|b| b.is_ascii_graphic())) {
            bad("kid".into(), "must be non-empty printable ASCII without spaces");
        }
        for (name, route) in &self.routes {
            if ctx.route_index(name).is_none() {
                bad(format!("routes.{name}"), "no route with this name");
            }
            if route.audience.as_deref().is_some_and(|a| a.trim().is_empty()) {
                bad(format!("routes.{name}.audience"), "must not be empty");
            }
        }
        let audiences = ctx
            .routes
            .iter()
            .map(|r| match self.routes.get(&*r.name) {
                Some(rc) if !rc.enabled => None,
                Some(RouteAssertionConfig { audience: Some(a), .. }) => Some(Arc::from(a.as_str())),
                _ => Some(r.upstream.clone()),
            })
            .collect();
        Settings {
            issuer: self.issuer.clone(),
            header: header.unwrap_or_else(|| HeaderName::from_static("x-phigate-assertion")),
            ttl_secs: i64::from(self.ttl_secs),
            audiences,
            key_path: ctx.config_dir.join(&self.key_path),
            previous: self.previous_public_keys.iter().map(|p| ctx.config_dir.join(p)).collect(),
            kid: self.kid.clone(),
        }
    }
}
