//! A TLS HTTP test client on tokio-rustls and hyper: `h2` or `http/1.1` by ALPN, a chosen root CA,
//! an optional client certificate, TLS 1.3 or (for negative tests) TLS 1.2, and an SNI override.
//!
//! Each request opens its own connection, so a test controls exactly what one connection sees.
//! Every operation is bounded by [`TestClientBuilder::timeout`] so a broken server fails a test
//! instead of hanging it.

mod conn;
mod raw;
mod request;

use std::sync::Arc;
use std::time::Duration;

use phigate::demo::pki::{CertAuthority, IssuedCert};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

pub use raw::{HandshakeInfo, RawOptions, TlsProbe};
pub use request::{RequestBuilder, TestResponse};

/// Default bound on any single client operation.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a test request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not an absolute `http://` or `https://` URL with a host.
    #[error("bad url")]
    BadUrl,
    /// The client configuration was refused (bad PEM, no usable TLS versions).
    #[error("client config: {0}")]
    Config(String),
    /// TCP or TLS failed (the TLS cause, if any, is in the source chain: see
    /// [`ClientError::tls_error`]).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// HTTP failed (for example the server closed the connection after a TLS alert).
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// The operation did not finish within the client's timeout.
    #[error("timed out")]
    Timeout,
}

impl ClientError {
    /// The rustls error somewhere in the cause chain, if the failure was a TLS one (a received
    /// alert like `CertificateRequired`, a certificate the client did not trust, …).
    pub fn tls_error(&self) -> Option<rustls::Error> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if let Some(t) = e.downcast_ref::<rustls::Error>() {
                return Some(t.clone());
            }
            // io::Error hides its payload from `source()`; look inside.
            if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
                if let Some(t) = inner.downcast_ref::<rustls::Error>() {
                    return Some(t.clone());
                }
                if let Some(alert) = alert_from_text(&inner.to_string()) {
                    return Some(rustls::Error::AlertReceived(alert));
                }
            }
            cur = e.source();
        }
        None
    }
}

/// The h2 crate keeps only the text of an I/O error, so on HTTP/2 connections a received alert
/// arrives as rustls' message ("received fatal alert: X"); map it back to the alert.
fn alert_from_text(text: &str) -> Option<rustls::AlertDescription> {
    let name = text.strip_prefix("received fatal alert: ")?;
    (0..=u8::MAX).map(rustls::AlertDescription::from).find(|a| format!("{a:?}") == name)
}

/// Which TLS versions the client offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersions {
    /// TLS 1.3 only (default; what phigate accepts).
    Tls13,
    /// TLS 1.2 only (for tests proving TLS 1.2 is refused).
    Tls12,
    /// Both.
    Both,
}

/// Builds a [`TestClient`].
#[derive(Debug)]
pub struct TestClientBuilder {
    roots: RootCertStore,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    versions: TlsVersions,
    alpn: Vec<Vec<u8>>,
    server_name: Option<String>,
    timeout: Duration,
    h2_prior_knowledge: bool,
}

impl TestClientBuilder {
    /// Trusts this CA (adds to the roots).
    pub fn root_ca(mut self, ca: &CertAuthority) -> Self {
        let _ = self.roots.add(ca.cert_der().clone());
        self
    }

    /// Trusts every certificate in this PEM text.
    ///
    /// # Errors
    /// When the PEM holds no certificate or one rustls refuses.
    pub fn root_ca_pem(mut self, pem: &str) -> Result<Self, ClientError> {
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| ClientError::Config(e.to_string()))?;
            self.roots.add(cert).map_err(|e| ClientError::Config(e.to_string()))?;
            n += 1;
        }
        if n == 0 {
            return Err(ClientError::Config("no certificate in root PEM".into()));
        }
        Ok(self)
    }

    /// Presents this client certificate.
    pub fn client_cert(mut self, cert: &IssuedCert) -> Self {
        self.identity = Some((vec![cert.cert_der().clone()], cert.key_der()));
        self
    }

    /// Presents a client certificate from PEM text (chain, then PKCS#8/SEC1/PKCS#1 key).
    ///
    /// # Errors
    /// When either PEM is unusable.
    pub fn client_cert_pem(mut self, cert_pem: &str, key_pem: &str) -> Result<Self, ClientError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| ClientError::Config(e.to_string()))?;
        self.identity = Some((chain, key));
        Ok(self)
    }

    /// The TLS versions to offer (default TLS 1.3 only).
    pub fn tls_versions(mut self, versions: TlsVersions) -> Self {
        self.versions = versions;
        self
    }

    /// Offer only `http/1.1` in ALPN.
    pub fn http1_only(mut self) -> Self {
        self.alpn = vec![b"http/1.1".to_vec()];
        self
    }

    /// Offer only `h2` in ALPN (on `http://` URLs: HTTP/2 with prior knowledge).
    pub fn http2_only(mut self) -> Self {
        self.alpn = vec![b"h2".to_vec()];
        self.h2_prior_knowledge = true;
        self
    }

    /// The ALPN list to offer, verbatim (empty offers none).
    pub fn alpn(mut self, protocols: &[&[u8]]) -> Self {
        self.alpn = protocols.iter().map(|p| p.to_vec()).collect();
        self
    }

    /// The SNI and certificate name to use instead of the URL's host (connect to `127.0.0.1`
    /// while verifying `fhir-upstream.internal`).
    pub fn server_name(mut self, name: &str) -> Self {
        self.server_name = Some(name.to_owned());
        self
    }

    /// Bound on each operation (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The client.
    ///
    /// # Errors
    /// When rustls refuses the configuration.
    pub fn build(self) -> Result<TestClient, ClientError> {
        let versions: &[&'static rustls::SupportedProtocolVersion] = match self.versions {
            TlsVersions::Tls13 => &[&rustls::version::TLS13],
            TlsVersions::Tls12 => &[&rustls::version::TLS12],
            TlsVersions::Both => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        // The ring default provider carries TLS 1.2 suites too, so TLS 1.2-only is possible.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| ClientError::Config(e.to_string()))?
            .with_root_certificates(self.roots);
        let mut config = match self.identity {
            Some((chain, key)) => {
                builder.with_client_auth_cert(chain, key).map_err(|e| ClientError::Config(e.to_string()))?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn;
        let server_name = match self.server_name {
            Some(n) => Some(ServerName::try_from(n).map_err(|e| ClientError::Config(e.to_string()))?),
            None => None,
        };
        Ok(TestClient {
            config: Arc::new(config),
            server_name,
            timeout: self.timeout,
            h2_prior_knowledge: self.h2_prior_knowledge,
        })
    }
}

/// An HTTP client for tests. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TestClient {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
    timeout: Duration,
    h2_prior_knowledge: bool,
}

impl TestClient {
    /// A builder: no roots, no client certificate, TLS 1.3, ALPN `h2` + `http/1.1`.
    pub fn builder() -> TestClientBuilder {
        TestClientBuilder {
            roots: RootCertStore::empty(),
            identity: None,
            versions: TlsVersions::Tls13,
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            server_name: None,
            timeout: DEFAULT_TIMEOUT,
            h2_prior_knowledge: false,
        }
    }

    /// The rustls config the client uses (for [`TlsProbe`]).
    pub fn tls_config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// A GET request.
    pub fn get(&self, url: &str) -> RequestBuilder {
        self.request(http::Method::GET, url)
    }

    /// A POST request.
    pub fn post(&self, url: &str) -> RequestBuilder {
        self.request(http::Method::POST, url)
    }

    /// A request with any method.
    pub fn request(&self, method: http::Method, url: &str) -> RequestBuilder {
        RequestBuilder::new(self.clone(), method, url)
    }
}
