//! The HTTPS client that asks the introspection endpoint (RFC 7662 §2.1): one POST per call,
//! kept-alive connections, on a one-thread runtime the client owns.
//!
//! A request is served on a pingora worker's runtime; a pooled connection's task spawned there
//! would be tied to whichever worker happened to open it. On its own runtime the pool belongs to
//! the client alone, and a request only waits for the call's answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use super::config::{AssertionKey, ClientAuth, Credentials};

/// How long a client assertion is good for (RFC 7523 §3: short-lived).
const ASSERTION_LIFETIME_SECS: i64 = 60;

/// `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Introspection answers are small JSON objects; anything larger is refused.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why a call got no usable answer (log and metric label only; never the token or a body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CallError {
    /// No answer within `timeout_ms` (queueing included).
    #[error("timed out")]
    Timeout,
    /// Connection, TLS or HTTP failure.
    #[error("connection or TLS failure")]
    Connect,
    /// A status other than 200 (401/403: the gateway's own client credentials are refused).
    #[error("status {0}")]
    Status(u16),
    /// Not a JSON object with a boolean `active`, or too large.
    #[error("answer is not an introspection response")]
    Body,
    /// The client was shut down.
    #[error("client stopped")]
    Stopped,
    /// The client assertion could not be signed.
    #[error("client assertion not signed")]
    Assertion,
}

impl CallError {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            CallError::Timeout => "timeout",
            CallError::Connect => "connect",
            CallError::Status(_) => "status",
            CallError::Body => "body",
            CallError::Stopped => "stopped",
            CallError::Assertion => "assertion",
        }
    }
}

/// What the endpoint said about a token.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// `active: true`, with every member of the answer.
    Active(Arc<Map<String, Value>>),
    /// `active: false` (RFC 7662 §2.2: nothing else is said, whatever the reason).
    Inactive,
}

/// A configured endpoint and its credentials.
pub(crate) struct Client {
    runtime: Option<tokio::runtime::Runtime>,
    inner: Arc<Inner>,
}

struct Inner {
    http: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoint: Uri,
    basic: Option<HeaderValue>,
    /// The form fields after `token` and the hint (client id, and the secret for `client_secret_post`).
    form_tail: String,
    /// `private_key_jwt`: the key and the claims every assertion repeats.
    assertion: Option<Assertion>,
    slots: Semaphore,
    timeout: Duration,
}

impl Drop for Client {
    // May be dropped on an async thread (a reload), where a runtime may not block to stop.
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The settings a client is built from.
pub(crate) struct Settings<'a> {
    pub(crate) endpoint: &'a str,
    pub(crate) roots: rustls::RootCertStore,
    pub(crate) auth: ClientAuth,
    pub(crate) client_id: &'a str,
    pub(crate) credentials: Credentials,
    pub(crate) max_in_flight: usize,
    pub(crate) timeout: Duration,
}

impl Client {
    /// Checks the endpoint (https, a host) and builds the TLS client and its runtime.
    pub(crate) fn new(s: Settings<'_>) -> Result<Self, String> {
        let endpoint: Uri = s.endpoint.parse().map_err(|_| "not a valid URI".to_owned())?;
        if endpoint.scheme_str() != Some("https") || endpoint.host().is_none() {
            return Err("must be an https URI with a host".into());
        }
        let builder =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|_| "TLS configuration failed".to_owned())?
                .with_root_certificates(s.roots);
        let mut assertion = None;
        let (tls, basic, secret_in_form) = match s.credentials {
            Credentials::Secret(secret) if s.auth == ClientAuth::ClientSecretBasic => {
                (builder.with_no_client_auth(), Some(basic_header(s.client_id, &secret)?), None)
            }
            Credentials::Secret(secret) => (builder.with_no_client_auth(), None, Some(secret)),
            Credentials::Certificate(chain, key) => (
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|_| "client_key_path is not the key of client_cert_path".to_owned())?,
                None,
                None,
            ),
            Credentials::Assertion(key) => {
                assertion =
                    Some(Assertion { key, client_id: s.client_id.to_owned(), aud: s.endpoint.to_owned() });
                (builder.with_no_client_auth(), None, None)
            }
        };
        let mut form_tail = String::new();
        if basic.is_none() {
            let mut f = form_urlencoded::Serializer::new(String::new());
            f.append_pair("client_id", s.client_id);
            if let Some(secret) = &secret_in_form {
                f.append_pair("client_secret", secret);
            }
            form_tail = f.finish();
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("phigate-introspect")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the client runtime: {e}"))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(s.max_in_flight)
            .build(connector);
        let inner = Inner {
            http,
            endpoint,
            basic,
            form_tail,
            assertion,
            slots: Semaphore::new(s.max_in_flight),
            timeout: s.timeout,
        };
        Ok(Client { runtime: Some(runtime), inner: Arc::new(inner) })
    }

    /// Asks about `token`; `now` (Unix seconds) dates a client assertion. Waits at most
    /// `timeout_ms` in all.
    pub(crate) async fn introspect(&self, token: &str, now: i64) -> Result<Answer, CallError> {
        let rt = self.runtime.as_ref().ok_or(CallError::Stopped)?;
        let inner = Arc::clone(&self.inner);
        let token = token.to_owned();
        let timeout = inner.timeout;
        // The limit applies inside the task as well: a call the request gave up on must not keep
        // its slot (and its connection) while an endpoint that accepted it never answers.
        let call = rt.spawn(async move {
            let limited = tokio::time::timeout(timeout, async {
                let _slot = inner.slots.acquire().await.map_err(|_| CallError::Stopped)?;
                // Signed here, on the client's own thread, not on the request's worker.
                let body = inner.form(&token, now)?;
                inner.post(body).await
            });
            limited.await.map_err(|_| CallError::Timeout)?
        });
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(CallError::Stopped),
            Err(_) => Err(CallError::Timeout),
        }
    }
}

impl Inner {
    /// `token=…&token_type_hint=access_token[&client_id=…[&client_secret=…]]`, and for
    /// `private_key_jwt` `&client_assertion_type=…&client_assertion=…` signed now.
    fn form(&self, token: &str, now: i64) -> Result<Bytes, CallError> {
        let mut f = form_urlencoded::Serializer::new(String::with_capacity(token.len() + 64));
        f.append_pair("token", token);
        f.append_pair("token_type_hint", "access_token");
        // (`client_id` is in the form tail: every method without Basic sends it once.)
        if let Some(a) = &self.assertion {
            f.append_pair("client_assertion_type", JWT_BEARER);
            f.append_pair("client_assertion", &a.sign(now)?);
        }
        let mut s = f.finish();
        if !self.form_tail.is_empty() {
            s.push('&');
            s.push_str(&self.form_tail);
        }
        Ok(Bytes::from(s))
    }

    async fn post(&self, body: Bytes) -> Result<Answer, CallError> {
        let mut req = Request::post(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, "phigate")
            .body(Full::new(body))
            .map_err(|_| CallError::Connect)?;
        if let Some(b) = &self.basic {
            req.headers_mut().insert(AUTHORIZATION, b.clone());
        }
        let resp = self.http.request(req).await.map_err(|_| CallError::Connect)?;
        // Redirects are not followed: where tokens are sent is configuration.
        if resp.status() != StatusCode::OK {
            return Err(CallError::Status(resp.status().as_u16()));
        }
        let bytes = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|_| CallError::Body)?
            .to_bytes();
        parse_answer(&bytes)
    }
}

/// What signs `private_key_jwt` client assertions.
struct Assertion {
    key: AssertionKey,
    client_id: String,
    /// The endpoint: the audience of every assertion.
    aud: String,
}

impl Assertion {
    /// A fresh assertion (RFC 7523 §3): issuer and subject the client, audience the endpoint, a
    /// random `jti` (a server may refuse one it has seen), short-lived.
    fn sign(&self, now: i64) -> Result<String, CallError> {
        use ring::rand::SecureRandom;
        let mut jti = [0u8; 16];
        ring::rand::SystemRandom::new().fill(&mut jti).map_err(|_| CallError::Assertion)?;
        let claims = serde_json::json!({
            "iss": self.client_id, "sub": self.client_id, "aud": self.aud,
            "jti": hex::encode(jti), "iat": now, "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let mut header = jsonwebtoken::Header::new(self.key.alg);
        header.kid.clone_from(&self.key.kid);
        jsonwebtoken::encode(&header, &claims, &self.key.key).map_err(|_| CallError::Assertion)
    }
}

/// RFC 7662 §2.2: a JSON object whose `active` is a boolean; only `true` is active.
pub(crate) fn parse_answer(bytes: &[u8]) -> Result<Answer, CallError> {
    let mut map: Map<String, Value> = serde_json::from_slice(bytes).map_err(|_| CallError::Body)?;
    match map.remove("active") {
        Some(Value::Bool(true)) => Ok(Answer::Active(Arc::new(map))),
        Some(Value::Bool(false)) => Ok(Answer::Inactive),
        // `"active": "true"` or a missing member is not an answer we can trust either way.
        _ => Err(CallError::Body),
    }
}

/// RFC 6749 §2.3.1: id and secret are form-encoded before they are joined and base64-encoded.
fn basic_header(id: &str, secret: &str) -> Result<HeaderValue, String> {
    use base64::Engine;
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", enc(id), enc(secret));
    let mut v =
        HeaderValue::try_from(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw)))
            .map_err(|_| "client credentials cannot be sent in a header".to_owned())?;
    v.set_sensitive(true);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_boolean_true_active_is_active() {
        assert!(
            matches!(parse_answer(br#"{"active":true,"sub":"a"}"#), Ok(Answer::Active(m)) if m["sub"] == "a")
        );
        assert!(matches!(parse_answer(br#"{"active":false}"#), Ok(Answer::Inactive)));
        for bad in [
            &br#"{"active":"true"}"#[..],
            br#"{"sub":"a"}"#,
            br#"[true]"#,
            b"active=true",
            br#"{"active":1}"#,
        ] {
            assert_eq!(parse_answer(bad).err(), Some(CallError::Body), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn basic_credentials_are_form_encoded_first() {
        let v = basic_header("gate way", "p:w&d").expect("header");
        use base64::Engine;
        let b64 = v.to_str().expect("ascii").strip_prefix("Basic ").expect("basic");
        let raw = base64::engine::general_purpose::STANDARD.decode(b64).expect("b64");
        assert_eq!(raw, b"gate+way:p%3Aw%26d");
        assert!(v.is_sensitive());
    }
}
