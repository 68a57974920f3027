//! One Redis client setup for every phigate stage that talks to Redis (the rate-limit backend,
//! the exfiltration watch's shared blocks), so that TLS is configured, checked and classified
//! the same way everywhere.
//!
//! * [`client`] checks a `redis://` / `rediss://` URL and its optional `tls:` block
//!   ([`RedisTlsConfig`]) when the config is built, and returns a [`redis::Client`] that does
//!   no I/O until it connects. Problems are [`ConfigIssue`]s named by the caller's own keys
//!   ([`ConfigKeys`]), never echoing the URL (it may hold a password) nor file contents.
//! * [`is_tls_error`] tells a TLS failure (untrusted, expired or misnamed server certificate,
//!   client certificate refused) from other Redis failures, for the stages' failure counters.
//! * [`Keeper`] keeps one multiplexed connection for request paths that must never wait to
//!   connect: a background task connects with backoff, pings, and reconnects when a request
//!   reports the connection broken; failures are classified as [`Failure`]s.
//! * [`read_hmac_key`] reads the key of the HMAC that names identities in Redis keys, with the
//!   same rules (and messages) wherever one is configured.
//!
//! **TLS**: 1.3 through rustls on the process-default crypto provider (the ring, TLS 1.3-only
//! one the gateway installs before anything starts); never OpenSSL. HIPAA asks for encryption in
//! transit inside the network too, so `#insecure` (no certificate check) is refused.
//!
//! **Trusted roots are read once**, when the config is built: `tls.ca_path`, or else the
//! operating system's store (rustls-native-certs: `/etc/ssl/certs`, `SSL_CERT_FILE`,
//! `SSL_CERT_DIR`). The redis crate (1.x) would otherwise re-read the system store from disk at
//! every connection attempt, blocking a tokio worker during reconnects. This crate builds redis
//! with `tls-rustls-webpki-roots`, which turns that read off; the compiled-in roots it enables
//! instead are never used, because every TLS client built here carries explicit roots. A
//! `rediss://` client built any other way in the same binary would trust those compiled-in
//! (Mozilla) roots: build them all through [`client`].

mod config;
mod error;
mod keeper;
mod tls;

use std::path::Path;

use phigate_plugin::ConfigIssue;

pub use config::RedisTlsConfig;
pub use error::is_tls_error;
pub use keeper::{Connected, Failure, Keeper, Timeouts, Transitions};

/// Where a Redis connection's settings sit in a stage's config section, so that problems are
/// named the way the stage names its other keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigKeys<'a> {
    /// The key of the URL, like `redis.url` or `shared.redis_url`.
    pub url: &'a str,
    /// The key of the `tls:` block, like `redis.tls` or `shared.tls`; problems with one of its
    /// files are reported as `<tls>.<field>` (`redis.tls.ca_path`).
    pub tls: &'a str,
}

/// The client for `url`, with `tls` for a `rediss://` URL (relative paths against
/// `config_dir`). Reads the TLS files, and for `rediss://` without `tls.ca_path` the operating
/// system's trusted roots, so call it where blocking file I/O is fine (config loading); the
/// client connects only when asked.
///
/// Refused, each pushed to `issues` under `keys`: a URL that does not parse, the `#insecure`
/// fragment, `tls` with a URL that is not `rediss://`, and every problem with the TLS files
/// (unreadable, not PEM, a CA that cannot be a trust anchor, a certificate without its key or
/// the reverse, a key that does not match its certificate), or no usable system roots.
///
/// Returns `None` exactly when it pushed at least one issue.
pub fn client(
    url: &str,
    tls: Option<&RedisTlsConfig>,
    config_dir: &Path,
    keys: ConfigKeys<'_>,
    issues: &mut Vec<ConfigIssue>,
) -> Option<redis::Client> {
    let bad = |k: &str, m: &str| ConfigIssue::new(k, m);
    // The parser's message may quote the URL (and its password): report a fixed text.
    let Ok(plain) = redis::Client::open(url) else {
        issues.push(bad(keys.url, "is not a valid redis:// or rediss:// URL"));
        return None;
    };
    let (is_tls, insecure) = match plain.get_connection_info().addr() {
        redis::ConnectionAddr::TcpTls { insecure, .. } => (true, *insecure),
        _ => (false, false),
    };
    if insecure {
        // `#insecure` turns certificate checks off: whoever sits on the path could then read
        // and answer the traffic that TLS was configured to protect.
        issues.push(bad(keys.url, "must not disable certificate checks (`#insecure`)"));
        return None;
    }
    if !is_tls {
        if tls.is_some() {
            issues.push(bad(keys.tls, "is only used with a rediss:// URL (this one is not TLS)"));
            return None;
        }
        return Some(plain);
    }
    let certs = tls::load(tls.unwrap_or(&RedisTlsConfig::default()), config_dir, keys.tls, issues)?;
    match redis::Client::build_with_tls(url, certs) {
        Ok(client) => Some(client),
        Err(_) => {
            issues.push(bad(keys.tls, "cannot be used with this URL"));
            None
        }
    }
}

/// Shortest key accepted by [`read_hmac_key`], in bytes.
pub const MIN_HMAC_KEY_BYTES: usize = phigate_plugin::MIN_SECRET_KEY_BYTES;

/// Reads the raw key of an HMAC that names identities in Redis (`path` already resolved against
/// the config directory). Subjects, tenants and addresses are guessable, so an unkeyed hash in
/// Redis would let whoever reads Redis (or its backups) confirm who was there by hashing
/// candidates; with the key, it would need the key file too, which stays on the gateway.
/// Problems are reported as [`phigate_plugin::read_secret_key`] reports them.
pub fn read_hmac_key(path: &Path, key: &str, issues: &mut Vec<ConfigIssue>) -> Option<Vec<u8>> {
    phigate_plugin::read_secret_key(path, key, issues)
}
