//! Accept loop and per-connection serving: TLS handshake (client certificate required), protocol
//! by ALPN, graceful shutdown, and the hyper service that records and answers each request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use super::fhir::{outcome, ApiRequest, FhirApi, Reply};
use super::{Recorder, RunningUpstream, SeenRequest, MAX_RECORDED_BODY};
use crate::demo::data::SampleData;
use crate::demo::pki::cert_thumbprint;

/// Largest request body read (batch Bundles, form searches).
const MAX_BODY: usize = 1024 * 1024;
/// A client that has not finished the handshake by then is dropped (slowloris bound).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A validated configuration, ready to serve on a bound listener.
pub(super) struct Prepared {
    pub(super) tls: Option<Arc<ServerConfig>>,
    pub(super) base_path: String,
    pub(super) public_base_url: Option<String>,
    pub(super) data: Arc<SampleData>,
    pub(super) recorder: Recorder,
    pub(super) export_copies: usize,
    pub(super) gzip: super::Gzip,
}

struct Shared {
    api: FhirApi,
    base_path: String,
    public_base_url: Option<String>,
    scheme: &'static str,
    addr: SocketAddr,
    recorder: Recorder,
    gzip: super::Gzip,
    auto: Builder<TokioExecutor>,
    h1: Builder<TokioExecutor>,
    h2: Builder<TokioExecutor>,
}

/// Facts about one connection, shared by its requests.
struct ConnMeta {
    peer: SocketAddr,
    thumbprint: Option<Arc<str>>,
    sni: Option<Arc<str>>,
}

impl Prepared {
    pub(super) fn start(self, listener: TcpListener) -> RunningUpstream {
        let addr = listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let auto = Builder::new(TokioExecutor::new());
        let shared = Arc::new(Shared {
            api: FhirApi::new(self.data.clone()).with_export_copies(self.export_copies),
            base_path: self.base_path.clone(),
            public_base_url: self.public_base_url,
            scheme,
            addr,
            recorder: self.recorder.clone(),
            gzip: self.gzip,
            h1: auto.clone().http1_only(),
            h2: auto.clone().http2_only(),
            auto,
        });
        let (tx, rx) = oneshot::channel();
        let acceptor = self.tls.map(TlsAcceptor::from);
        let task = tokio::spawn(accept_loop(listener, acceptor, shared, rx));
        RunningUpstream {
            addr,
            recorder: self.recorder,
            data: self.data,
            base_url: format!("{scheme}://{addr}{}", self.base_path),
            shutdown: Some(tx),
            task: Some(task),
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            // A send or a dropped sender both mean stop.
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    // The watcher is taken here, before the task runs, so a shutdown that
                    // races the handshake still reaches this connection.
                    let watcher = graceful.watcher();
                    tokio::spawn(connection(tcp, peer, acceptor.clone(), shared.clone(), watcher));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on the error.
                    log::warn!("sample upstream: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    watcher: Watcher,
) {
    let _ = tcp.set_nodelay(true);
    let Some(acceptor) = acceptor else {
        let meta = ConnMeta { peer, thumbprint: None, sni: None };
        return serve_io(tcp, &shared.auto, shared.clone(), meta, watcher).await;
    };
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        // No client certificate, one from another CA, TLS 1.2, or a stalled client: the
        // connection ends here, before any HTTP is read.
        Ok(Err(e)) => return log::debug!("sample upstream: handshake from {peer} failed: {e}"),
        Err(_) => return log::debug!("sample upstream: handshake from {peer} timed out"),
    };
    let session = tls.get_ref().1;
    let meta = ConnMeta {
        peer,
        thumbprint: session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| Arc::from(cert_thumbprint(c))),
        sni: session.server_name().map(Arc::from),
    };
    let builder = if session.alpn_protocol() == Some(b"h2") { &shared.h2 } else { &shared.h1 };
    let builder = builder.clone();
    serve_io(tls, &builder, shared, meta, watcher).await;
}

async fn serve_io<I>(
    io: I,
    builder: &Builder<TokioExecutor>,
    shared: Arc<Shared>,
    meta: ConnMeta,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let meta = Arc::new(meta);
    let svc = service_fn(move |req| handle(req, shared.clone(), meta.clone()));
    let conn = builder.serve_connection(TokioIo::new(io), svc).into_owned();
    if let Err(e) = watcher.watch(conn).await {
        log::debug!("sample upstream: connection ended with error: {e}");
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    meta: Arc<ConnMeta>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(()),
    };
    if shared.recorder.enabled() {
        record(&shared.recorder, &parts, &meta, body.as_ref().ok());
    }
    let Ok(body) = body else {
        let too_large =
            outcome(http::StatusCode::PAYLOAD_TOO_LARGE, "too-costly", "The request body is too large.");
        return Ok(respond(too_large, false));
    };
    let Some(path) = strip_base(parts.uri.path(), &shared.base_path) else {
        return Ok(respond(outcome(http::StatusCode::NOT_FOUND, "not-found", "No such endpoint."), false));
    };
    let base_url = base_url(&shared, &parts);
    let form_body = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/x-www-form-urlencoded"));
    let reply = shared.api.handle(&ApiRequest {
        method: &parts.method,
        path,
        query: parts.uri.query().unwrap_or(""),
        base_url: &base_url,
        form_body,
        body: &body,
        headers: &parts.headers,
    });
    let gzip = match shared.gzip {
        super::Gzip::Always => true,
        super::Gzip::WhenAsked => accepts_gzip(&parts.headers),
    };
    let mut res = respond(reply, gzip);
    // Like many FHIR servers' permissive CORS defaults: the gateway's policy must replace it.
    if parts.headers.contains_key(header::ORIGIN) {
        res.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        let exposed = HeaderValue::from_static("x-upstream-internal");
        res.headers_mut().insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, exposed);
    }
    Ok(res)
}

fn record(recorder: &Recorder, parts: &http::request::Parts, meta: &ConnMeta, body: Option<&Bytes>) {
    recorder.record(SeenRequest {
        method: parts.method.clone(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        headers: parts.headers.clone(),
        version: parts.version,
        client_cert_thumbprint: meta.thumbprint.clone(),
        sni: meta.sni.clone(),
        peer: meta.peer,
        // An oversized body is recorded with length 0: it was refused before being read whole.
        body_len: body.map_or(0, Bytes::len),
        body: body.filter(|b| b.len() <= MAX_RECORDED_BODY).cloned(),
    });
}

/// The path below the base, without its leading `/`; None when the path is outside the base.
fn strip_base<'a>(path: &'a str, base: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(base)?;
    if rest.is_empty() {
        return Some("");
    }
    rest.strip_prefix('/')
}

/// `scheme://authority/base` for links. The authority comes from the request only when it is a
/// plain host\[:port\]; anything else falls back to the bound address, so a hostile `Host` cannot
/// steer the links.
fn base_url(shared: &Shared, parts: &http::request::Parts) -> String {
    if let Some(url) = &shared.public_base_url {
        return format!("{url}{}", shared.base_path);
    }
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .filter(|a| {
            !a.is_empty()
                && a.len() <= 255
                && a.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        });
    match authority {
        Some(a) => format!("{}://{a}{}", shared.scheme, shared.base_path),
        None => format!("{}://{}{}", shared.scheme, shared.addr, shared.base_path),
    }
}

/// Whether `Accept-Encoding` names `gzip` (or `*`) without `q=0`.
fn accepts_gzip(headers: &http::HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let refused = parts.any(|p| p.replace(' ', "") == "q=0" || p.replace(' ', "") == "q=0.0");
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
    })
}

/// Bodies shorter than this go as they are.
const GZIP_MIN_BYTES: usize = 1024;

fn gzipped(body: &[u8]) -> Option<Bytes> {
    use std::io::Write as _;
    let mut enc =
        flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
    enc.write_all(body).ok()?;
    enc.finish().ok().map(Bytes::from)
}

fn respond(reply: Reply, gzip: bool) -> Response<Full<Bytes>> {
    let compressed = (gzip && reply.body.len() >= GZIP_MIN_BYTES).then(|| gzipped(&reply.body)).flatten();
    let encoded = compressed.is_some();
    let mut res = Response::new(Full::new(compressed.unwrap_or(reply.body)));
    if encoded {
        res.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    res.headers_mut().insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    *res.status_mut() = reply.status;
    let headers = res.headers_mut();
    if let Some(content_type) = reply.content_type {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    if let Some(etag) = reply.etag {
        headers.insert(header::ETAG, HeaderValue::from_static(etag));
    }
    for (name, value) in reply.headers {
        headers.append(name, value);
    }
    res
}
