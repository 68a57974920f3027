//! Fetching a JWKS: over HTTPS (rustls with the ring provider, no redirects, bounded size and
//! time) or from a file. Returns the body and the `Cache-Control` max-age hint.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, HOST, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// JWKS documents are a few KiB; anything larger is refused.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Why a fetch failed (log-only; no response body is ever kept).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("timed out")]
    Timeout,
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("tls: {0}")]
    Tls(std::io::Error),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("status {0}")]
    Status(StatusCode),
    #[error("body too large or unreadable")]
    Body,
    #[error("file: {0}")]
    File(std::io::Error),
    #[error("no usable keys in the document")]
    NoKeys,
    #[error("document is not a JWKS")]
    NotJwks,
}

/// A fetched document.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) body: Bytes,
    /// `Cache-Control: max-age` (0 for `no-cache`/`no-store`), if any.
    pub(crate) max_age_secs: Option<u64>,
}

/// Where an issuer's keys come from.
#[derive(Debug)]
pub(crate) enum JwksSource {
    Https(HttpsSource),
    File(PathBuf),
}

impl JwksSource {
    pub(crate) async fn fetch(&self, timeout: Duration) -> Result<Fetched, FetchError> {
        match self {
            JwksSource::Https(h) => {
                tokio::time::timeout(timeout, h.get()).await.map_err(|_| FetchError::Timeout)?
            }
            JwksSource::File(p) => {
                let body = tokio::fs::read(p).await.map_err(FetchError::File)?;
                if body.len() > MAX_JWKS_BYTES {
                    return Err(FetchError::Body);
                }
                Ok(Fetched { body: body.into(), max_age_secs: None })
            }
        }
    }
}

/// An HTTPS JWKS endpoint.
pub(crate) struct HttpsSource {
    uri: Uri,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    tls: TlsConnector,
}

impl std::fmt::Debug for HttpsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsSource").field("uri", &self.uri).finish()
    }
}

impl HttpsSource {
    /// Checks the URI (https, host) and builds the TLS client. `roots` is the trust store.
    pub(crate) fn new(uri: &str, roots: rustls::RootCertStore) -> Result<Self, &'static str> {
        let uri: Uri = uri.parse().map_err(|_| "not a valid URI")?;
        if uri.scheme_str() != Some("https") {
            return Err("must use https");
        }
        let host = uri.host().ok_or("has no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let server_name = ServerName::try_from(host.clone()).map_err(|_| "host is not a valid name")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|_| "TLS configuration failed")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(HttpsSource {
            port: uri.port_u16().unwrap_or(443),
            uri,
            host,
            server_name,
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    async fn get(&self) -> Result<Fetched, FetchError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(FetchError::Connect)?;
        let tls = self.tls.connect(self.server_name.clone(), tcp).await.map_err(FetchError::Tls)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        let conn = tokio::spawn(conn);
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = self.uri.authority().map_or(self.host.as_str(), |a| a.as_str());
        let req = Request::get(path)
            .header(HOST, authority)
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, "phigate")
            .body(Empty::<Bytes>::new())
            .map_err(|_| FetchError::NotJwks)?;
        let resp = sender.send_request(req).await?;
        // Redirects are not followed: a JWKS location is configuration, not something a
        // response may change.
        if resp.status() != StatusCode::OK {
            conn.abort();
            return Err(FetchError::Status(resp.status()));
        }
        let max_age_secs =
            resp.headers().get(CACHE_CONTROL).and_then(|v| v.to_str().ok()).and_then(parse_max_age);
        let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|_| FetchError::Body)?
            .to_bytes();
        conn.abort();
        Ok(Fetched { body, max_age_secs })
    }
}

/// `max-age=N` from a Cache-Control value; `no-cache`/`no-store` mean 0.
pub(crate) fn parse_max_age(v: &str) -> Option<u64> {
    let mut out = None;
    for d in v.split(',').map(str::trim) {
        let lower = d.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return Some(0);
        }
        if let Some(n) = lower.strip_prefix("max-age=") {
            out = n.trim_matches('"').parse().ok();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse_max_age;

    #[test]
    fn cache_control_max_age_is_read_and_no_store_means_zero() {
        assert_eq!(parse_max_age("public, max-age=3600"), Some(3600));
        assert_eq!(parse_max_age("Max-Age=\"20\""), Some(20));
        assert_eq!(parse_max_age("no-store, max-age=3600"), Some(0));
        assert_eq!(parse_max_age("private"), None);
        assert_eq!(parse_max_age("max-age=-1"), None);
    }
}
