//! Upstream mTLS material: the CA an upstream's certificate must chain to and the gateway's own
//! client certificate. Loaded once at start and shared (`Arc`) by every connection.

use std::path::Path;
use std::sync::Arc;

use pingora::protocols::tls::CaType;
use pingora::utils::tls::{CertKey, WrappedX509};

use super::reload::{parse_certs, parse_key};
use super::TlsError;
use crate::config::UpstreamTlsConfig;

/// mTLS material for one upstream.
#[derive(Clone)]
pub struct UpstreamTls {
    /// Trusted CA certificates for the upstream's server certificate.
    pub ca: Arc<CaType>,
    /// The gateway's client certificate and key.
    pub client: Arc<CertKey>,
}

/// Loads an upstream's CA bundle and client certificate.
///
/// # Errors
/// When a file is unreadable or holds no certificate or key.
pub fn load_upstream_tls(cfg: &UpstreamTlsConfig, dir: &Path) -> Result<UpstreamTls, TlsError> {
    let ca_path = dir.join(&cfg.ca_path);
    let ca_pem = read(&ca_path)?;
    let ca: Vec<WrappedX509> = parse_certs(&ca_path, &ca_pem)?
        .into_iter()
        .map(|der| WrappedX509::new(der.to_vec(), pingora::utils::tls::parse_x509))
        .collect();
    let cert_path = dir.join(&cfg.client_cert_path);
    let key_path = dir.join(&cfg.client_key_path);
    let certs = parse_certs(&cert_path, &read(&cert_path)?)?;
    let key = parse_key(&key_path, &read(&key_path)?)?;
    let client = CertKey::new(certs.iter().map(|c| c.to_vec()).collect(), key.secret_der().to_vec());
    Ok(UpstreamTls { ca: Arc::from(ca.into_boxed_slice()), client: Arc::new(client) })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.display().to_string(), source })
}
