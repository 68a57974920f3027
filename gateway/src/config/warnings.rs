//! Settings that are valid but weaken the gateway's posture: reported by `phigate check` and
//! logged at every start, never silently accepted.

use std::net::SocketAddr;

use super::{ConfigError, LoadedConfig};

/// Located warnings for a loaded (and validated) config, in file order.
///
/// - an upstream with `insecure_plaintext: true`: PHI crosses the network unencrypted (HIPAA
///   §164.312(e)(1), transmission security);
/// - an admin address that is not loopback: the admin service is plain HTTP and unauthenticated.
pub fn warnings(loaded: &LoadedConfig) -> Vec<ConfigError> {
    let config = &loaded.config;
    let mut out = Vec::new();
    for (i, upstream) in config.upstreams.iter().enumerate() {
        if upstream.insecure_plaintext {
            out.push(loaded.error_at(
                format!("upstreams[{i}].insecure_plaintext"),
                "warning: requests, including PHI, go to this upstream unencrypted",
            ));
        }
    }
    let admin = config.admin.address.parse::<SocketAddr>();
    if admin.is_ok_and(|addr| !addr.ip().is_loopback()) {
        out.push(loaded.error_at(
            "admin.address",
            "warning: the admin service (plain HTTP, no authentication) is not on loopback",
        ));
    }
    out.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    out
}
