//! The `tls:` block of a Redis connection, the same in every section that has one
//! (`rate_limits.redis.tls`, `exfil.shared.tls`).

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

/// TLS material for the Redis connection. Files are PEM, read once when the config is built;
/// relative paths are relative to the config file's directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisTlsConfig {
    /// The CA certificate(s) that signed the Redis server's certificate (PEM bundle); only these
    /// are trusted. Default: the operating system's trusted roots.
    #[serde(default)]
    pub ca_path: Option<PathBuf>,
    /// The client certificate chain (PEM, leaf first) presented to Redis, for Redis
    /// `tls-auth-clients yes`. Requires `client_key_path`. Default: none.
    #[serde(default)]
    pub client_cert_path: Option<PathBuf>,
    /// The private key of `client_cert_path` (PEM: PKCS#8, PKCS#1 or SEC1). Requires
    /// `client_cert_path`. Default: none.
    #[serde(default)]
    pub client_key_path: Option<PathBuf>,
}
