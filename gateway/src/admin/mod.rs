//! The admin service, on its own (loopback by default) port: `/healthz` (the process is up),
//! `/readyz` (upstream TLS material loaded and every stage ready: keys, policies, audit sink; the
//! details also count each upstream's healthy endpoints, which never make it not-ready),
//! `/metrics` (Prometheus text format), `/.well-known/phigate/jwks.json` (the public keys that
//! verify identity assertions, when the `assertion` stage is configured; no token: public keys),
//! and token-protected operator actions ([`actions`]).

pub mod actions;

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use phigate_assertion::AssertionStage;
use phigate_plugin::Readiness;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::runtime::Runtime;
pub use actions::AdminActions;

/// The admin HTTP app.
#[derive(Debug, Clone)]
pub struct AdminApp {
    rt: Arc<Runtime>,
    actions: AdminActions,
    assertion: Option<Arc<AssertionStage>>,
}

/// Where upstreams fetch the keys that verify identity assertions.
pub const JWKS_PATH: &str = "/.well-known/phigate/jwks.json";

impl AdminApp {
    /// An admin app reporting on this runtime, with no operator actions.
    pub fn new(rt: Arc<Runtime>) -> Self {
        AdminApp { rt, actions: AdminActions::default(), assertion: None }
    }

    /// The same, serving the JWKS of this assertion stage at [`JWKS_PATH`] (404 without one).
    pub fn with_assertion(mut self, assertion: Option<Arc<AssertionStage>>) -> Self {
        self.assertion = assertion;
        self
    }

    /// The same, with these operator actions.
    pub fn with_actions(mut self, actions: AdminActions) -> Self {
        self.actions = actions;
        self
    }

    /// Readiness as (ready, JSON details).
    pub fn readiness(&self) -> (bool, serde_json::Value) {
        let mut ready = true;
        let mut stages = serde_json::Map::new();
        for (name, r) in self.rt.pipeline.readiness() {
            let (ok, detail) = match r {
                Readiness::Ready(detail) => (true, detail.unwrap_or_default()),
                Readiness::NotReady(why) => (false, why.into_owned()),
            };
            self.rt.metrics.stage_ready.with_label_values(&[name]).set(i64::from(ok));
            ready &= ok;
            stages.insert(name.to_owned(), json!({ "ready": ok, "detail": detail }));
        }
        // Upstream TLS material is loaded when the runtime is built, so it is ready by construction.
        // Endpoint health is shown but never makes the gateway not-ready: restarting gateways does
        // not heal an upstream, and every replica failing readiness at once would cascade.
        let upstreams: Vec<_> = self
            .rt
            .upstreams
            .iter()
            .map(|u| {
                let (healthy, total) = u.health_counts();
                json!({ "name": &*u.name, "healthy_endpoints": healthy, "endpoints": total })
            })
            .collect();
        (ready, json!({ "ready": ready, "stages": stages, "upstreams": upstreams }))
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_owned();
        if let Some(reply) = self.actions.handle(session, &path).await {
            let mut res = Response::builder()
                .status(reply.status)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(http::header::CONTENT_LENGTH, reply.body.len());
            if reply.challenge {
                res = res.header(http::header::WWW_AUTHENTICATE, actions::challenge());
            }
            return res.body(reply.body).unwrap_or_else(|_| Response::new(Vec::new()));
        }
        let (status, content_type, body) = match path.as_str() {
            "/healthz" => (StatusCode::OK, "application/json", br#"{"status":"ok"}"#.to_vec()),
            "/readyz" => {
                let (ready, details) = self.readiness();
                let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                (status, "application/json", details.to_string().into_bytes())
            }
            "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", crate::metrics::render()),
            JWKS_PATH if self.assertion.is_some() => {
                let jwks = self.assertion.as_ref().map(|a| a.jwks_json().to_vec()).unwrap_or_default();
                (StatusCode::OK, phigate_assertion::JWKS_CONTENT_TYPE, jwks)
            }
            _ => (
                StatusCode::NOT_FOUND,
                "application/json",
                br#"{"error":{"code":"route_not_found"}}"#.to_vec(),
            ),
        };
        let len = body.len();
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, len)
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
