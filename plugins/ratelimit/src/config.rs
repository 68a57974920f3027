//! The `rate_limits:` config section: typed, documented, validated all at once by
//! [`RateLimitConfig::build`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use phigate_plugin::{ConfigIssue, StageBuildCtx};
use phigate_redis::ConfigKeys;
pub use phigate_redis::RedisTlsConfig;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::key::Dims;
use crate::limit::{Limit, Rate};
use crate::stage::{RateLimitStage, RedisParts, StageParts};

/// Rate limits (stage `ratelimit`, after identity): every request must pass every limit that
/// applies to it, or it is refused with 429 `rate_limited` and `Retry-After`. Limits are GCRA
/// (a token bucket without timers): `requests` per `period_secs` on average, up to `burst` at once.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Where limit state lives: `memory` (per gateway instance) or `redis` (shared by every
    /// replica through one Redis). Default: `memory`.
    #[serde(default)]
    pub backend: BackendKind,
    /// The Redis connection, required with `backend: redis` and refused otherwise.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    /// The limits, checked in this order; the first one exceeded refuses the request (limits
    /// before it have counted the request). At least one. Names must be unique.
    pub limits: Vec<LimitConfig>,
    /// IPv6 client addresses are grouped by this prefix length before keying (one host usually
    /// owns a whole /64, so per-address limits would be trivial to evade). 32..=128. Default: 64.
    #[serde(default = "default_ipv6_prefix_len")]
    pub ipv6_prefix_len: u8,
    /// Add the IETF `RateLimit-Policy` and `RateLimit` headers
    /// (draft-ietf-httpapi-ratelimit-headers) to responses, describing every limit that applied.
    /// Default: false (they disclose the configured quotas).
    #[serde(default)]
    pub response_headers: bool,
    /// How often the in-memory backend forgets keys whose bucket is full again (a forgotten key
    /// behaves exactly like a new one), in seconds. This bounds memory to the keys active in the
    /// last `burst` window plus this interval. 1..=3600. Default: 10.
    #[serde(default = "default_sweep_interval_secs")]
    pub sweep_interval_secs: u64,
}

/// Where limit state lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// In this process (governor, GCRA): each replica enforces the limits on its own share.
    #[default]
    Memory,
    /// In Redis, computed atomically by a Lua script: replicas share one budget per key.
    Redis,
}

/// The Redis backend.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `rediss://[user:password@]host[:port][/db]` for TLS (TLS 1.3; the server certificate must
    /// name `host`), or `redis://...` / `redis+unix:///path` in the clear (only on a link that is
    /// already encrypted: HIPAA asks for encryption in transit inside the network too). The
    /// `#insecure` fragment (no certificate check) is refused. Never logged.
    pub url: String,
    /// Certificates for a `rediss://` URL: the CA to trust instead of the system roots, and a
    /// client certificate for Redis `tls-auth-clients yes`. Refused with `redis://`. Default:
    /// none (the system roots, no client certificate).
    #[serde(default)]
    pub tls: Option<RedisTlsConfig>,
    /// Longest one limit check may take, in milliseconds; past it the check counts as a Redis
    /// failure and `failure_mode` decides. 1..=5000. Default: 50.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Longest a connection attempt may take, in milliseconds. 1..=60000. Default: 1000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// What happens to a request when Redis cannot answer: `deny` (503 `not_ready`, fail closed),
    /// `allow` (forwarded unlimited, counted as `failure_allowed`) or `local` (limited by this
    /// instance alone, counted as `failure_local`). Default: `deny`.
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// Prefix of every key the stage writes. Keys are `<prefix><limit>:<hash>`: the hash hides
    /// principals, tenants and addresses from whoever reads Redis. Default: `phigate:rl:`.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Key for the HMAC-SHA256 that names callers in Redis keys (raw bytes, at least 32; the
    /// same file on every replica sharing the limits, or they stop sharing them). Without it
    /// the hash is a plain SHA-256, which whoever reads Redis (or its backups) can test guesses
    /// against: a subject (often an e-mail address), a tenant, a client address. With it, every
    /// part of the key (principal, tenant, client address, route) is hashed under the key.
    /// Relative to the config file's directory. Changing it starts every limit afresh. Default:
    /// none (plain SHA-256).
    #[serde(default)]
    pub hmac_key_path: Option<PathBuf>,
}

/// What a request gets when the shared backend cannot answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Refuse it (503 `not_ready`, `Retry-After: 1`): fail closed.
    #[default]
    Deny,
    /// Forward it without limiting; counted in
    /// `phigate_ratelimit_decisions_total{result="failure_allowed"}`.
    Allow,
    /// Enforce the limits in this instance's memory until Redis answers again (each replica
    /// then limits only its own traffic: up to N times the limit with N replicas); counted in
    /// `phigate_ratelimit_decisions_total{result="failure_local"}`.
    Local,
}

/// One limit.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Unique name: lowercase letters, digits and `_`, at most 64 (it is a metrics label, a
    /// header token and part of Redis keys).
    pub name: String,
    /// What is counted separately: `principal` (issuer + subject), `tenant` (the principal's
    /// tenant), `client_ip`, `route`, or several joined by `+` (`principal+route`). Requests
    /// without a principal (or tenant) are keyed by client IP instead.
    pub key: String,
    /// Requests allowed per `period_secs`, on average. At least 1.
    pub requests: u32,
    /// The period `requests` are spread over, in seconds. 1..=86400.
    pub period_secs: u32,
    /// Requests allowed at once, when the key has been idle. Default: `requests`.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Only requests on these routes (by name) count. Default: every route.
    #[serde(default)]
    pub routes: Option<Vec<String>>,
    /// Only requests with these methods (`GET`, `POST`, ...) count. Default: every method.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
}

fn default_ipv6_prefix_len() -> u8 {
    64
}
fn default_sweep_interval_secs() -> u64 {
    10
}
fn default_timeout_ms() -> u64 {
    50
}
fn default_connect_timeout_ms() -> u64 {
    1000
}
fn default_key_prefix() -> String {
    "phigate:rl:".to_owned()
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: a debug print of the config must not.
        f.debug_struct("RedisConfig")
            .field("url", &"<redacted>")
            .field("tls", &self.tls)
            .field("timeout_ms", &self.timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("failure_mode", &self.failure_mode)
            .field("key_prefix", &self.key_prefix)
            .field("hmac_key_path", &self.hmac_key_path)
            .finish()
    }
}

impl RedisConfig {
    /// A Redis config with every default, for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            tls: None,
            timeout_ms: default_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            failure_mode: FailureMode::Deny,
            key_prefix: default_key_prefix(),
            hmac_key_path: None,
        }
    }
}

impl LimitConfig {
    /// A limit with no filters and `burst` = `requests`.
    pub fn new(name: &str, key: &str, requests: u32, period_secs: u32) -> Self {
        LimitConfig {
            name: name.to_owned(),
            key: key.to_owned(),
            requests,
            period_secs,
            burst: None,
            routes: None,
            methods: None,
        }
    }
}

impl RateLimitConfig {
    /// An in-memory config with these limits and every other default.
    pub fn new(limits: Vec<LimitConfig>) -> Self {
        RateLimitConfig {
            backend: BackendKind::Memory,
            redis: None,
            limits,
            ipv6_prefix_len: default_ipv6_prefix_len(),
            response_headers: false,
            sweep_interval_secs: default_sweep_interval_secs(),
        }
    }

    /// Validates the section and returns the stage. Reads the files it names (`redis.tls`,
    /// `redis.hmac_key_path`, and for `rediss://` without `tls.ca_path` the system's trusted
    /// roots), so call it from start-up code; connects to nothing: the Redis connection is made
    /// by the stage's background task (the stage is not ready until Redis answers a `PING`).
    ///
    /// # Errors
    /// Every problem in the section at once, each with its key path (`limits[1].routes[0]`).
    /// Messages never echo configured values (the Redis URL may hold a password).
    pub fn build(self, ctx: &StageBuildCtx<'_>) -> Result<RateLimitStage, Vec<ConfigIssue>> {
        self.into_parts(ctx).map(RateLimitStage::new)
    }

    pub(crate) fn into_parts(self, ctx: &StageBuildCtx<'_>) -> Result<StageParts, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut bad = |k: String, m: &str| issues.push(ConfigIssue::new(k, m));
        if !(32..=128).contains(&self.ipv6_prefix_len) {
            bad("ipv6_prefix_len".into(), "must be between 32 and 128");
        }
        if !(1..=3600).contains(&self.sweep_interval_secs) {
            bad("sweep_interval_secs".into(), "must be between 1 and 3600");
        }
        if self.limits.is_empty() {
            bad("limits".into(), "must name at least one limit");
        }
        let mut limits = Vec::with_capacity(self.limits.len());
        for (i, l) in self.limits.iter().enumerate() {
            if let Some(limit) = l.validate(i, ctx, &self.limits[..i], &mut issues) {
                limits.push(limit);
            }
        }
        let redis = self.validate_redis(ctx.config_dir, &mut issues);
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(StageParts {
            limits,
            routes: ctx.routes.len(),
            redis,
            ipv6_prefix_len: self.ipv6_prefix_len,
            response_headers: self.response_headers,
            sweep_interval: Duration::from_secs(self.sweep_interval_secs),
        })
    }

    fn validate_redis(&self, dir: &Path, issues: &mut Vec<ConfigIssue>) -> Option<RedisParts> {
        let cfg = match (self.backend, &self.redis) {
            (BackendKind::Memory, None) => return None,
            (BackendKind::Memory, Some(_)) => {
                issues.push(ConfigIssue::new("redis", "is only used with `backend: redis`"));
                return None;
            }
            (BackendKind::Redis, None) => {
                issues.push(ConfigIssue::new("redis", "is required with `backend: redis`"));
                return None;
            }
            (BackendKind::Redis, Some(cfg)) => cfg,
        };
        let bad = |k: &str, m: &str| ConfigIssue::new(format!("redis.{k}"), m);
        if !(1..=5000).contains(&cfg.timeout_ms) {
            issues.push(bad("timeout_ms", "must be between 1 and 5000"));
        }
        if !(1..=60_000).contains(&cfg.connect_timeout_ms) {
            issues.push(bad("connect_timeout_ms", "must be between 1 and 60000"));
        }
        if cfg.key_prefix.len() > 64 || cfg.key_prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
            issues.push(bad(
                "key_prefix",
                "must be at most 64 characters without spaces or control characters",
            ));
        }
        let keys = ConfigKeys { url: "redis.url", tls: "redis.tls" };
        let client = phigate_redis::client(&cfg.url, cfg.tls.as_ref(), dir, keys, issues);
        let hmac_key = match &cfg.hmac_key_path {
            Some(p) => Some(phigate_redis::read_hmac_key(&dir.join(p), "redis.hmac_key_path", issues)?),
            None => None,
        };
        Some(RedisParts { cfg: cfg.clone(), client: client?, hmac_key })
    }
}

impl LimitConfig {
    fn validate(
        &self,
        i: usize,
        ctx: &StageBuildCtx<'_>,
        earlier: &[LimitConfig],
        issues: &mut Vec<ConfigIssue>,
    ) -> Option<Limit> {
        let before = issues.len();
        let mut bad = |k: &str, m: &str| issues.push(ConfigIssue::new(format!("limits[{i}].{k}"), m));
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !name_ok {
            bad("name", "must be 1-64 lowercase letters, digits or `_`");
        } else if earlier.iter().any(|e| e.name == self.name) {
            bad("name", "is used by an earlier limit");
        }
        let dims = Dims::parse(&self.key).map_err(|m| bad("key", m)).ok();
        let rate = Rate::new(self.requests, self.period_secs, self.burst.unwrap_or(self.requests))
            .map_err(|(k, m)| bad(k, m))
            .ok();
        let routes = self.routes.as_ref().map(|names| {
            let mut idx = Vec::with_capacity(names.len());
            for (j, name) in names.iter().enumerate() {
                match ctx.route_index(name) {
                    Some(r) => idx.push(r),
                    None => bad(&format!("routes[{j}]"), "names no configured route"),
                }
            }
            if names.is_empty() {
                bad("routes", "must name at least one route when present");
            }
            idx
        });
        let methods = self.methods.as_ref().map(|names| {
            let mut out = Vec::with_capacity(names.len());
            for (j, m) in names.iter().enumerate() {
                match parse_method(m) {
                    Some(m) => out.push(m),
                    None => bad(&format!("methods[{j}]"), "is not an HTTP method in upper case"),
                }
            }
            if names.is_empty() {
                bad("methods", "must name at least one method when present");
            }
            out
        });
        if issues.len() != before {
            return None;
        }
        Some(Limit::new(&self.name, dims?, rate?, routes, methods))
    }
}

fn parse_method(m: &str) -> Option<http::Method> {
    const KNOWN: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    KNOWN.contains(&m).then(|| http::Method::from_bytes(m.as_bytes()).ok()).flatten()
}
