//! Public listener TLS settings: TLS 1.3 (from the process provider), h2 + http/1.1 via ALPN,
//! a reloadable server certificate, and client certificates verified against a configured CA.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{TlsAccept, TlsAcceptCallbacks};
use pingora::protocols::tls::TlsRef;
use pingora::protocols::ALPN;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use super::reload::{parse_certs, ReloadableCert};
use super::TlsError;
use crate::config::{ClientCertMode, ListenerTlsConfig};
use crate::metrics::Metrics;

/// What a listener's TLS setup produced: pingora's settings and the handle used to reload the
/// certificate.
pub struct ListenerTls {
    /// Settings to attach to the pingora service.
    pub settings: TlsSettings,
    /// The certificate in use, reloadable.
    pub cert: Arc<ReloadableCert>,
}

/// Builds the TLS settings of one listener. Paths are already resolved.
///
/// # Errors
/// When the certificate, key or client CA cannot be loaded.
pub fn build_listener_tls(
    listener: &str,
    cfg: &ListenerTlsConfig,
    dir: &Path,
    http2: bool,
    metrics: &Arc<Metrics>,
) -> Result<ListenerTls, TlsError> {
    let cert = Arc::new(ReloadableCert::load(
        listener,
        &dir.join(&cfg.cert_path),
        &dir.join(&cfg.key_path),
        metrics.clone(),
    )?);
    let callbacks: TlsAcceptCallbacks =
        Box::new(HandshakeCompleted { listener: listener.into(), metrics: metrics.clone() });
    let mut settings = TlsSettings::with_callbacks(callbacks)
        .map_err(|e| TlsError::Invalid { path: listener.to_owned(), message: e.to_string() })?;
    settings.set_cert_resolver(cert.clone());
    if http2 {
        settings.enable_h2();
    } else {
        settings.set_alpn(ALPN::H1);
    }
    if cfg.client_cert != ClientCertMode::None {
        let ca_path = cfg
            .client_ca_path
            .as_ref()
            .map(|p| dir.join(p))
            .ok_or_else(|| TlsError::Missing { path: listener.to_owned(), what: "client_ca_path" })?;
        let verifier = client_verifier(&ca_path, cfg.client_cert == ClientCertMode::Optional)?;
        settings.set_client_cert_verifier(Arc::new(CountingVerifier {
            inner: verifier,
            listener: listener.into(),
            metrics: metrics.clone(),
        }));
    }
    Ok(ListenerTls { settings, cert })
}

fn client_verifier(ca_path: &Path, optional: bool) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let pem = std::fs::read(ca_path)
        .map_err(|source| TlsError::Read { path: ca_path.display().to_string(), source })?;
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(ca_path, &pem)? {
        roots.add(cert).map_err(|e| TlsError::Invalid {
            path: ca_path.display().to_string(),
            message: format!("unusable CA certificate: {e}"),
        })?;
    }
    let builder = WebPkiClientVerifier::builder(Arc::new(roots));
    let builder = if optional { builder.allow_unauthenticated() } else { builder };
    builder.build().map_err(|e| TlsError::Invalid {
        path: ca_path.display().to_string(),
        message: format!("cannot build the client certificate verifier: {e}"),
    })
}

/// Counts completed handshakes, so that `started - completed` shows failed handshakes.
struct HandshakeCompleted {
    listener: Arc<str>,
    metrics: Arc<Metrics>,
}

#[async_trait]
impl TlsAccept for HandshakeCompleted {
    async fn handshake_complete_callback(
        &self,
        _tls: &TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        self.metrics.tls_handshakes_completed.with_label_values(&[&self.listener]).inc();
        None
    }
}

/// Delegates to the WebPKI verifier and counts rejected client certificates.
#[derive(Debug)]
struct CountingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    listener: Arc<str>,
    metrics: Arc<Metrics>,
}

impl ClientCertVerifier for CountingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let result = self.inner.verify_client_cert(end_entity, intermediates, now);
        if result.is_err() {
            self.metrics.tls_client_cert_rejected.with_label_values(&[&self.listener]).inc();
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
