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
//!
//! With `addresses_per_name` above 1 a name has that many endpoint slots, filled from each answer
//! by [`assign`]: addresses still answered keep their slot (and its health and pooled
//! connections), new ones fill free slots (healthy, as at start), vanished ones leave their slot
//! empty (no traffic, no checks, not counted in readiness).

use std::net::SocketAddr;
use std::sync::Arc;

use phigate_plugin::BackgroundTask;
use pingora::upstreams::peer::HttpPeer;

use super::{Endpoint, Upstream};
use crate::metrics::Metrics;

/// One refresher task per endpoint given as a name (per name, for names with several address
/// slots), on every upstream with a refresh interval.
pub fn tasks(upstreams: &[Arc<Upstream>], metrics: &Arc<Metrics>) -> Vec<BackgroundTask> {
    let mut out: Vec<BackgroundTask> = Vec::new();
    for upstream in upstreams.iter().filter(|u| !u.dns_refresh.is_zero()) {
        for group in 0..upstream.groups.len() {
            let (u, metrics) = (upstream.clone(), metrics.clone());
            out.push(every(upstream.dns_refresh, move || {
                let (u, metrics) = (u.clone(), metrics.clone());
                async move {
                    refresh_group(&u, group, &metrics).await;
                }
            }));
        }
        let grouped = |i: usize| upstream.groups.iter().any(|(_, r)| r.contains(&i));
        for index in 0..upstream.endpoints.len() {
            if is_name(&upstream.endpoints[index].label) && !grouped(index) {
                let u = upstream.clone();
                out.push(every(upstream.dns_refresh, move || {
                    let u = u.clone();
                    async move {
                        refresh(&u, index).await;
                    }
                }));
            }
        }
    }
    out
}

/// A task running `step` every `period`, the first time one period after start (the addresses
/// in use then are start-up ones).
fn every<F, Fut>(period: std::time::Duration, mut step: F) -> BackgroundTask
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    Box::pin(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is now
        loop {
            tick.tick().await;
            step().await;
        }
    })
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

/// Looks up name group `group` of `upstream` once and fills its slots from the answer (see
/// [`assign`]); returns how many slots changed. A failed or empty lookup changes nothing.
pub async fn refresh_group(upstream: &Upstream, group: usize, metrics: &Metrics) -> usize {
    let Some((name, _)) = upstream.groups.get(group) else { return 0 };
    match tokio::net::lookup_host(&**name).await {
        Ok(addrs) => apply(upstream, group, &addrs.collect::<Vec<_>>(), metrics),
        Err(e) => {
            log::debug!(target: "phigate::upstream", "upstream={} endpoint={name} lookup failed: {e}", upstream.name);
            0
        }
    }
}

/// Fills name group `group`'s slots from a lookup's answer; returns how many changed.
pub fn apply(upstream: &Upstream, group: usize, resolved: &[SocketAddr], metrics: &Metrics) -> usize {
    let Some((_, range)) = upstream.groups.get(group) else { return 0 };
    let Some(slots) = upstream.endpoints.get(range.clone()) else { return 0 };
    let current: Vec<Option<SocketAddr>> = slots.iter().map(Endpoint::address).collect();
    let next = assign(&current, resolved);
    let mut changed = 0;
    for ((endpoint, before), after) in slots.iter().zip(current).zip(next) {
        if before == after {
            continue;
        }
        endpoint.assign(after);
        changed += 1;
        match after {
            Some(a) => {
                log::info!(target: "phigate::upstream", "upstream={} endpoint={} address={a} (resolved again)", upstream.name, endpoint.label)
            }
            None => {
                log::info!(target: "phigate::upstream", "upstream={} endpoint={} no address (no longer in the answer)", upstream.name, endpoint.label)
            }
        }
        // The gauge only: a slot emptied by DNS did not fail a health check.
        super::health::show(upstream, endpoint, metrics);
    }
    changed
}

/// The addresses of a name's slots after a lookup answered `resolved`: an address still in the
/// answer keeps its slot; the answer's other addresses, lowest first, fill the free slots; a
/// slot whose address left the answer is emptied unless a new address takes it. An empty answer
/// keeps everything.
pub fn assign(current: &[Option<SocketAddr>], resolved: &[SocketAddr]) -> Vec<Option<SocketAddr>> {
    if resolved.is_empty() {
        return current.to_vec();
    }
    let mut answer = resolved.to_vec();
    answer.sort_unstable();
    answer.dedup();
    let mut next: Vec<Option<SocketAddr>> =
        current.iter().map(|c| c.filter(|a| answer.binary_search(a).is_ok())).collect();
    let kept: Vec<SocketAddr> = next.iter().flatten().copied().collect();
    let mut fresh = answer.into_iter().filter(|a| !kept.contains(a));
    for slot in next.iter_mut().filter(|s| s.is_none()) {
        *slot = fresh.next();
    }
    next
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
    fn slots_keep_their_address_while_answered_and_take_new_ones_lowest_first() {
        let (x, y, z) = (a("10.0.0.1:443"), a("10.0.0.2:443"), a("10.0.0.3:443"));
        assert_eq!(assign(&[None, None, None], &[z, x, x]), [Some(x), Some(z), None]);
        // y replaces z, which left the answer; x keeps its slot whatever the order.
        assert_eq!(assign(&[Some(x), Some(z), None], &[y, x]), [Some(x), Some(y), None]);
        assert_eq!(assign(&[Some(x), Some(z), None], &[z, y, x]), [Some(x), Some(z), Some(y)]);
        assert_eq!(assign(&[Some(x), Some(z)], &[y]), [Some(y), None]);
        assert_eq!(assign(&[Some(x), None], &[]), [Some(x), None], "no answer: nothing changes");
        assert_eq!(assign(&[None], &[z, y]), [Some(y)], "more addresses than slots: lowest first");
    }

    #[test]
    fn only_names_are_looked_up() {
        assert!(is_name("fhir.internal:8443") && is_name("localhost:443"));
        assert!(!is_name("10.0.0.1:8443") && !is_name("[::1]:8443"));
    }
}
