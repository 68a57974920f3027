//! The per-request state the proxy keeps around the stages' [`RequestCtx`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::HeaderName;
use phigate_plugin::{ErrorCode, RequestCtx, RequestId};

/// Per-request proxy state.
#[derive(Debug)]
pub struct GatewayCtx {
    /// The id echoed as `x-request-id`.
    pub request_id: RequestId,
    /// When the request head was read.
    pub started: Instant,
    /// The stages' context, once the request is routed.
    pub req: Option<RequestCtx>,
    /// Whether error bodies are FHIR `OperationOutcome`s.
    pub fhir: bool,
    /// Route name for metrics (`-` when unrouted).
    pub route_label: std::sync::Arc<str>,
    /// Index of the upstream to forward to.
    pub upstream: usize,
    /// Index of the endpoint of the current connection attempt.
    pub endpoint: usize,
    /// Endpoints that failed to connect (bit `i` = endpoint `i`; see [`crate::upstream::tried_bit`]).
    pub tried: u64,
    /// Connect retries made so far.
    pub connect_retries: u32,
    /// The target to forward (rebuilt from the normalized form).
    pub forward_target: Option<String>,
    /// Inbound headers to remove before forwarding.
    pub strip: Vec<HeaderName>,
    /// The `X-Forwarded-For` value to send.
    pub forwarded_for: Option<String>,
    /// When the request was handed to the upstream.
    pub upstream_sent_at: Option<Instant>,
    /// The code the request ended with, when it failed.
    pub error: Option<ErrorCode>,
    /// A replacement body: the upstream body is dropped and this is sent instead.
    pub replace_body: Option<Bytes>,
    /// The upstream body being buffered for inspection.
    pub buffered: Option<BytesMut>,
    /// The request's trace, when tracing is on.
    pub trace: Option<crate::telemetry::RequestTrace>,
    /// CORS state, on a route with a CORS policy: every response is decorated with it.
    pub cors: Option<crate::cors::CorsState>,
    /// The request's place among its upstream's `max_requests_in_flight` (held until the
    /// context is dropped, after logging).
    pub in_flight: Option<crate::upstream::InFlight>,
}

static UNROUTED: LazyLock<std::sync::Arc<str>> = LazyLock::new(|| "-".into());

impl GatewayCtx {
    /// A fresh context with a new request id.
    pub fn new() -> Self {
        GatewayCtx {
            request_id: next_request_id(),
            started: Instant::now(),
            req: None,
            fhir: false,
            route_label: UNROUTED.clone(),
            upstream: 0,
            endpoint: 0,
            tried: 0,
            connect_retries: 0,
            forward_target: None,
            strip: Vec::new(),
            forwarded_for: None,
            upstream_sent_at: None,
            error: None,
            replace_body: None,
            buffered: None,
            trace: None,
            cors: None,
            in_flight: None,
        }
    }
}

impl GatewayCtx {
    /// Notes, for tracing, that the upstream answered (or failed) now.
    pub(crate) fn upstream_answered(&mut self) {
        if let Some((_, answered @ None)) = self.trace.as_mut().and_then(|t| t.upstream.as_mut()) {
            *answered = Some(Instant::now());
        }
    }
}

impl Default for GatewayCtx {
    fn default() -> Self {
        Self::new()
    }
}

/// A random per-process prefix plus a counter: unique, cheap (no syscall, one small allocation),
/// and carrying no request data.
fn next_request_id() -> RequestId {
    static PREFIX: LazyLock<u64> = LazyLock::new(rand::random);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    RequestId::new(format!("{:016x}{n:012x}", *PREFIX))
}
