//! The demo's dev authorization server: an RFC 7662 introspection endpoint over TLS on
//! 127.0.0.1, so the demo shows an opaque access token (one the gateway cannot verify itself)
//! being vouched for by its issuer. It knows the opaque tokens the demo issued and answers
//! `{"active": false}` for anything else; the gateway authenticates with HTTP Basic.
//!
//! Not for production: the answers are fixed at start, and it runs on its own runtime for the
//! life of the demo process.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::pki::IssuedCert;

/// The path the endpoint answers on.
pub const INTROSPECTION_PATH: &str = "/introspect";

/// What the endpoint needs: its certificate, the client credentials it accepts, and the answer
/// (the token's claims, without `active`) for each token it issued.
#[derive(Debug)]
pub struct DevAuthorizationServer {
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

struct Known {
    /// The exact `Authorization` header value the gateway must send.
    basic: String,
    answers: HashMap<String, Value>,
}

impl DevAuthorizationServer {
    /// Binds 127.0.0.1 on a free port and serves on a one-thread runtime of its own.
    ///
    /// # Errors
    /// When the runtime, the TLS config or the socket cannot be made.
    pub fn start(
        cert: &IssuedCert,
        client_id: &str,
        secret: &str,
        answers: HashMap<String, Value>,
    ) -> Result<Self, String> {
        use base64::Engine;
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| e.to_string())?
                .with_no_client_auth()
                .with_single_cert(vec![cert.cert_der().clone()], cert.key_der())
                .map_err(|e| format!("authorization server certificate: {e}"))?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}"))
        );
        let known = Arc::new(Known { basic, answers });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("phigate-demo-authz")
            .enable_all()
            .build()
            .map_err(|e| format!("authorization server runtime: {e}"))?;
        let listener = runtime
            .block_on(TcpListener::bind(("127.0.0.1", 0)))
            .map_err(|e| format!("authorization server socket: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        runtime.spawn(accept(listener, acceptor, known));
        Ok(DevAuthorizationServer { addr, runtime: Some(runtime) })
    }

    /// The introspection endpoint's URL.
    pub fn endpoint(&self) -> String {
        format!("https://{}{INTROSPECTION_PATH}", self.addr)
    }

    /// The bound `127.0.0.1:port`.
    pub fn addr_text(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for DevAuthorizationServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn accept(listener: TcpListener, acceptor: TlsAcceptor, known: Arc<Known>) {
    while let Ok((tcp, _)) = listener.accept().await {
        let (acceptor, known) = (acceptor.clone(), Arc::clone(&known));
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let svc = service_fn(move |req| {
                let known = Arc::clone(&known);
                async move { Ok::<_, Infallible>(answer(&known, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
        });
    }
}

/// RFC 7662 §2: a form POST from an authenticated client; the token's claims with
/// `active: true`, or `active: false`.
async fn answer(known: &Known, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        r
    };
    if req.method() != http::Method::POST || req.uri().path() != INTROSPECTION_PATH {
        return reply(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#.into());
    }
    let authenticated = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == known.basic.as_bytes());
    if !authenticated {
        return reply(StatusCode::UNAUTHORIZED, r#"{"error":"invalid_client"}"#.into());
    }
    let Ok(body) = Limited::new(req.into_body(), 16 * 1024).collect().await else {
        return reply(StatusCode::BAD_REQUEST, r#"{"error":"invalid_request"}"#.into());
    };
    let body = body.to_bytes();
    let token = form_urlencoded::parse(&body).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned());
    let mut out = token.and_then(|t| known.answers.get(&t).cloned()).unwrap_or_else(|| serde_json::json!({}));
    let active = out.as_object().is_some_and(|o| !o.is_empty());
    if let Some(o) = out.as_object_mut() {
        o.insert("active".into(), active.into());
    }
    reply(StatusCode::OK, out.to_string())
}
