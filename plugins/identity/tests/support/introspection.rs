//! A real RFC 7662 introspection endpoint over TLS on 127.0.0.1: answers per token, records
//! what the gateway sent, and can fail, hang, or hold its answers until released.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio_rustls::TlsAcceptor;

use super::TestPki;

/// One request the endpoint received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub form: Vec<(String, String)>,
    pub client_cert: bool,
}

impl Seen {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// How the endpoint behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Answer,
    Status(u16),
    /// Never answers (the gateway's timeout must end the wait).
    Hang,
}

struct State {
    answers: Mutex<HashMap<String, String>>,
    seen: Mutex<Vec<Seen>>,
    mode: Mutex<Mode>,
    /// While true, answers wait until it turns false.
    held: watch::Sender<bool>,
    arrived: Notify,
}

pub struct IntrospectionServer {
    pub url: String,
    pub pki: TestPki,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl IntrospectionServer {
    /// Starts the endpoint; with `client_auth`, TLS client certificates of its CA are required.
    pub async fn start(client_auth: bool) -> Self {
        let pki = TestPki::new();
        let acceptor = TlsAcceptor::from(Arc::new(pki.server_config(client_auth)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            answers: Mutex::new(HashMap::new()),
            seen: Mutex::new(Vec::new()),
            mode: Mutex::new(Mode::Answer),
            held: watch::Sender::new(false),
            arrived: Notify::new(),
        });
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, st) = (acceptor.clone(), Arc::clone(&st));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let client_cert = tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                    let svc = service_fn(move |req| {
                        let st = Arc::clone(&st);
                        async move { Ok::<_, Infallible>(respond(&st, req, client_cert).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        IntrospectionServer { url: format!("https://{addr}/introspect"), pki, state, task }
    }

    /// The answer (a JSON object) for `token`; unknown tokens get `{"active": false}`.
    pub fn answer(&self, token: &str, body: serde_json::Value) {
        self.state.answers.lock().unwrap().insert(token.to_owned(), body.to_string());
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Holds every answer until [`Self::release`].
    pub fn hold(&self) {
        self.state.held.send_replace(true);
    }

    pub fn release(&self) {
        self.state.held.send_replace(false);
    }

    /// Resolves once a request has arrived (after [`Self::hold`], it is being held).
    pub async fn arrived(&self) {
        self.state.arrived.notified().await;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn calls(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    /// Writes the CA PEM into `dir` and returns the file name.
    pub fn write_ca(&self, dir: &std::path::Path) -> String {
        std::fs::write(dir.join("as-ca.pem"), &self.pki.ca_pem).unwrap();
        "as-ca.pem".into()
    }
}

impl Drop for IntrospectionServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn respond(st: &State, req: Request<Incoming>, client_cert: bool) -> Response<Full<Bytes>> {
    let header = |n: http::header::HeaderName| req.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
    let (authorization, content_type) =
        (header(http::header::AUTHORIZATION), header(http::header::CONTENT_TYPE));
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let token = form.iter().find(|(k, _)| k == "token").map(|(_, v)| v.clone()).unwrap_or_default();
    st.seen.lock().unwrap().push(Seen { authorization, content_type, form, client_cert });
    st.arrived.notify_one();
    let mut held = st.held.subscribe();
    let _ = held.wait_for(|h| !h).await;
    let mode = *st.mode.lock().unwrap();
    match mode {
        Mode::Hang => std::future::pending().await,
        Mode::Status(s) => Response::builder().status(s).body(Full::new(Bytes::new())).unwrap(),
        Mode::Answer => {
            let body = st.answers.lock().unwrap().get(&token).cloned();
            let body = body.unwrap_or_else(|| r#"{"active":false}"#.to_owned());
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap()
        }
    }
}
