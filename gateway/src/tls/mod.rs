//! TLS: the process-wide TLS 1.3-only provider, public listener settings (with certificate hot
//! reload and optional or required client certificates), and upstream mTLS material.
//!
//! HIPAA transmission security asks for TLS 1.2 or newer; phigate serves TLS 1.3 only, towards
//! clients and towards upstreams, because every pingora `ServerConfig` and `ClientConfig` is built
//! from the process-default rustls provider installed here before pingora starts.

mod listener;
mod reload;
pub(crate) use reload::{parse_certs, parse_key};
mod upstream;

pub use listener::{build_listener_tls, ListenerTls};
pub use reload::ReloadableCert;
pub use upstream::{load_upstream_tls, UpstreamTls};

use thiserror::Error;

/// Installs a rustls crypto provider (ring) whose cipher suites are TLS 1.3 only, as the process
/// default. Must run before pingora builds any TLS config; later calls are no-ops.
pub fn install_tls13_only_provider() {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.retain(|s| matches!(s, rustls::SupportedCipherSuite::Tls13(_)));
    // An error means a provider is installed already (an earlier call): keep it.
    let _ = rustls::crypto::CryptoProvider::install_default(provider);
}

/// TLS material could not be loaded. Messages name the file, never its contents.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("{path}: no {what} found")]
    Missing {
        /// The file.
        path: String,
        /// What was expected.
        what: &'static str,
    },
    /// rustls refused the material.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

impl TlsError {
    /// A fixed reason class for the audit trail (`unreadable`, `missing`, `invalid`), without the
    /// path or message.
    pub fn class(&self) -> &'static str {
        match self {
            TlsError::Read { .. } => "unreadable",
            TlsError::Missing { .. } => "missing",
            TlsError::Invalid { .. } => "invalid",
        }
    }
}
