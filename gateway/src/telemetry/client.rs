//! The exporter's HTTP client: hyper on a one-thread runtime owned by the client. The SDK
//! exports from its own thread with a plain executor, where tokio's sockets have no reactor.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{TelemetryError, TracingConfig};
use crate::tls::{parse_certs, parse_key};
use bytes::Bytes;
use http::{Request, Response};
use hyper_rustls::HttpsConnectorBuilder;
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{HttpClient, HttpError};

#[derive(Debug)]
pub(super) struct OwnRuntimeClient {
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
    inner: Arc<dyn HttpClient>,
}

/// The TLS client settings for the collector: the CAs its certificate must chain to (`ca_path`,
/// else the system's roots) and, for collectors that require mutual TLS, the gateway's own
/// certificate. An `http://` collector gets an empty trust store: it is never used.
pub(super) fn tls_config(cfg: &TracingConfig, dir: &Path) -> Result<rustls::ClientConfig, TelemetryError> {
    let roots = match &cfg.ca_path {
        Some(path) => load_roots(&dir.join(path))?,
        None if cfg.otlp_endpoint.starts_with("https:") => system_roots()?,
        None => rustls::RootCertStore::empty(),
    };
    // The process-wide provider (ring, TLS 1.3 only) that the gateway installs.
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let (Some(cert_path), Some(key_path)) = (&cfg.client_cert_path, &cfg.client_key_path) else {
        return Ok(builder.with_no_client_auth());
    };
    let (cert_path, key_path) = (dir.join(cert_path), dir.join(key_path));
    let certs = pem_file(&cert_path, "client_cert_path", |pem| parse_certs(&cert_path, pem).ok())?;
    let key = pem_file(&key_path, "client_key_path", |pem| parse_key(&key_path, pem).ok())?;
    builder.with_client_auth_cert(certs, key).map_err(|_| {
        TelemetryError("client_key_path: not a supported key, or not the key of client_cert_path".into())
    })
}

/// Parses the PEM file at `path` with `parse`; errors name `key`, never the file's contents.
fn pem_file<T>(path: &Path, key: &str, parse: impl FnOnce(&[u8]) -> Option<T>) -> Result<T, TelemetryError> {
    let pem = std::fs::read(path).map_err(|_| TelemetryError(format!("{key}: cannot read the file")))?;
    parse(&pem).ok_or_else(|| TelemetryError(format!("{key}: not the PEM file expected here")))
}

/// The CA certificates of a PEM file (at least one).
fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TelemetryError> {
    let certs = pem_file(path, "ca_path", |pem| parse_certs(path, pem).ok())?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TelemetryError("ca_path: holds no usable CA certificate".into()));
    }
    Ok(roots)
}

/// The system's trusted roots, read once when the exporter is built.
fn system_roots() -> Result<rustls::RootCertStore, TelemetryError> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if added == 0 {
        return Err(TelemetryError("the system has no trusted roots: set ca_path".into()));
    }
    Ok(roots)
}

impl Drop for OwnRuntimeClient {
    // The client may be dropped on an async thread, where a runtime may not block to stop.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl OwnRuntimeClient {
    /// A client with a [`tls_config`] for `https://` collectors.
    pub(super) fn new(timeout: Duration, tls: rustls::ClientConfig) -> Result<Self, TelemetryError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("phigate-otlp")
            .enable_all()
            .build()
            .map_err(|e| TelemetryError(format!("exporter runtime: {e}")))?;
        let connector =
            HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        let inner: Arc<dyn HttpClient> = {
            let _entered = runtime.enter();
            Arc::new(HyperClient::new(connector, timeout, None))
        };
        Ok(OwnRuntimeClient { runtime: Some(runtime), inner })
    }
}

#[async_trait::async_trait]
impl HttpClient for OwnRuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let Some(runtime) = &self.runtime else {
            return Err("the exporter is shut down".into());
        };
        let inner = self.inner.clone();
        let sent = runtime.spawn(async move { inner.send_bytes(request).await });
        sent.await.map_err(|e| -> HttpError { Box::new(e) })?
    }
}
