//! Tracing end to end: the gateway exports real OTLP/HTTP protobuf batches to a collector on a
//! loopback port, continues the client's W3C trace, sends its own context upstream, records a
//! span per stage and one for the upstream exchange, and never puts PHI (path, patient ids,
//! subject, client address, token) in a span.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::writes::forwarded;
use common::FullEnv;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use phigate::demo::pki::CertAuthority;
use prost::Message;
use tokio::sync::mpsc;

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct Got {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    kind: i32,
    attributes: Vec<(String, String)>,
    service: String,
}

impl Got {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// An OTLP/HTTP traces receiver: decodes each batch and passes its spans on.
async fn collector() -> (SocketAddr, mpsc::UnboundedReceiver<Got>) {
    let (addr, rx, _) = collector_on(None).await;
    (addr, rx)
}

/// [`collector`], over TLS when `tls` is given; failed handshakes are reported on the third
/// channel.
async fn collector_on(
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (SocketAddr, mpsc::UnboundedReceiver<Got>, mpsc::UnboundedReceiver<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let (failed_tx, failed_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let tx = tx.clone();
            let failed_tx = failed_tx.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        for span in decode(&body) {
                            let _ = tx.send(span);
                        }
                        let answer = ExportTraceServiceResponse::default().encode_to_vec();
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(answer))))
                    }
                });
                let http1 = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => {
                        let _ = http1.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
                    }
                    Some(config) => match tokio_rustls::TlsAcceptor::from(config).accept(stream).await {
                        Ok(tls) => {
                            let _ = http1.serve_connection(hyper_util::rt::TokioIo::new(tls), service).await;
                        }
                        Err(_) => {
                            let _ = failed_tx.send(());
                        }
                    },
                }
            });
        }
    });
    (addr, rx, failed_rx)
}

fn decode(body: &[u8]) -> Vec<Got> {
    let batch = ExportTraceServiceRequest::decode(body).expect("a protobuf OTLP batch");
    let mut out = Vec::new();
    for rs in batch.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
            let attributes = span
                .attributes
                .iter()
                .map(|kv| (kv.key.clone(), text(kv.value.as_ref().and_then(|v| v.value.as_ref()))))
                .collect();
            out.push(Got {
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent: hex(&span.parent_span_id),
                kind: span.kind,
                attributes,
                service: service.clone(),
            });
        }
    }
    out
}

fn text(v: Option<&Any>) -> String {
    match v {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Collects spans until the server span named `name` of `trace_id` and every span of its trace
/// received before it are in (the SDK exports children first: they end first).
async fn trace_of(rx: &mut mpsc::UnboundedReceiver<Got>, trace_id: &str, name: &str) -> Vec<Got> {
    let mut spans = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(span) = rx.recv().await {
            let done = span.trace_id == trace_id && span.name == name;
            if span.trace_id == trace_id {
                spans.push(span);
            }
            if done {
                return;
            }
        }
    })
    .await
    .expect("the collector received the trace");
    spans
}

/// The first span named `name` the collector receives, whatever its trace (bounded wait).
async fn first_named(rx: &mut mpsc::UnboundedReceiver<Got>, name: &str) -> Got {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let span = rx.recv().await.expect("the collector is running");
            if span.name == name {
                return span;
            }
        }
    })
    .await
    .expect("the collector received the span")
}

async fn env(trust: bool, stage_spans: bool) -> (FullEnv, mpsc::UnboundedReceiver<Got>) {
    let (addr, rx) = collector().await;
    let extra = format!(
        "tracing:\n  otlp_endpoint: http://{addr}/v1/traces\n  service_name: phigate-test\n  \
         export_interval_ms: 50\n  trust_inbound_context: {trust}\n  stage_spans: {stage_spans}\n"
    );
    (FullEnv::start_with(|_| {}, &extra).await, rx)
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

async fn get_with_context(env: &FullEnv, persona: &str, path: &str) -> u16 {
    let res = env
        .pki
        .public_client()
        .get(&env.gw.url(path))
        .bearer(&env.token(persona))
        .header("traceparent", &format!("00-{TRACE}-{CLIENT_SPAN}-01"))
        .header("tracestate", "vendor=client")
        .send()
        .await
        .unwrap();
    res.status.as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_one_trace_continued_from_the_client_and_passed_upstream() {
    let (env, mut rx) = env(true, true).await;
    assert_eq!(get_with_context(&env, "clinician_a", "/fhir/Patient/a-p1").await, 200);

    // The upstream continues the gateway's trace, as a child of the gateway's server span.
    let seen = forwarded(&env).await;
    let sent = seen.headers.get("traceparent").unwrap().to_str().unwrap().to_owned();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!((parts[0], parts[1], parts[3]), ("00", TRACE, "01"), "{sent}");
    assert_ne!(parts[2], CLIENT_SPAN, "the upstream's parent is the gateway's span");

    let spans = trace_of(&mut rx, TRACE, "GET fhir").await;
    let server = spans.iter().find(|s| s.name == "GET fhir").unwrap();

    // The audit trail names the trace, so an investigator can go from a record to its spans.
    let records = env.audit_records();
    let access: Vec<_> = records.iter().filter(|r| r["kind"] == "access").collect();
    assert!(!access.is_empty());
    for r in access {
        assert_eq!(r["trace_id"], TRACE, "{r}");
    }
    assert_eq!(server.parent, CLIENT_SPAN, "continues the client's trace");
    assert_eq!(server.span_id, parts[2]);
    assert_eq!(server.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(server.service, "phigate-test");
    assert_eq!(server.attr("http.response.status_code"), Some("200"));
    assert_eq!(server.attr("http.route"), Some("fhir"));
    assert_eq!(server.attr("fhir.interaction"), Some("read"));
    assert_eq!(server.attr("fhir.resource_type"), Some("Patient"));
    assert_eq!(server.attr("phigate.policy.allow"), Some("true"));
    assert_eq!(server.attr("phigate.tenant"), Some("tenant-a"));
    assert!(server.attr("phigate.policy.revision").is_some_and(|r| r.len() == 16));

    // A child span per stage that ran, and one for the upstream exchange.
    let children: Vec<&str> =
        spans.iter().filter(|s| s.parent == server.span_id).map(|s| s.name.as_str()).collect();
    for stage in ["identity", "policy", "audit", "upstream"] {
        assert!(children.contains(&stage), "{stage} in {children:?}");
    }
    let upstream = spans.iter().find(|s| s.name == "upstream").unwrap();
    assert_eq!(upstream.kind, 3, "SPAN_KIND_CLIENT");

    // Nothing that identifies a patient or a person leaves in a span.
    let token = env.token("clinician_a");
    for span in &spans {
        for text in std::iter::once(&span.name).chain(span.attributes.iter().map(|(_, v)| v)) {
            for secret in ["a-p1", "clinician_a", "127.0.0.1", "/fhir/Patient", token.as_str()] {
                assert!(!text.contains(secret), "span {} carries {secret}: {text}", span.name);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_traced_with_its_code_and_an_untrusted_context_is_replaced() {
    let (env, mut rx) = env(false, false).await;
    assert_eq!(get_with_context(&env, "clinician_a", "/fhir/Patient/a-p3").await, 403);
    // Not trusted: the span starts a trace of its own, so look for it by name.
    let server = first_named(&mut rx, "GET fhir").await;
    assert_ne!(server.trace_id, TRACE);
    assert_eq!(server.parent, "", "a root span");
    assert_eq!(server.attr("http.response.status_code"), Some("403"));
    assert_eq!(server.attr("error.type"), Some("patient_not_permitted"));
    assert_eq!(server.attr("phigate.policy.allow"), Some("false"));

    // What the upstream gets carries the gateway's context, not the client's.
    assert_eq!(get_with_context(&env, "clinician_a", "/fhir/Patient/a-p1").await, 200);
    let seen = forwarded(&env).await;
    let sent = seen.headers.get("traceparent").unwrap().to_str().unwrap();
    assert!(!sent.contains(TRACE), "{sent}");
    assert!(
        seen.headers.get("tracestate").is_none(),
        "the client's tracestate is dropped: {:?}",
        seen.headers
    );

    // Without stage spans, a request is its server span and its upstream span.
    let trace = sent.split('-').nth(1).unwrap().to_owned();
    let spans = trace_of(&mut rx, &trace, "GET fhir").await;
    let mut names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["GET fhir", "upstream"]);
}

/// A collector over TLS with a certificate for `localhost` from its own CA.
fn collector_tls() -> (Arc<rustls::ServerConfig>, CertAuthority) {
    collector_tls_requiring(None)
}

/// [`collector_tls`], requiring a client certificate from `clients` when given.
fn collector_tls_requiring(clients: Option<&CertAuthority>) -> (Arc<rustls::ServerConfig>, CertAuthority) {
    let ca = CertAuthority::new("collector CA").unwrap();
    let cert = ca.issue_server(&["localhost"]).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap();
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some(clients) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(clients.root_store()),
                provider,
            )
            .build()
            .unwrap(),
        ),
    };
    let config = builder.with_single_cert(vec![cert.cert_der().clone()], cert.key_der()).unwrap();
    (Arc::new(config), ca)
}

async fn get_as(env: &FullEnv, persona: &str, path: &str) -> u16 {
    env.get_as(persona, path).await.0
}

fn tls_tracing(port: u16, ca_path: &std::path::Path) -> String {
    format!(
        "tracing:\n  otlp_endpoint: https://localhost:{port}/v1/traces\n  ca_path: {}\n  \
         export_interval_ms: 50\n",
        ca_path.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_https_collector_through_the_configured_ca() {
    let (tls, ca) = collector_tls();
    let (addr, mut rx, _) = collector_on(Some(tls)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("collector-ca.crt");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    let env = FullEnv::start_with(|_| {}, &tls_tracing(addr.port(), &ca_path)).await;
    assert_eq!(get_as(&env, "clinician_a", "/fhir/Patient/a-p1").await, 200);
    let server = first_named(&mut rx, "GET fhir").await;
    assert_eq!(server.attr("http.response.status_code"), Some("200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_certificate_from_another_ca_gets_no_span() {
    let (tls, _collector_ca) = collector_tls();
    let (_, other_ca) = collector_tls();
    let (addr, mut rx, mut failed) = collector_on(Some(tls)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("other-ca.crt");
    std::fs::write(&ca_path, other_ca.cert_pem()).unwrap();
    let env = FullEnv::start_with(|_| {}, &tls_tracing(addr.port(), &ca_path)).await;
    assert_eq!(get_as(&env, "clinician_a", "/fhir/Patient/a-p1").await, 200, "tracing never fails a request");
    tokio::time::timeout(Duration::from_secs(30), failed.recv())
        .await
        .expect("the gateway tried to export")
        .expect("and the handshake was refused");
    assert!(rx.try_recv().is_err(), "no span crossed an untrusted connection");
}

/// The client certificate the gateway presents to a collector that requires one.
enum ClientCert {
    None,
    FromTheCollectorsClientCa,
    FromAnotherCa,
}

/// A collector that requires a client certificate from its own client CA, and the gateway's
/// tracing section for it (files written under `dir`).
async fn mtls_collector(
    client: ClientCert,
    dir: &std::path::Path,
) -> (String, mpsc::UnboundedReceiver<Got>, mpsc::UnboundedReceiver<()>) {
    let client_ca = CertAuthority::new("collector clients").unwrap();
    let (tls, ca) = collector_tls_requiring(Some(&client_ca));
    let (addr, rx, failed) = collector_on(Some(tls)).await;
    let ca_path = dir.join("collector-ca.crt");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    let mut section = tls_tracing(addr.port(), &ca_path);
    let issuer = match client {
        ClientCert::None => return (section, rx, failed),
        ClientCert::FromTheCollectorsClientCa => client_ca,
        ClientCert::FromAnotherCa => CertAuthority::new("someone else").unwrap(),
    };
    let cert = issuer.issue_client("phigate").unwrap();
    let (cert_path, key_path) = (dir.join("otlp.crt"), dir.join("otlp.key"));
    std::fs::write(&cert_path, cert.cert_pem()).unwrap();
    std::fs::write(&key_path, cert.key_pem()).unwrap();
    section +=
        &format!("  client_cert_path: {}\n  client_key_path: {}\n", cert_path.display(), key_path.display());
    (section, rx, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_requiring_mutual_tls_gets_spans_from_the_configured_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (section, mut rx, _) = mtls_collector(ClientCert::FromTheCollectorsClientCa, dir.path()).await;
    let env = FullEnv::start_with(|_| {}, &section).await;
    assert_eq!(get_as(&env, "clinician_a", "/fhir/Patient/a-p1").await, 200);
    let server = first_named(&mut rx, "GET fhir").await;
    assert_eq!(server.attr("http.response.status_code"), Some("200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutual_tls_collector_refuses_a_gateway_without_a_trusted_client_certificate() {
    for client in [ClientCert::None, ClientCert::FromAnotherCa] {
        let dir = tempfile::tempdir().unwrap();
        let (section, mut rx, mut failed) = mtls_collector(client, dir.path()).await;
        let env = FullEnv::start_with(|_| {}, &section).await;
        assert_eq!(
            get_as(&env, "clinician_a", "/fhir/Patient/a-p1").await,
            200,
            "tracing never fails a request"
        );
        tokio::time::timeout(Duration::from_secs(30), failed.recv())
            .await
            .expect("the gateway tried to export")
            .expect("and the collector refused the handshake");
        assert!(rx.try_recv().is_err(), "no span reached the collector");
    }
}

#[test]
fn a_client_key_that_is_not_the_certificates_is_refused_at_start() {
    phigate::tls::install_tls13_only_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = CertAuthority::new("clients").unwrap();
    let (cert, other) = (ca.issue_client("phigate").unwrap(), ca.issue_client("other").unwrap());
    std::fs::write(dir.path().join("c.crt"), cert.cert_pem()).unwrap();
    std::fs::write(dir.path().join("c.key"), other.key_pem()).unwrap();
    std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();
    let cfg: phigate::telemetry::TracingConfig = serde_yaml::from_str(
        "otlp_endpoint: https://localhost:4318/v1/traces\nca_path: ca.crt\nclient_cert_path: c.crt\nclient_key_path: c.key\n",
    )
    .unwrap();
    let err = phigate::telemetry::Telemetry::new(&cfg, dir.path()).unwrap_err().to_string();
    assert!(err.contains("client_key_path") && err.contains("not the key of client_cert_path"), "{err}");
    std::fs::write(dir.path().join("c.key"), "not a key").unwrap();
    let err = phigate::telemetry::Telemetry::new(&cfg, dir.path()).unwrap_err().to_string();
    assert!(err.contains("client_key_path: not the PEM file expected here"), "{err}");
}
