//! Endpoints given as DNS names, resolved again every `dns_refresh_secs` on the background
//! runtime (an upstream behind a cloud load balancer whose addresses rotate would otherwise keep
//! being dialled at an address that no longer serves it, until a restart).
//!
//! A lookup that still returns the endpoint's current address changes nothing, whatever the
//! order of the answer (round-robin DNS reorders on every query; following the first address
//! would churn the connection pool for nothing). Otherwise the first address of the answer
//! replaces the peer atomically: new connections go there, pooled ones to the old address drain
//! as they idle out, the endpoint's health and its run of failures are kept. A failed or empty
//! lookup keeps the last address (logged at debug: the next lookup may work).

use std::net::SocketAddr;
use std::sync::Arc;

use phigate_plugin::BackgroundTask;
use pingora::upstreams::peer::HttpPeer;

use super::{Endpoint, Upstream};

/// One refresher task per endpoint given as a name, on every upstream with a refresh interval.
pub fn tasks(upstreams: &[Arc<Upstream>]) -> Vec<BackgroundTask> {
    let mut out: Vec<BackgroundTask> = Vec::new();
    for upstream in upstreams.iter().filter(|u| !u.dns_refresh.is_zero()) {
        for index in 0..upstream.endpoints.len() {
            if is_name(&upstream.endpoints[index].label) {
                let upstream = upstream.clone();
                out.push(Box::pin(async move {
                    let mut tick = tokio::time::interval(upstream.dns_refresh);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    tick.tick().await; // the first tick is now: the address is a start-up one
                    loop {
                        tick.tick().await;
                        refresh(&upstream, index).await;
                    }
                }));
            }
        }
    }
    out
}

/// Whether a configured `host:port` names a host (rather than being an IP address).
pub fn is_name(label: &str) -> bool {
    label.parse::<SocketAddr>().is_err()
}

/// Resolves endpoint `index` of `upstream` once; returns the new address when it changed.
pub async fn refresh(upstream: &Upstream, index: usize) -> Option<SocketAddr> {
    let endpoint = upstream.endpoints.get(index)?;
    let resolved: Vec<SocketAddr> = match tokio::net::lookup_host(&*endpoint.label).await {
        Ok(addrs) => addrs.collect(),
        Err(e) => {
            log::debug!(target: "phigate::upstream", "upstream={} endpoint={} lookup failed: {e}", upstream.name, endpoint.label);
            return None;
        }
    };
    let current = endpoint.peer.load()._address.as_inet().copied();
    let next = next_address(current, &resolved)?;
    swap_address(endpoint, next);
    log::info!(
        target: "phigate::upstream",
        "upstream={} endpoint={} address={next} (resolved again)",
        upstream.name,
        endpoint.label
    );
    Some(next)
}

/// The address to use after a lookup answered `resolved`: `None` to keep `current` (still in
/// the answer, or no answer), else the answer's first address.
pub fn next_address(current: Option<SocketAddr>, resolved: &[SocketAddr]) -> Option<SocketAddr> {
    match (current, resolved.first()) {
        (_, None) => None,
        (Some(c), Some(_)) if resolved.contains(&c) => None,
        (_, Some(first)) => Some(*first),
    }
}

/// Replaces the endpoint's peer by one for `addr` with every other setting kept.
fn swap_address(endpoint: &Endpoint, addr: SocketAddr) {
    let mut peer = HttpPeer::clone(&endpoint.peer.load());
    peer._address = addr.into();
    endpoint.peer.store(Arc::new(peer));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn the_current_address_is_kept_while_the_answer_holds_it_in_any_order() {
        let (x, y) = (a("10.0.0.1:443"), a("10.0.0.2:443"));
        assert_eq!(next_address(Some(x), &[y, x]), None);
        assert_eq!(next_address(Some(x), &[x]), None);
        assert_eq!(next_address(Some(x), &[]), None, "no answer: keep the last address");
        assert_eq!(next_address(Some(x), &[y]), Some(y));
        assert_eq!(next_address(None, &[y, x]), Some(y));
    }

    #[test]
    fn only_names_are_looked_up() {
        assert!(is_name("fhir.internal:8443") && is_name("localhost:443"));
        assert!(!is_name("10.0.0.1:8443") && !is_name("[::1]:8443"));
    }
}
