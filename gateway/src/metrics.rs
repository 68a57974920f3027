//! The gateway's Prometheus metrics, registered once per process in the default registry (stage
//! crates register theirs there too, so `/metrics` shows everything).
//!
//! Labels come from bounded sets only: route, listener and upstream names from the config, status
//! codes, error codes. Never user, patient or raw path values.

use std::sync::{Arc, LazyLock};

use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge, register_int_gauge_vec,
    HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
};

/// All gateway metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Requests by route, status and error code (`ok` when none).
    pub requests: IntCounterVec,
    /// End-to-end latency seen by the gateway, by route.
    pub request_duration: HistogramVec,
    /// Upstream connection failures by upstream and kind (`tls`, `connect`, `timeout`,
    /// `no_healthy_endpoint`).
    pub upstream_connect_errors: IntCounterVec,
    /// Requests refused because their upstream had `max_requests_in_flight`, by upstream.
    pub upstream_overloaded: IntCounterVec,
    /// Health of each upstream endpoint (1 healthy, 0 not), by upstream and endpoint.
    pub upstream_endpoint_healthy: IntGaugeVec,
    /// Requests waiting for a place among `max_requests_in_flight`, by upstream.
    pub upstream_pending: IntGaugeVec,
    /// TLS handshakes that reached certificate selection, by listener.
    pub tls_handshakes_started: IntCounterVec,
    /// TLS handshakes that completed, by listener.
    pub tls_handshakes_completed: IntCounterVec,
    /// Client certificates rejected during the handshake, by listener.
    pub tls_client_cert_rejected: IntCounterVec,
    /// Certificate reloads by listener and result.
    pub cert_reloads: IntCounterVec,
    /// Readiness of each stage (1 ready, 0 not).
    pub stage_ready: IntGaugeVec,
    /// Changes (policy revisions, certificates) that took effect but are not in the audit trail,
    /// by action and reason.
    pub change_records_failed: IntCounterVec,
    /// Changes that took effect, failed to be recorded and are being tried again.
    pub change_records_pending: IntGauge,
    /// CORS preflights answered by the gateway, by route and outcome (`allowed`,
    /// `origin_not_allowed`, `method_not_allowed`, `header_not_allowed`). Never by origin: the
    /// `Origin` header is client-chosen, so its values are unbounded.
    pub cors_preflights: IntCounterVec,
    /// Bulk export URLs handed to clients, by what (`status`: a kick-off's status URL;
    /// `manifest`: a completed export's manifest) and result (`issued`, or `removed`: a status
    /// URL the gateway could not issue, left out).
    pub bulk_urls: IntCounterVec,
}

static METRICS: LazyLock<Result<Arc<Metrics>, prometheus::Error>> = LazyLock::new(|| {
    Ok(Arc::new(Metrics {
        requests: register_int_counter_vec!(
            "phigate_requests_total",
            "Requests handled, by route, status and error code.",
            &["route", "status", "code"]
        )?,
        request_duration: register_histogram_vec!(
            "phigate_request_duration_seconds",
            "Time from request head to the end of the response, by route.",
            &["route"],
            vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
        )?,
        upstream_connect_errors: register_int_counter_vec!(
            "phigate_upstream_connect_errors_total",
            "Failures to connect to an upstream, by upstream and kind (tls, connect, timeout, no_healthy_endpoint).",
            &["upstream", "kind"]
        )?,
        upstream_overloaded: register_int_counter_vec!(
            "phigate_upstream_overloaded_total",
            "Requests refused with upstream_overloaded: their upstream had max_requests_in_flight.",
            &["upstream"]
        )?,
        upstream_endpoint_healthy: register_int_gauge_vec!(
            "phigate_upstream_endpoint_healthy",
            "Whether each upstream endpoint takes traffic (1) or failed its health checks (0).",
            &["upstream", "endpoint"]
        )?,
        upstream_pending: register_int_gauge_vec!(
            "phigate_upstream_pending_requests",
            "Requests waiting for a place among their upstream's max_requests_in_flight.",
            &["upstream"]
        )?,
        tls_handshakes_started: register_int_counter_vec!(
            "phigate_tls_handshakes_started_total",
            "TLS handshakes that reached certificate selection, by listener.",
            &["listener"]
        )?,
        tls_handshakes_completed: register_int_counter_vec!(
            "phigate_tls_handshakes_completed_total",
            "TLS handshakes that completed, by listener (started - completed = failed or in flight).",
            &["listener"]
        )?,
        tls_client_cert_rejected: register_int_counter_vec!(
            "phigate_tls_client_cert_rejected_total",
            "Client certificates rejected in the TLS handshake, by listener.",
            &["listener"]
        )?,
        cert_reloads: register_int_counter_vec!(
            "phigate_cert_reloads_total",
            "Listener certificate reloads, by listener and result.",
            &["listener", "result"]
        )?,
        stage_ready: register_int_gauge_vec!(
            "phigate_stage_ready",
            "Whether each pipeline stage is ready (1) or not (0).",
            &["stage"]
        )?,
        change_records_failed: register_int_counter_vec!(
            "phigate_change_records_failed_total",
            "Changes to what the gateway enforces that took effect but could not be recorded in the audit trail, by action and reason.",
            &["action", "reason"]
        )?,
        change_records_pending: register_int_gauge!(
            "phigate_change_records_pending",
            "Changes to what the gateway enforces that took effect, could not be recorded yet and are being tried again."
        )?,
        bulk_urls: register_int_counter_vec!(
            "phigate_bulk_urls_total",
            "Bulk export URLs handed to clients sealed to the principal, by url (status, manifest) and result (issued; removed: a status URL off the route; refused: a manifest naming a URL off the route, or not JSON).",
            &["url", "result"]
        )?,
        cors_preflights: register_int_counter_vec!(
            "phigate_cors_preflights_total",
            "CORS preflights answered by the gateway, by route and outcome.",
            &["route", "outcome"]
        )?,
    }))
});

/// The process-wide metrics.
///
/// # Errors
/// Only if another component registered a metric with one of these names.
pub fn metrics() -> Result<Arc<Metrics>, prometheus::Error> {
    METRICS.as_ref().cloned().map_err(|e| prometheus::Error::Msg(e.to_string()))
}

/// Renders the default registry in the Prometheus text format.
pub fn render() -> Vec<u8> {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    // Encoding into a Vec cannot fail for well-formed metric families.
    let _ = encoder.encode(&prometheus::gather(), &mut buf);
    buf
}
