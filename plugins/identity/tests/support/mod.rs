//! Shared test support: a real JWKS endpoint over TLS on 127.0.0.1, request contexts, stage
//! builders and denial assertions. The stage under test is the real one.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

pub mod introspection;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use phigate_identity::dev::DevIssuer;
use phigate_identity::{Clock, IdentityConfig, IdentityStage};
use phigate_plugin::{
    Denial, ErrorCode, Flow, QueryParam, RequestCtx, RequestId, RequestInfo, RouteMeta, Stage, StageBuildCtx,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub const AUD: &str = "https://fhir.phigate.test";

/// A fresh temp directory for this test.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "phigate-identity-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

pub fn rsa_issuer(iss: &str, alg: jsonwebtoken::Algorithm) -> DevIssuer {
    let pem = include_str!("../keys/rsa2048.pem");
    DevIssuer::rsa_from_pem(iss, pem, alg).unwrap()
}

/// Routes named `a`, `b`, ... in order.
pub fn routes(names: &[&str]) -> Vec<Arc<RouteMeta>> {
    names
        .iter()
        .enumerate()
        .map(|(index, n)| {
            Arc::new(RouteMeta {
                name: Arc::from(*n),
                index,
                prefix: Arc::from(format!("/{n}").as_str()),
                fhir: true,
                upstream: Arc::from("fhir"),
            })
        })
        .collect()
}

pub fn build_with(
    yaml: &str,
    routes: &[Arc<RouteMeta>],
    dir: &std::path::Path,
    clock: Arc<dyn Clock>,
) -> IdentityStage {
    let cfg: IdentityConfig = serde_yaml::from_str(yaml).unwrap();
    let ctx = StageBuildCtx { routes, config_dir: dir };
    cfg.build_with_clock(&ctx, clock).unwrap()
}

pub fn build(yaml: &str, routes: &[Arc<RouteMeta>], dir: &std::path::Path) -> IdentityStage {
    build_with(yaml, routes, dir, Arc::new(phigate_identity::SystemClock))
}

/// A file-based issuer config snippet for `iss`, JWKS written to `dir/<name>.json`.
pub fn file_issuer(dir: &std::path::Path, name: &str, issuers: &[&DevIssuer]) -> String {
    let keys: Vec<_> = issuers.iter().map(|i| i.jwk().clone()).collect();
    std::fs::write(dir.join(format!("{name}.json")), serde_json::json!({"keys": keys}).to_string()).unwrap();
    format!("{name}.json")
}

pub fn request(route: &Arc<RouteMeta>, auth: &[&str]) -> RequestCtx {
    let mut headers = HeaderMap::new();
    for a in auth {
        headers.append(http::header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
    }
    let info = RequestInfo {
        method: Method::GET,
        path: "/a/Patient/1".into(),
        query: Vec::new(),
        headers,
        body: None,
    };
    RequestCtx::new(RequestId::new("t-1"), Arc::clone(route), info)
}

pub fn bearer(route: &Arc<RouteMeta>, token: &str) -> RequestCtx {
    request(route, &[&format!("Bearer {token}")])
}

pub fn with_query(mut ctx: RequestCtx, name: &str, value: &str) -> RequestCtx {
    ctx.request.query.push(QueryParam { name: name.into(), value: value.into() });
    ctx
}

pub async fn run(stage: &IdentityStage, ctx: &mut RequestCtx) -> Result<Flow, Denial> {
    stage.on_request(ctx).await
}

/// Asserts the code, status, exact `WWW-Authenticate` (None: no such header), and that the
/// token appears nowhere in the denial.
pub fn assert_denied(res: Result<Flow, Denial>, code: ErrorCode, www: Option<&str>, token: &str) {
    let d = match res {
        Err(d) => d,
        Ok(f) => panic!("expected {code}, got {f:?}"),
    };
    assert_eq!(d.code, code, "cause: {:?}", d.cause);
    assert_eq!(d.code.status(), code.status());
    let got: Vec<_> = d
        .headers
        .iter()
        .filter(|(n, _)| n == http::header::WWW_AUTHENTICATE)
        .map(|(_, v)| v.to_str().unwrap().to_owned())
        .collect();
    match www {
        Some(w) => assert_eq!(got, vec![w.to_owned()]),
        None => assert!(got.is_empty(), "unexpected challenge {got:?}"),
    }
    let rendered = format!("{d} {d:?}");
    if token.len() > 8 {
        assert!(!rendered.contains(token), "token echoed in denial");
        // No signature or payload segment either.
        for seg in token.split('.').filter(|s| s.len() > 8) {
            assert!(!rendered.contains(seg), "token segment echoed in denial");
        }
    }
}

pub fn invalid_token(code: ErrorCode) -> String {
    format!("Bearer error=\"invalid_token\", error_description=\"{}\"", code.message())
}

pub fn invalid_request() -> String {
    format!("Bearer error=\"invalid_request\", error_description=\"{}\"", ErrorCode::TokenMalformed.message())
}

// === Test PKI ===

/// A CA, a server certificate for `localhost` and 127.0.0.1, and a client certificate, all
/// made fresh per test.
pub struct TestPki {
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    leaf: (CertificateDer<'static>, Vec<u8>),
}

impl TestPki {
    pub fn new() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "phigate test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let mut lp = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        lp.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let leaf = lp.signed_by(&leaf_key, &issuer).unwrap();
        TestPki {
            ca_pem: ca_cert.pem(),
            issuer,
            leaf: (CertificateDer::from(leaf.der().to_vec()), leaf_key.serialize_der()),
        }
    }

    /// A client certificate signed by this CA: (certificate PEM, key PEM).
    pub fn client_pem(&self) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "phigate gateway");
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A TLS server config with the leaf; with `client_auth`, client certificates of this CA
    /// are required.
    pub fn server_config(&self, client_auth: bool) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap()).unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        builder
            .with_single_cert(
                vec![self.leaf.0.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf.1.clone())),
            )
            .unwrap()
    }
}

// === JWKS server ===

struct ServerState {
    body: Mutex<String>,
    max_age: Mutex<Option<u64>>,
    up: AtomicBool,
    fetches: AtomicUsize,
}

/// A JWKS endpoint on `https://127.0.0.1:<port>/jwks` with its own CA.
pub struct JwksServer {
    pub url: String,
    pub ca_pem: String,
    state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(jwks: String) -> Self {
        let pki = TestPki::new();
        let config = pki.server_config(false);
        let ca_cert_pem = pki.ca_pem.clone();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ServerState {
            body: Mutex::new(jwks),
            max_age: Mutex::new(None),
            up: AtomicBool::new(true),
            fetches: AtomicUsize::new(0),
        });
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let st = Arc::clone(&st);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |_req| {
                        let st = Arc::clone(&st);
                        async move { Ok::<_, Infallible>(respond(&st)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        JwksServer { url: format!("https://{addr}/jwks"), ca_pem: ca_cert_pem, state, task }
    }

    pub fn set_jwks(&self, body: String) {
        *self.state.body.lock().unwrap() = body;
    }

    pub fn set_max_age(&self, secs: Option<u64>) {
        *self.state.max_age.lock().unwrap() = secs;
    }

    /// Down: every fetch gets 503 (the IdP is failing).
    pub fn set_up(&self, up: bool) {
        self.state.up.store(up, Ordering::SeqCst);
    }

    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// Writes the CA PEM into `dir` and returns the file name.
    pub fn write_ca(&self, dir: &std::path::Path) -> String {
        std::fs::write(dir.join("jwks-ca.pem"), &self.ca_pem).unwrap();
        "jwks-ca.pem".into()
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn respond(st: &ServerState) -> Response<Full<Bytes>> {
    st.fetches.fetch_add(1, Ordering::SeqCst);
    if !st.up.load(Ordering::SeqCst) {
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    let mut b = Response::builder().header("content-type", "application/json");
    if let Some(a) = *st.max_age.lock().unwrap() {
        b = b.header("cache-control", format!("public, max-age={a}"));
    }
    b.body(Full::new(Bytes::from(st.body.lock().unwrap().clone()))).unwrap()
}
