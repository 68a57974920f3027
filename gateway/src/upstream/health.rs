//! Active health checks: one task per endpoint of every upstream with `health_check`, run on the
//! gateway's background runtime, flipping the endpoint's health flag after enough consecutive
//! results against its current state.
//!
//! A check goes over the endpoint's own prepared peer (the upstream's client certificate, CA and
//! SNI), so an endpoint whose certificate the gateway would refuse for traffic fails its checks
//! too. Each check opens a fresh connection on a connector of its own that never pools (a pooled
//! connection would hide a dead listener or a broken handshake), speaks HTTP/1.1 only (one
//! request, no h2 connection to share), and is bounded as a whole by `timeout_ms`.
//!
//! Pingora's `pingora-load-balancing` crate was not used: its selection returns an owned
//! `Backend` (an `Extensions` map cloned per request, with our `HttpPeer` to be cloned out of it
//! again), it needs pingora's `lb` feature and its crates, and the per-endpoint gauge, log lines
//! and readiness counts would have gone through its callbacks anyway.

use std::sync::Arc;
use std::time::Duration;

use http::header;
use phigate_plugin::BackgroundTask;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;

use super::{Endpoint, Upstream};
use crate::config::HealthCheckConfig;
use crate::metrics::Metrics;

/// `User-Agent` of checks, so upstream operators can tell them from traffic.
const USER_AGENT: &str = "phigate-health-check";

/// The checker tasks of every endpoint of every upstream with `health_check` (none without).
pub fn tasks(upstreams: &[Arc<Upstream>], metrics: &Arc<Metrics>) -> Vec<BackgroundTask> {
    if upstreams.iter().all(|u| u.health_check.is_none()) {
        return Vec::new();
    }
    let connector = Arc::new(Connector::new(None));
    let mut out: Vec<BackgroundTask> = Vec::new();
    for upstream in upstreams.iter().filter(|u| u.health_check.is_some()) {
        for index in 0..upstream.endpoints.len() {
            let checker = Checker {
                upstream: upstream.clone(),
                index,
                connector: connector.clone(),
                metrics: metrics.clone(),
            };
            out.push(Box::pin(checker.run()));
        }
    }
    out
}

/// Sets every endpoint's gauge to its current health (at start: all healthy).
pub fn publish(upstreams: &[Arc<Upstream>], metrics: &Metrics) {
    for u in upstreams {
        for e in &u.endpoints {
            show(u, e, metrics);
        }
    }
}

/// Publishes an endpoint's new health (gauge and event), after a check or traffic changed it.
pub fn published(upstream: &Upstream, endpoint: &Endpoint, metrics: &Metrics) {
    show(upstream, endpoint, metrics);
    let healthy = endpoint.is_healthy();
    crate::events::EndpointHealthChanged { upstream: &upstream.name, endpoint: &endpoint.label, healthy }
        .emit();
}

/// Sets the endpoint's gauge to whether it takes traffic now.
pub fn show(upstream: &Upstream, endpoint: &Endpoint, metrics: &Metrics) {
    metrics
        .upstream_endpoint_healthy
        .with_label_values(&[&*upstream.name, &*endpoint.label])
        .set(i64::from(endpoint.is_healthy()));
}

struct Checker {
    upstream: Arc<Upstream>,
    index: usize,
    connector: Arc<Connector>,
    metrics: Arc<Metrics>,
}

impl Checker {
    async fn run(self) {
        let Some(check) = self.upstream.health_check.clone() else { return };
        let Some(endpoint) = self.upstream.endpoints.get(self.index) else { return };
        let request = match request(&check, &self.upstream.sni, &endpoint.label) {
            Ok(r) => r,
            Err(_) => {
                log::error!("upstream {}: health check request cannot be built", self.upstream.name);
                return;
            }
        };
        let timeout = Duration::from_millis(check.timeout_ms);
        let mut tick = tokio::time::interval(Duration::from_millis(check.interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut streak = Streak::default();
        loop {
            tick.tick().await;
            // An empty address slot of a name has nothing to check; filled again, it starts
            // healthy with a fresh streak.
            if !endpoint.is_present() {
                streak = Streak::default();
                continue;
            }
            // The current peer: the endpoint's name may have resolved to a new address.
            let peer = probe_peer(endpoint, &check);
            let probe = probe(&self.connector, &peer, request.as_ref());
            let passed = matches!(tokio::time::timeout(timeout, probe).await, Ok(Ok(())));
            if let Some(healthy) = streak.observe(passed, endpoint.is_healthy(), &check) {
                endpoint.set_healthy(healthy);
                published(&self.upstream, endpoint, &self.metrics);
            }
        }
    }
}

/// The endpoint's peer, bounded by the check timeout and limited to HTTP/1.1.
fn probe_peer(endpoint: &Endpoint, check: &HealthCheckConfig) -> HttpPeer {
    let mut peer = HttpPeer::clone(&endpoint.peer.load());
    let timeout = Some(Duration::from_millis(check.timeout_ms));
    peer.options.connection_timeout = timeout;
    peer.options.total_connection_timeout = timeout;
    peer.options.read_timeout = timeout;
    peer.options.write_timeout = timeout;
    peer.options.alpn = ALPN::H1;
    peer
}

/// The check's request, or `None` for a connect-and-handshake check.
fn request(check: &HealthCheckConfig, sni: &str, label: &str) -> pingora::Result<Option<RequestHeader>> {
    let Some(path) = &check.path else { return Ok(None) };
    let mut head = RequestHeader::build(http::Method::GET, path.as_bytes(), Some(4))?;
    head.insert_header(header::HOST, if sni.is_empty() { label } else { sni })?;
    head.insert_header(header::USER_AGENT, USER_AGENT)?;
    head.insert_header(header::CONNECTION, "close")?;
    Ok(Some(head))
}

/// One check: a fresh connection (TCP + TLS), then the request when there is one; a 2xx passes.
async fn probe(
    connector: &Connector,
    peer: &HttpPeer,
    request: Option<&RequestHeader>,
) -> pingora::Result<()> {
    let (mut session, _) = connector.get_http_session(peer).await?;
    let Some(request) = request else { return Ok(()) };
    session.write_request_header(Box::new(request.clone())).await?;
    session.finish_request_body().await?;
    session.read_response_header().await?;
    match session.response_header().map(|r| r.status) {
        Some(status) if status.is_success() => Ok(()),
        _ => pingora::Error::e_explain(pingora::ErrorType::HTTPStatus(502), "health check status"),
    }
}

/// Consecutive check results that disagree with the endpoint's current health.
#[derive(Debug, Default)]
struct Streak(u32);

impl Streak {
    /// Records one result; returns the new health when the endpoint flips.
    fn observe(&mut self, passed: bool, healthy: bool, check: &HealthCheckConfig) -> Option<bool> {
        if passed == healthy {
            self.0 = 0;
            return None;
        }
        self.0 += 1;
        let needed = if passed { check.healthy_threshold } else { check.unhealthy_threshold };
        if self.0 < needed {
            return None;
        }
        self.0 = 0;
        Some(passed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check() -> HealthCheckConfig {
        HealthCheckConfig {
            path: None,
            interval_ms: 1000,
            timeout_ms: 100,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }

    #[test]
    fn unhealthy_after_consecutive_failures_only() {
        let (mut s, c) = (Streak::default(), check());
        assert_eq!(s.observe(false, true, &c), None);
        assert_eq!(s.observe(false, true, &c), None);
        assert_eq!(s.observe(true, true, &c), None, "a pass breaks the streak");
        assert_eq!(s.observe(false, true, &c), None);
        assert_eq!(s.observe(false, true, &c), None);
        assert_eq!(s.observe(false, true, &c), Some(false));
    }

    #[test]
    fn healthy_again_after_consecutive_passes() {
        let (mut s, c) = (Streak::default(), check());
        assert_eq!(s.observe(true, false, &c), None);
        assert_eq!(s.observe(false, false, &c), None, "a failure breaks the streak");
        assert_eq!(s.observe(true, false, &c), None);
        assert_eq!(s.observe(true, false, &c), Some(true));
    }
}
