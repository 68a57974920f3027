//! A local HTTPS collector for tests of the crates that ship lines (feature `testing`): a CA of
//! its own, a certificate for `127.0.0.1`, every POST handed to the test in order.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::sync::mpsc;

use crate::ShipperConfig;

/// A POST the collector received: headers and body.
pub type Received = (HeaderMap, Bytes);

/// An HTTPS collector answering 503 to its first `fail_first` POSTs and 200 after.
pub struct Collector {
    /// Where it listens (`127.0.0.1`).
    pub addr: SocketAddr,
    /// The CA its certificate chains to (PEM), for `ca_path`.
    pub ca_path: std::path::PathBuf,
    received: mpsc::UnboundedReceiver<Received>,
    _dir: tempfile::TempDir,
}

/// Starts a collector on a loopback port.
///
/// # Panics
/// When the certificates cannot be made or the port bound (a test helper).
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub async fn collector(fail_first: usize) -> Collector {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, received) = mpsc::unbounded_channel();
    let failures = Arc::new(AtomicUsize::new(fail_first));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, tx, failures) = (acceptor.clone(), tx.clone(), failures.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (tx, failures) = (tx.clone(), failures.clone());
                    async move {
                        let headers = req.headers().clone();
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let fail = failures
                            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                            .is_ok();
                        let status = if fail { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
                        let _ = tx.send((headers, body));
                        Ok::<_, std::convert::Infallible>(
                            Response::builder().status(status).body(Full::new(Bytes::new())).unwrap(),
                        )
                    }
                });
                let io = hyper_util::rt::TokioIo::new(tls);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    Collector { addr, ca_path, received, _dir: dir }
}

impl Collector {
    /// A shipper config for this collector (`authorization_env` as given).
    pub fn config(&self, authorization_env: Option<&str>) -> ShipperConfig {
        ShipperConfig {
            url: format!("https://{}/hooks/phigate", self.addr),
            ca_path: Some(self.ca_path.clone()),
            authorization_env: authorization_env.map(str::to_owned),
            timeout_ms: 5000,
            max_pending_bytes: None,
        }
    }

    /// Every POST received so far and not yet taken, without waiting.
    pub fn taken_now(&mut self) -> Vec<Received> {
        std::iter::from_fn(|| self.received.try_recv().ok()).collect()
    }

    /// The next POST (waits at most 20 s).
    ///
    /// # Panics
    /// When none arrives in time (a test helper).
    #[allow(clippy::expect_used)]
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(20), self.received.recv())
            .await
            .expect("a POST within 20 s")
            .expect("the collector runs")
    }
}
