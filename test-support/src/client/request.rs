//! One request on one fresh connection, and the collected response.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, HOST};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

use super::conn::{self, Target};
use super::{ClientError, TestClient};

/// A response with its body read in full.
#[derive(Debug, Clone)]
pub struct TestResponse {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// The HTTP version the response came on (`HTTP/2.0` when ALPN chose `h2`).
    pub version: Version,
}

impl TestResponse {
    /// The body parsed as JSON.
    ///
    /// # Panics
    /// When the body is not JSON (this is a test helper: the panic is the failed assertion).
    pub fn json(&self) -> serde_json::Value {
        match serde_json::from_slice(&self.body) {
            Ok(v) => v,
            Err(e) => panic!("response body is not JSON ({e}): {}", self.text()),
        }
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value as a string, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A request being built; [`RequestBuilder::send`] sends it.
#[derive(Debug)]
pub struct RequestBuilder {
    client: TestClient,
    method: Method,
    url: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    bad_header: bool,
}

impl RequestBuilder {
    pub(super) fn new(client: TestClient, method: Method, url: &str) -> Self {
        RequestBuilder {
            client,
            method,
            url: url.to_owned(),
            headers: Vec::new(),
            body: Bytes::new(),
            bad_header: false,
        }
    }

    /// Adds a header (repeated calls with one name send several values).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            (Ok(n), Ok(v)) => self.headers.push((n, v)),
            _ => self.bad_header = true,
        }
        self
    }

    /// Adds `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header(AUTHORIZATION.as_str(), &format!("Bearer {token}"))
    }

    /// The request body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends on a new connection and reads the whole response.
    ///
    /// # Errors
    /// On a bad URL or header, connection or TLS failure (see [`ClientError::tls_error`]), HTTP
    /// failure, or timeout.
    pub async fn send(self) -> Result<TestResponse, ClientError> {
        let timeout = self.client.timeout;
        tokio::time::timeout(timeout, self.send_inner()).await.map_err(|_| ClientError::Timeout)?
    }

    async fn send_inner(self) -> Result<TestResponse, ClientError> {
        if self.bad_header {
            return Err(ClientError::Config("invalid header name or value".into()));
        }
        let uri: http::Uri = self.url.parse().map_err(|_| ClientError::BadUrl)?;
        let target = Target::parse(&uri)?;
        let tcp = conn::tcp(&target.host, target.port).await?;
        if !target.tls {
            let h2 = self.client.h2_prior_knowledge;
            return self.exchange(tcp, h2, &uri, &target).await;
        }
        let name = target.server_name(self.client.server_name.as_ref())?;
        let tls = conn::tls(self.client.config.clone(), tcp, name).await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        self.exchange(tls, h2, &uri, &target).await
    }

    async fn exchange<I>(
        self,
        io: I,
        h2: bool,
        uri: &http::Uri,
        target: &Target,
    ) -> Result<TestResponse, ClientError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut req = Request::new(Full::new(self.body));
        *req.method_mut() = self.method;
        if h2 {
            // h2 carries scheme and authority as pseudo-headers taken from the absolute URI.
            *req.uri_mut() = uri.clone();
        } else {
            let origin = uri.path_and_query().map_or("/", |pq| pq.as_str());
            *req.uri_mut() = origin.parse().map_err(|_| ClientError::BadUrl)?;
            if !self.headers.iter().any(|(n, _)| n == HOST) {
                let host = HeaderValue::from_str(&target.authority).map_err(|_| ClientError::BadUrl)?;
                req.headers_mut().insert(HOST, host);
            }
        }
        for (n, v) in self.headers {
            req.headers_mut().append(n, v);
        }
        let res = send(TokioIo::new(io), h2, req).await?;
        let (parts, body) = res.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(TestResponse { status: parts.status, headers: parts.headers, body, version: parts.version })
    }
}

async fn send<I>(
    io: TokioIo<I>,
    h2: bool,
    req: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, ClientError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The connection task is kept: when the server ends the connection with a TLS alert (for
    // example `certificate_required` after a TLS 1.3 handshake), the alert is the connection's
    // error, and the request only sees "connection closed". Prefer the connection's error.
    if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        let conn = tokio::spawn(conn);
        match sender.send_request(req).await {
            Ok(res) => Ok(res),
            Err(e) => Err(conn_error(conn).await.unwrap_or(e).into()),
        }
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        let conn = tokio::spawn(conn);
        match sender.send_request(req).await {
            Ok(res) => Ok(res),
            Err(e) => Err(conn_error(conn).await.unwrap_or(e).into()),
        }
    }
}

async fn conn_error(conn: tokio::task::JoinHandle<Result<(), hyper::Error>>) -> Option<hyper::Error> {
    match conn.await {
        Ok(Err(e)) => Some(e),
        _ => None,
    }
}
