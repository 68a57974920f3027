//! Distributed tracing (config `tracing:`): one server span per request, with a child span per
//! stage and one for the upstream exchange, exported over OTLP/HTTP (protobuf) to a collector;
//! W3C trace context (`traceparent`) is read from clients and sent to upstreams.
//!
//! **No PHI in traces.** A trace leaves the PHI boundary (collectors, vendors), so span names and
//! attributes come from a fixed allow-list: method, route name, FHIR interaction and resource
//! type, status, error code, decision, policy revision, tenant, request id. Never the path
//! (`Patient/123`), the query, the subject, the client address (a HIPAA identifier), tokens or
//! bodies.
//!
//! **Off the request path.** Spans are queued in memory (bounded: a full queue drops spans and
//! the SDK counts them) and exported in batches by the SDK's own thread; the HTTP client runs on
//! a single-thread runtime of its own, so an export never occupies a pingora worker. An
//! unsampled request costs one non-recording span.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, Span,
};
use opentelemetry_sdk::Resource;
use schemars::JsonSchema;
use serde::Deserialize;

/// Tracing settings. Absent: no tracing (no spans, `traceparent` passes through untouched).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP traces endpoint, like `http://127.0.0.1:4318/v1/traces` (an
    /// OpenTelemetry Collector beside the gateway) or `https://collector.internal:4318/v1/traces`
    /// (TLS 1.3, the server certificate checked against `ca_path` or the system's roots).
    /// Collector headers (an API key) come from the standard `OTEL_EXPORTER_OTLP_TRACES_HEADERS`
    /// environment variable, never from this file.
    pub otlp_endpoint: String,
    /// For an `https://` endpoint: PEM file of the CA(s) trusted for the collector's certificate
    /// (relative to the config file). Absent: the system's trusted roots.
    #[serde(default)]
    pub ca_path: Option<PathBuf>,
    /// For an `https://` collector that requires mutual TLS: PEM file of the gateway's client
    /// certificate chain (relative to the config file). Requires `client_key_path`. Absent: no
    /// client certificate.
    #[serde(default)]
    pub client_cert_path: Option<PathBuf>,
    /// The private key (PEM) of `client_cert_path`. Requires `client_cert_path`. Keep it
    /// readable by the gateway only.
    #[serde(default)]
    pub client_key_path: Option<PathBuf>,
    /// `service.name` of the spans. Default: `phigate`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Share of new traces recorded, 0.0 to 1.0. A request that carries a sampled parent is
    /// recorded whatever the ratio (parent-based sampling). Default: 1.0.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// Continue the client's trace from its `traceparent`. Off: every request starts a new
    /// trace and the client's context is replaced. The context is never trusted for anything
    /// else. Default: true.
    #[serde(default = "default_true")]
    pub trust_inbound_context: bool,
    /// A child span for each stage that ran (and the pre-read). Off: a request is its server
    /// span and its upstream span only, which halves the cost of a traced request (about 5 µs
    /// of CPU instead of 10 on the load-test machine). Default: true.
    #[serde(default = "default_true")]
    pub stage_spans: bool,
    /// Spans kept waiting for export; more are dropped. Default: 4096.
    #[serde(default = "default_max_queue_spans")]
    pub max_queue_spans: usize,
    /// Time between exports of the queued spans, in milliseconds. Default: 5000.
    #[serde(default = "default_export_interval_ms")]
    pub export_interval_ms: u64,
    /// Time limit of one export, in milliseconds. Default: 10000.
    #[serde(default = "default_export_timeout_ms")]
    pub export_timeout_ms: u64,
}

fn default_service_name() -> String {
    "phigate".into()
}
fn default_sample_ratio() -> f64 {
    1.0
}
fn default_true() -> bool {
    true
}
fn default_max_queue_spans() -> usize {
    4096
}
fn default_export_interval_ms() -> u64 {
    5000
}
fn default_export_timeout_ms() -> u64 {
    10_000
}

impl TracingConfig {
    /// What is wrong with the section, as `(key, message)` pairs.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let uri = self.otlp_endpoint.parse::<http::Uri>().ok().filter(|u| u.host().is_some());
        // Credentials in the URL would end up in error messages: they go in the environment.
        if uri.as_ref().and_then(http::Uri::authority).is_some_and(|a| a.as_str().contains('@')) {
            out.push((
                "otlp_endpoint",
                "must not carry credentials: set OTEL_EXPORTER_OTLP_TRACES_HEADERS instead".into(),
            ));
        }
        match uri.as_ref().and_then(http::Uri::scheme_str) {
            Some("https") => match (&self.client_cert_path, &self.client_key_path) {
                (Some(_), None) => out.push(("client_cert_path", "requires client_key_path".into())),
                (None, Some(_)) => out.push(("client_key_path", "requires client_cert_path".into())),
                _ => {}
            },
            Some("http") => {
                for (key, set) in [
                    ("ca_path", self.ca_path.is_some()),
                    ("client_cert_path", self.client_cert_path.is_some()),
                    ("client_key_path", self.client_key_path.is_some()),
                ] {
                    if set {
                        out.push((key, "is only used with an https:// endpoint".into()));
                    }
                }
            }
            _ => out.push(("otlp_endpoint", "not an http:// or https:// URL".into())),
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            out.push(("sample_ratio", "must be between 0.0 and 1.0".into()));
        }
        for (key, value) in [
            ("max_queue_spans", self.max_queue_spans as u64),
            ("export_interval_ms", self.export_interval_ms),
            ("export_timeout_ms", self.export_timeout_ms),
        ] {
            if value == 0 {
                out.push((key, "must be greater than 0".into()));
            }
        }
        if self.service_name.is_empty() {
            out.push(("service_name", "must not be empty".into()));
        }
        out
    }
}

/// The tracer, its exporter pipeline and the trace-context codec.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
    trust_inbound: bool,
    stage_spans: bool,
}

/// The tracing pipeline could not be built.
#[derive(Debug, thiserror::Error)]
#[error("tracing: {0}")]
pub struct TelemetryError(String);

impl Telemetry {
    /// Builds the exporter and the tracer provider (starts the export thread and the HTTP
    /// client's runtime). Relative paths are resolved against `dir`, the config file's directory.
    ///
    /// # Errors
    /// When the CA file does not load or the exporter cannot be built.
    pub fn new(cfg: &TracingConfig, dir: &Path) -> Result<Telemetry, TelemetryError> {
        let timeout = Duration::from_millis(cfg.export_timeout_ms);
        let client = client::OwnRuntimeClient::new(timeout, client::tls_config(cfg, dir)?)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(cfg.otlp_endpoint.clone())
            .with_timeout(timeout)
            .build()
            .map_err(|e| TelemetryError(e.to_string()))?;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(cfg.max_queue_spans)
            .with_scheduled_delay(Duration::from_millis(cfg.export_interval_ms))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter).with_batch_config(batch).build())
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(cfg.sample_ratio))))
            .with_resource(Resource::builder().with_service_name(cfg.service_name.clone()).build())
            .build();
        let tracer = provider.tracer("phigate");
        Ok(Telemetry {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
            trust_inbound: cfg.trust_inbound_context,
            stage_spans: cfg.stage_spans,
        })
    }

    /// Starts the server span of a request, continuing the client's trace when trusted. Its
    /// name (`METHOD route`) is set when it ends, once the route is known.
    pub fn start(&self, headers: &http::HeaderMap) -> RequestTrace {
        let parent = if self.trust_inbound {
            self.propagator.extract(&HeaderExtractor(headers))
        } else {
            Context::new()
        };
        let span = self
            .tracer
            .span_builder("request")
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        let context = parent.with_remote_span_context(span.span_context().clone());
        let time_stages = self.stage_spans && span.is_recording();
        RequestTrace { span, context, time_stages, stages: Vec::new(), upstream: None }
    }

    /// Sends everything queued to the collector now and waits for the answer (tests, shutdown).
    ///
    /// # Errors
    /// When an export fails.
    pub fn flush(&self) -> Result<(), TelemetryError> {
        self.provider.force_flush().map_err(|e| TelemetryError(e.to_string()))
    }

    /// Ends a request's trace: the stage and upstream spans (children, with the times they
    /// ran), then the server span with its attributes.
    pub fn finish(&self, mut trace: RequestTrace, end: Finish<'_>) {
        if trace.span.is_recording() {
            let parent = &trace.context;
            for (name, start, stop) in trace.stages.drain(..) {
                self.child(parent, name, SpanKind::Internal, start, stop);
            }
            if let Some((start, stop)) = trace.upstream {
                let stop = stop.unwrap_or_else(Instant::now);
                self.child(parent, "upstream", SpanKind::Client, start, stop);
            }
            trace.span.update_name(end.name());
            trace.span.set_attributes(end.attributes());
            // A server error is the gateway's (or its upstream's) failure; a refusal (4xx) is the
            // gateway doing its job, and no status at all is a client that went away.
            if end.status >= 500 {
                trace.span.set_status(Status::error(end.error_code.unwrap_or("internal_error")));
            }
        }
        trace.span.end();
    }

    fn child(&self, parent: &Context, name: &'static str, kind: SpanKind, start: Instant, stop: Instant) {
        let mut span = SpanBuilder::from_name(name)
            .with_kind(kind)
            .with_start_time(wall_clock(start))
            .start_with_context(&self.tracer, parent);
        span.end_with_timestamp(wall_clock(stop));
    }
}

/// A request's trace while it runs.
#[derive(Debug)]
pub struct RequestTrace {
    span: Span,
    /// The server span's context: the parent of the child spans and of the upstream's spans.
    context: Context,
    /// Whether stages are timed (recorded, with stage spans on).
    time_stages: bool,
    /// Stages as they ran: name, start, end.
    pub stages: Vec<(&'static str, Instant, Instant)>,
    /// The upstream exchange: sent, answered.
    pub upstream: Option<(Instant, Option<Instant>)>,
}

impl RequestTrace {
    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        self.span.span_context().trace_id().to_string()
    }

    /// Whether stage timings are wanted: the request is recorded and stage spans are on.
    pub fn times_stages(&self) -> bool {
        self.time_stages
    }

    /// The `traceparent` (and `tracestate`) the upstream should receive: the server span as its
    /// parent, with the sampling decision.
    pub fn inject(&self, telemetry: &Telemetry, mut set: impl FnMut(&'static str, String)) {
        let mut fields = Fields::default();
        telemetry.propagator.inject_context(&self.context, &mut fields);
        for (name, value) in fields.0 {
            set(name, value);
        }
    }
}

/// The allow-listed facts a server span ends with.
#[derive(Debug, Default)]
pub struct Finish<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Route name (`-` when unrouted).
    pub route: &'a str,
    /// Response status (0 when none was sent).
    pub status: u16,
    /// The stable error code, when the request failed.
    pub error_code: Option<&'static str>,
    /// The request id (`x-request-id`).
    pub request_id: &'a str,
    /// FHIR interaction and resource type.
    pub fhir: Option<(&'static str, Option<&'static str>)>,
    /// The policy decision: allowed, and the revision that decided.
    pub decision: Option<(bool, &'a str)>,
    /// The tenant addressed.
    pub tenant: Option<&'a str>,
}

impl Finish<'_> {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.route)
    }

    fn attributes(&self) -> Vec<KeyValue> {
        let mut out = vec![
            KeyValue::new("http.request.method", self.method.to_owned()),
            KeyValue::new("http.route", self.route.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(self.status)),
            KeyValue::new("phigate.request_id", self.request_id.to_owned()),
        ];
        if let Some(code) = self.error_code {
            out.push(KeyValue::new("error.type", code));
        }
        if let Some((interaction, ty)) = self.fhir {
            out.push(KeyValue::new("fhir.interaction", interaction));
            if let Some(ty) = ty {
                out.push(KeyValue::new("fhir.resource_type", ty));
            }
        }
        if let Some((allow, revision)) = self.decision {
            out.push(KeyValue::new("phigate.policy.allow", allow));
            out.push(KeyValue::new("phigate.policy.revision", revision.to_owned()));
        }
        if let Some(tenant) = self.tenant {
            out.push(KeyValue::new("phigate.tenant", tenant.to_owned()));
        }
        out
    }
}

/// An `Instant` of this process as wall-clock time (span timestamps are wall-clock).
fn wall_clock(at: Instant) -> SystemTime {
    let now = SystemTime::now();
    now.checked_sub(at.elapsed()).unwrap_or(now)
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The fields a propagator writes, with static names (`traceparent`, `tracestate`).
#[derive(Default)]
struct Fields(Vec<(&'static str, String)>);

impl Injector for Fields {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        let name = match key {
            "traceparent" => "traceparent",
            "tracestate" => "tracestate",
            _ => return,
        };
        self.0.push((name, value));
    }
}

mod client;

/// Headers a client's `traceparent` may not set upstream when the gateway sets its own.
pub const CONTEXT_HEADERS: [&str; 2] = ["traceparent", "tracestate"];
