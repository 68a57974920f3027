//! The `exfil.shared` sub-section: blocks shared between gateway replicas through Redis.

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use phigate_plugin::ConfigIssue;
use phigate_redis::{ConfigKeys, RedisTlsConfig};
use schemars::JsonSchema;
use serde::Deserialize;

use super::resolve;

/// Shares `action: block` decisions between the gateway's replicas through Redis, so that a
/// principal blocked by one replica is refused by all of them, and (`windows`) counts the
/// detectors' windows over all replicas, so that a principal whose requests are spread over
/// them is still seen. Detection, not authorization: with Redis unreachable every replica still
/// counts and blocks what it sees itself.
#[derive(Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SharedConfig {
    /// `rediss://[user:password@]host[:port][/db]` for TLS (TLS 1.3; the server certificate must
    /// name `host`), or `redis://...` / `redis+unix:///path` in the clear (only on a link that is
    /// already encrypted: HIPAA asks for encryption in transit inside the network too). The
    /// `#insecure` fragment (no certificate check) is refused. Never logged. Required.
    pub redis_url: String,
    /// Certificates for a `rediss://` URL: the CA to trust instead of the system roots, and a
    /// client certificate for Redis `tls-auth-clients yes`. Refused with `redis://`. Default:
    /// none (the system roots, read when the config is loaded; no client certificate).
    #[serde(default)]
    pub tls: Option<RedisTlsConfig>,
    /// Key for the HMAC-SHA256 that names a principal in Redis (raw bytes, at least 32; the same
    /// file on every replica). Redis only ever sees this keyed hash of issuer and subject, never
    /// the identity. Relative to the config file's directory. Required.
    pub hmac_key_path: PathBuf,
    /// Pub/sub channel the blocks are announced on. Default: `phigate:exfil:blocks`.
    #[serde(default = "default_channel")]
    pub channel: String,
    /// Prefix of the keys that hold blocks in force (`<prefix><hash>`, expiring with the block),
    /// read by replicas that start later. No glob characters (`*?[]\`). Default:
    /// `phigate:exfil:block:`.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Count the windows of `distinct_patients`, `bulk_paging`, `id_enumeration`,
    /// `rate_denials`, `restricted_records` and `bulk_exports` over every replica too: each
    /// replica adds what it counted to Redis every 250 ms (per-principal buckets of a sixteenth
    /// of the window, distinct patients as HyperLogLogs of keyed hashes: Redis never sees a
    /// patient id), and the replica whose addition takes the total over the threshold raises the
    /// alert (`counted_on: all_replicas`), once per window over all replicas; a `block` is then
    /// shared like any other. Each replica's own windows still alert at once
    /// (`counted_on: replica`). Default: true.
    #[serde(default = "default_windows")]
    pub windows: bool,
    /// Prefix of the window keys (`<prefix>{<hash>}:<rule>:<bucket>`, expiring with the window).
    /// Must differ from `key_prefix` and not start with it. No glob characters. Default:
    /// `phigate:exfil:window:`.
    #[serde(default = "default_window_prefix")]
    pub window_prefix: String,
    /// Longest one Redis command or connection attempt may take, in milliseconds; past it the
    /// connection is dropped and re-established with backoff. Requests never wait for Redis.
    /// 1..=60000. Default: 1000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_channel() -> String {
    "phigate:exfil:blocks".to_owned()
}
fn default_key_prefix() -> String {
    "phigate:exfil:block:".to_owned()
}
fn default_timeout_ms() -> u64 {
    1000
}
fn default_windows() -> bool {
    true
}
fn default_window_prefix() -> String {
    "phigate:exfil:window:".to_owned()
}

impl std::fmt::Debug for SharedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: a debug print of the config must not.
        f.debug_struct("SharedConfig")
            .field("redis_url", &"<redacted>")
            .field("tls", &self.tls)
            .field("hmac_key_path", &self.hmac_key_path)
            .field("channel", &self.channel)
            .field("key_prefix", &self.key_prefix)
            .field("windows", &self.windows)
            .field("window_prefix", &self.window_prefix)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// A validated `shared` section.
pub(crate) struct SharedSettings {
    pub(crate) client: redis::Client,
    pub(crate) key: Vec<u8>,
    pub(crate) channel: String,
    pub(crate) key_prefix: String,
    /// The window keys' prefix when windows are counted over the replicas.
    pub(crate) windows: Option<String>,
    pub(crate) timeout: Duration,
}

impl SharedConfig {
    /// A shared section with every default, for `redis_url` and `hmac_key_path`.
    pub fn new(redis_url: impl Into<String>, hmac_key_path: impl Into<PathBuf>) -> Self {
        SharedConfig {
            redis_url: redis_url.into(),
            tls: None,
            hmac_key_path: hmac_key_path.into(),
            channel: default_channel(),
            key_prefix: default_key_prefix(),
            windows: default_windows(),
            window_prefix: default_window_prefix(),
            timeout_ms: default_timeout_ms(),
        }
    }

    /// Checks the section and reads its files (the HMAC key, the TLS material; relative paths
    /// against `dir`); pushes every problem.
    pub(crate) fn settings(&self, dir: &Path, issues: &mut Vec<ConfigIssue>) -> Option<SharedSettings> {
        let before = issues.len();
        let mut bad = |k: &str, m: &str| issues.push(ConfigIssue::new(format!("shared.{k}"), m));
        if !(1..=60_000).contains(&self.timeout_ms) {
            bad("timeout_ms", "must be between 1 and 60000");
        }
        let plain = |s: &str| {
            !s.is_empty() && s.len() <= 64 && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        };
        if !plain(&self.channel) {
            bad("channel", "must be 1-64 characters without spaces or control characters");
        }
        if !plain(&self.key_prefix) || self.key_prefix.contains(['*', '?', '[', ']', '\\']) {
            bad("key_prefix", "must be 1-64 characters without spaces, control or glob characters");
        }
        if !plain(&self.window_prefix) || self.window_prefix.contains(['*', '?', '[', ']', '\\', '{', '}']) {
            bad("window_prefix", "must be 1-64 characters without spaces, control, glob or brace characters");
        } else if self.window_prefix.starts_with(&self.key_prefix)
            || self.key_prefix.starts_with(&self.window_prefix)
        {
            bad("window_prefix", "must not start with key_prefix, nor key_prefix with it");
        }
        let keys = ConfigKeys { url: "shared.redis_url", tls: "shared.tls" };
        let client = phigate_redis::client(&self.redis_url, self.tls.as_ref(), dir, keys, issues);
        let key_path = resolve(dir, &self.hmac_key_path);
        let key = phigate_redis::read_hmac_key(&key_path, "shared.hmac_key_path", issues);
        if issues.len() != before {
            return None;
        }
        Some(SharedSettings {
            client: client?,
            key: key?,
            channel: self.channel.clone(),
            key_prefix: self.key_prefix.clone(),
            windows: self.windows.then(|| self.window_prefix.clone()),
            timeout: Duration::from_millis(self.timeout_ms),
        })
    }
}
