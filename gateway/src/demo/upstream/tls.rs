//! The sample upstream's TLS: TLS 1.3 only, ring provider, client certificates required and
//! verified against one configured CA, ALPN `h2` and `http/1.1`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::UpstreamError;
use crate::demo::pki::{CertAuthority, IssuedCert};

/// Where PEM text comes from: a file or memory.
#[derive(Debug, Clone)]
pub enum PemSource {
    /// Read the PEM from this file.
    File(PathBuf),
    /// This PEM text.
    Inline(String),
}

impl PemSource {
    /// PEM text held in memory.
    pub fn inline(pem: impl Into<String>) -> Self {
        PemSource::Inline(pem.into())
    }

    fn read(&self) -> Result<Vec<u8>, UpstreamError> {
        match self {
            PemSource::File(p) => {
                std::fs::read(p).map_err(|source| UpstreamError::ReadPem { path: p.clone(), source })
            }
            PemSource::Inline(s) => Ok(s.as_bytes().to_vec()),
        }
    }

    fn certs(&self, what: &'static str) -> Result<Vec<CertificateDer<'static>>, UpstreamError> {
        let pem = self.read()?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| UpstreamError::BadPem(what))?;
        if certs.is_empty() {
            return Err(UpstreamError::BadPem(what));
        }
        Ok(certs)
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, UpstreamError> {
        PrivateKeyDer::from_pem_slice(&self.read()?).map_err(|_| UpstreamError::BadPem("key"))
    }
}

impl From<PathBuf> for PemSource {
    fn from(p: PathBuf) -> Self {
        PemSource::File(p)
    }
}

impl From<&Path> for PemSource {
    fn from(p: &Path) -> Self {
        PemSource::File(p.to_owned())
    }
}

impl From<&PathBuf> for PemSource {
    fn from(p: &PathBuf) -> Self {
        PemSource::File(p.clone())
    }
}

impl From<&CertAuthority> for PemSource {
    fn from(ca: &CertAuthority) -> Self {
        PemSource::Inline(ca.cert_pem().to_owned())
    }
}

/// The TLS material of the upstream.
#[derive(Debug, Clone, Default)]
pub(super) struct TlsMaterial {
    pub(super) cert: Option<PemSource>,
    pub(super) key: Option<PemSource>,
    pub(super) client_ca: Option<PemSource>,
}

impl TlsMaterial {
    pub(super) fn identity(&mut self, cert: &IssuedCert) {
        self.cert = Some(PemSource::inline(cert.cert_pem()));
        self.key = Some(PemSource::inline(cert.key_pem()));
    }

    /// Builds the rustls server config. Every piece is required: an upstream that would accept
    /// any client is exactly the misconfiguration the demo must not model.
    pub(super) fn server_config(&self) -> Result<Arc<ServerConfig>, UpstreamError> {
        let cert = self.cert.as_ref().ok_or(UpstreamError::Missing("cert"))?;
        let key = self.key.as_ref().ok_or(UpstreamError::Missing("key"))?;
        let ca = self.client_ca.as_ref().ok_or(UpstreamError::Missing("client_ca"))?;
        let mut roots = RootCertStore::empty();
        for c in ca.certs("client_ca")? {
            roots.add(c).map_err(|_| UpstreamError::BadPem("client_ca"))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| UpstreamError::Tls(e.to_string()))?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| UpstreamError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(cert.certs("cert")?, key.key()?)
            .map_err(|e| UpstreamError::Tls(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
