//! Runtime upstreams: each a set of endpoints (one `HttpPeer` prepared per endpoint at start,
//! sharing the upstream's mTLS material, SNI and timeouts), chosen round robin among the healthy
//! ones, with a bounded retry on another endpoint when a connection cannot be established.
//!
//! ```text
//! select(tried, failed)  round robin from a shared cursor, skipping unhealthy and tried ones;
//!                        None = no healthy endpoint left → 502 upstream_unavailable at once
//! may_retry(tried, n)    after a connect failure: another healthy untried endpoint exists and
//!                        fewer than max_connect_retries retries were made
//! health::tasks          active checks flipping each endpoint's health flag (health.rs)
//! dns::tasks             endpoints given as names resolved again every `dns_refresh_secs`; a
//!                        new address swaps the endpoint's peer atomically (dns.rs)
//! connect_failed(i)      passive health: with active checks configured, `unhealthy_threshold`
//!                        connect failures in a row take endpoint i out at once (a blackholed
//!                        endpoint would otherwise cost every request routed to it a whole
//!                        connect timeout until the next checks); the active checks bring it back
//! ```
//!
//! The hot path takes no lock and allocates nothing beyond the peer clone: one relaxed
//! `fetch_add` on the cursor (skipped with one endpoint) and one relaxed load per health flag.
//! The set of endpoints tried by a request is a 64-bit mask, hence at most 64 endpoints.

pub mod dns;
pub mod health;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;

use crate::config::{HealthCheckConfig, UpstreamConfig};
use crate::runtime::BuildError;
use crate::tls::load_upstream_tls;

/// A runtime upstream: its endpoints and how to choose among them.
#[derive(Debug)]
pub struct Upstream {
    /// Config name (metrics label).
    pub name: Arc<str>,
    /// The endpoints, in config order.
    pub endpoints: Vec<Endpoint>,
    /// Whether TLS is off (`insecure_plaintext`).
    pub plaintext: bool,
    /// The TLS server name (also the `Host` when the client sent none).
    pub sni: String,
    /// Retries on another endpoint after a connect failure (never more than endpoints - 1).
    pub max_connect_retries: u32,
    /// Active health checks, when configured.
    pub health_check: Option<HealthCheckConfig>,
    /// How often endpoints given as names are resolved again (zero: never).
    pub dns_refresh: Duration,
    /// `max_requests_in_flight` places, when set (a semaphore: waiters get places in arrival
    /// order).
    slots: Option<Arc<tokio::sync::Semaphore>>,
    /// `max_pending_requests` and `pending_timeout_ms`.
    max_pending: usize,
    pending_timeout: Duration,
    pending: AtomicUsize,
    /// `phigate_upstream_pending_requests` for this upstream, once the runtime has metrics.
    pending_gauge: std::sync::OnceLock<prometheus::IntGauge>,
    /// Endpoints given as names with `addresses_per_name` above 1: the name (`host:port`) and
    /// its endpoints (one per address), looked up together.
    pub groups: Vec<(Arc<str>, std::ops::Range<usize>)>,
    cursor: AtomicUsize,
}

/// A request's place among an upstream's `max_requests_in_flight`, given back when the request
/// ends (its context is dropped, whatever happened).
#[derive(Debug)]
pub struct InFlight(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

/// The upstream already has `max_requests_in_flight` requests (and `max_pending_requests`
/// waiting, or the wait ran out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

/// Gives a waiting place back when the wait ends, however it ends.
struct Waiting<'a>(&'a Upstream);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
        if let Some(g) = self.0.pending_gauge.get() {
            g.dec();
        }
    }
}

impl Upstream {
    /// Takes a place for one request: `Ok(None)` without a limit (nothing counted); a free
    /// place at once; else, when fewer than `max_pending_requests` wait, a place within
    /// `pending_timeout_ms`; else `Overloaded`.
    pub async fn admit(&self) -> Result<Option<InFlight>, Overloaded> {
        let Some(slots) = &self.slots else {
            return Ok(None);
        };
        if let Ok(place) = Arc::clone(slots).try_acquire_owned() {
            return Ok(Some(InFlight(place)));
        }
        // Relaxed: the count only bounds how many wait; it orders no other memory.
        if self.max_pending == 0 || self.pending.fetch_add(1, Ordering::Relaxed) >= self.max_pending {
            if self.max_pending > 0 {
                self.pending.fetch_sub(1, Ordering::Relaxed);
            }
            return Err(Overloaded);
        }
        if let Some(g) = self.pending_gauge.get() {
            g.inc();
        }
        let _waiting = Waiting(self);
        match tokio::time::timeout(self.pending_timeout, Arc::clone(slots).acquire_owned()).await {
            Ok(Ok(place)) => Ok(Some(InFlight(place))),
            _ => Err(Overloaded),
        }
    }

    /// Requests waiting for a place now.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Publishes waiting requests in `gauge` from now on (the runtime, once).
    pub fn publish_pending(&self, gauge: prometheus::IntGauge) {
        let _ = self.pending_gauge.set(gauge);
    }
}

/// One endpoint of an upstream.
#[derive(Debug)]
pub struct Endpoint {
    /// The endpoint as configured (`host:port`): the `endpoint` label of metrics and logs.
    pub label: Arc<str>,
    /// The prepared peer, cloned per connection attempt (its TLS material is `Arc`-shared);
    /// swapped whole when the endpoint's name resolves to a new address.
    pub peer: ArcSwap<HttpPeer>,
    healthy: AtomicBool,
    /// Whether the endpoint has an address: always, except an address slot of a name
    /// (`addresses_per_name`) that the last lookup left empty.
    present: AtomicBool,
    /// Connect failures in a row (traffic, not checks).
    connect_failures: AtomicU32,
}

impl Endpoint {
    fn new(label: Arc<str>, peer: HttpPeer, present: bool) -> Endpoint {
        Endpoint {
            label,
            peer: ArcSwap::from_pointee(peer),
            healthy: AtomicBool::new(true),
            present: AtomicBool::new(present),
            connect_failures: AtomicU32::new(0),
        }
    }

    /// Whether the endpoint takes traffic: it has an address and is healthy (always, without
    /// health checks).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.is_present()
    }

    /// Whether the endpoint has an address (see [`Endpoint::present`]).
    pub fn is_present(&self) -> bool {
        self.present.load(Ordering::Relaxed)
    }

    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Gives the slot a new address (healthy, as an endpoint at start) or takes it away.
    pub(crate) fn assign(&self, addr: Option<SocketAddr>) {
        if let Some(addr) = addr {
            let mut peer = HttpPeer::clone(&self.peer.load());
            peer._address = addr.into();
            self.peer.store(Arc::new(peer));
            self.connect_failures.store(0, Ordering::Relaxed);
            self.healthy.store(true, Ordering::Relaxed);
        }
        self.present.store(addr.is_some(), Ordering::Relaxed);
    }

    /// The current address, when present.
    pub fn address(&self) -> Option<SocketAddr> {
        self.is_present().then(|| self.peer.load()._address.as_inet().copied()).flatten()
    }
}

/// The bit of endpoint `index` in a request's set of tried endpoints.
pub fn tried_bit(index: usize) -> u64 {
    1u64.checked_shl(index as u32).unwrap_or(0)
}

impl Upstream {
    /// The next healthy endpoint not in `tried`; `None` when there is none. A first attempt
    /// (`failed` is `None`) takes the next turn of the round robin; a retry after endpoint
    /// `failed` could not be connected to goes on from the one after it without taking a turn
    /// (taking one would hand every request's first attempt to the same dead endpoint when two
    /// turns are taken per request).
    pub fn select(&self, tried: u64, failed: Option<usize>) -> Option<usize> {
        let n = self.endpoints.len();
        let start = match failed {
            Some(index) => index.wrapping_add(1),
            None if n > 1 => self.cursor.fetch_add(1, Ordering::Relaxed),
            None => 0,
        };
        (0..n)
            .map(|i| start.wrapping_add(i) % n)
            .find(|&i| tried & tried_bit(i) == 0 && self.endpoints[i].is_healthy())
    }

    /// After a connect failure: whether to try another endpoint, given the endpoints `tried` so
    /// far and the `retries` already made.
    pub fn may_retry(&self, tried: u64, retries: u32) -> bool {
        retries < self.max_connect_retries
            && self.endpoints.iter().enumerate().any(|(i, e)| tried & tried_bit(i) == 0 && e.is_healthy())
    }

    /// Passive health: a connection to endpoint `index` could not be established. With active
    /// health checks configured, the `unhealthy_threshold`-th failure in a row takes it out of
    /// rotation; returns true when this call did (the caller publishes the change).
    pub fn connect_failed(&self, index: usize) -> bool {
        let (Some(check), Some(e)) = (&self.health_check, self.endpoints.get(index)) else { return false };
        let n = e.connect_failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        n >= check.unhealthy_threshold && e.healthy.swap(false, Ordering::Relaxed)
    }

    /// A connection to endpoint `index` was established: its run of connect failures ends.
    pub fn connected(&self, index: usize) {
        if let Some(e) = self.endpoints.get(index) {
            // Read first: the common case writes nothing (no cache-line traffic between workers).
            if e.connect_failures.load(Ordering::Relaxed) != 0 {
                e.connect_failures.store(0, Ordering::Relaxed);
            }
        }
    }

    /// (healthy, total) endpoints; an empty address slot of a name is not counted.
    pub fn health_counts(&self) -> (usize, usize) {
        (
            self.endpoints.iter().filter(|e| e.is_healthy()).count(),
            self.endpoints.iter().filter(|e| e.is_present()).count(),
        )
    }

    /// Builds an upstream from its config: every endpoint resolved once (no request ever blocks
    /// a worker on name resolution) and given the shared TLS material.
    ///
    /// # Errors
    /// When TLS material does not load or an endpoint does not resolve.
    pub fn build(u: &UpstreamConfig, dir: &Path) -> Result<Upstream, BuildError> {
        let tls = !u.insecure_plaintext;
        let sni = u.sni.clone().unwrap_or_default();
        let template = template_peer(u, dir, &sni)?;
        let mut endpoints = Vec::new();
        let mut groups = Vec::new();
        for (_, text) in u.endpoint_list() {
            let resolved: Vec<SocketAddr> = text.to_socket_addrs().map(Iterator::collect).unwrap_or_default();
            let first = *resolved.first().ok_or_else(|| BuildError::Resolve { name: u.name.clone() })?;
            let peer = |addr: SocketAddr| {
                let mut peer = template.clone();
                peer._address = addr.into();
                peer
            };
            if u.addresses_per_name <= 1 || !dns::is_name(text) {
                endpoints.push(Endpoint::new(text.into(), peer(first), true));
                continue;
            }
            // Every address, each in a slot of its own; slots the answer does not fill wait
            // empty for a later lookup.
            let slots = u.addresses_per_name as usize;
            let addresses = dns::assign(&vec![None; slots], &resolved);
            let start = endpoints.len();
            for (k, addr) in addresses.into_iter().enumerate() {
                let label: Arc<str> = format!("{text}#{}", k + 1).into();
                endpoints.push(Endpoint::new(label, peer(addr.unwrap_or(first)), addr.is_some()));
            }
            groups.push((Arc::from(text), start..endpoints.len()));
        }
        if endpoints.is_empty() {
            return Err(BuildError::Invalid(format!("upstream {}: no endpoint", u.name)));
        }
        let max_connect_retries = u.max_connect_retries.min(endpoints.len().saturating_sub(1) as u32);
        Ok(Upstream {
            name: u.name.as_str().into(),
            endpoints,
            plaintext: !tls,
            sni,
            max_connect_retries,
            health_check: u.health_check.clone(),
            dns_refresh: Duration::from_secs(u.dns_refresh_secs),
            slots: u.max_requests_in_flight.map(|m| Arc::new(tokio::sync::Semaphore::new(m as usize))),
            max_pending: u.max_pending_requests as usize,
            pending_timeout: Duration::from_millis(u.pending_timeout_ms),
            pending: AtomicUsize::new(0),
            pending_gauge: std::sync::OnceLock::new(),
            groups,
            cursor: AtomicUsize::new(0),
        })
    }
}

/// The peer every endpoint of `u` starts from: TLS material, SNI, timeouts, ALPN.
fn template_peer(u: &UpstreamConfig, dir: &Path, sni: &str) -> Result<HttpPeer, BuildError> {
    let tls = !u.insecure_plaintext;
    let placeholder = SocketAddr::from(([127, 0, 0, 1], 1));
    let mut peer = HttpPeer::new(placeholder, tls, sni.to_owned());
    peer.options.connection_timeout = Some(Duration::from_millis(u.connect_timeout_ms));
    peer.options.read_timeout = Some(Duration::from_millis(u.read_timeout_ms));
    peer.options.idle_timeout = Some(Duration::from_secs(u.idle_timeout_secs));
    peer.options.alpn = if u.http2 { ALPN::H2H1 } else { ALPN::H1 };
    if let Some(t) = &u.tls {
        let material = load_upstream_tls(t, dir)?;
        peer.options.ca = Some(material.ca);
        peer.client_cert_key = Some(material.client);
        peer.options.verify_cert = true;
        peer.options.verify_hostname = true;
    } else if tls {
        return Err(BuildError::Invalid(format!("upstream {}: tls settings missing", u.name)));
    } else {
        log::warn!(
            "upstream {}: insecure_plaintext is on: PHI crosses the network UNENCRYPTED to this upstream",
            u.name
        );
    }
    Ok(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamConfig;

    fn upstream(n: usize, max_connect_retries: u32) -> Upstream {
        let endpoints = (0..n)
            .map(|i| {
                let addr = SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16));
                Endpoint::new(addr.to_string().into(), HttpPeer::new(addr, false, String::new()), true)
            })
            .collect();
        Upstream {
            name: "u".into(),
            endpoints,
            plaintext: true,
            sni: String::new(),
            max_connect_retries,
            health_check: None,
            dns_refresh: Duration::ZERO,
            slots: None,
            max_pending: 0,
            pending_timeout: Duration::from_millis(1000),
            pending: AtomicUsize::new(0),
            pending_gauge: std::sync::OnceLock::new(),
            groups: Vec::new(),
            cursor: AtomicUsize::new(0),
        }
    }

    fn limited(max: usize, pending: usize, timeout_ms: u64) -> Upstream {
        Upstream {
            slots: Some(Arc::new(tokio::sync::Semaphore::new(max))),
            max_pending: pending,
            pending_timeout: Duration::from_millis(timeout_ms),
            ..upstream(1, 0)
        }
    }

    #[tokio::test]
    async fn requests_beyond_the_limit_are_refused_until_one_ends() {
        let u = limited(2, 0, 1000);
        let (a, b) = (u.admit().await.unwrap(), u.admit().await.unwrap());
        assert!(a.is_some() && b.is_some());
        assert_eq!(u.admit().await.unwrap_err(), Overloaded);
        drop(a);
        let c = u.admit().await.unwrap();
        assert_eq!(u.admit().await.unwrap_err(), Overloaded, "the refused attempt took no place");
        drop((b, c));
        assert_eq!(u.slots.as_ref().unwrap().available_permits(), 2);
        assert!(upstream(1, 0).admit().await.unwrap().is_none(), "no limit: nothing counted");
    }

    /// Waiting (tokio's paused clock: time moves only when every task waits).
    #[tokio::test(start_paused = true)]
    async fn waiters_get_places_in_order_within_the_timeout_and_no_more_wait() {
        let u = Arc::new(limited(1, 2, 1000));
        let held = u.admit().await.unwrap();
        let first = tokio::spawn({
            let u = u.clone();
            async move { u.admit().await }
        });
        let second = tokio::spawn({
            let u = u.clone();
            async move { u.admit().await.map(|p| p.is_some()) }
        });
        while u.pending() < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(u.admit().await.unwrap_err(), Overloaded, "a third would wait: refused at once");
        drop(held);
        let place = first.await.unwrap().expect("the first waiter gets the place");
        assert!(place.is_some());
        // The second waits on while the first holds it, until its timeout.
        assert_eq!(second.await.unwrap(), Err(Overloaded));
        assert_eq!(u.pending(), 0, "every wait gave its waiting place back");
        drop(place);
        assert!(u.admit().await.unwrap().is_some());
    }

    #[test]
    fn selection_is_round_robin_over_healthy_endpoints() {
        let u = upstream(3, 1);
        let picks: Vec<_> = (0..6).map(|_| u.select(0, None).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        u.endpoints[1].set_healthy(false);
        let picks: Vec<_> = (0..6).map(|_| u.select(0, None).unwrap()).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        assert!(picks.contains(&0) && picks.contains(&2), "{picks:?}");
    }

    #[test]
    fn selection_skips_tried_endpoints_and_ends_when_none_is_left() {
        let u = upstream(3, 2);
        let first = u.select(0, None).unwrap();
        let second = u.select(tried_bit(first), Some(first)).unwrap();
        assert_eq!(second, (first + 1) % 3, "a retry goes on from the failed endpoint");
        let third = u.select(tried_bit(first) | tried_bit(second), Some(second)).unwrap();
        assert_eq!(u.select(tried_bit(first) | tried_bit(second) | tried_bit(third), Some(third)), None);
        assert_eq!(u.select(0, None), Some(1), "retries took no turn of the round robin");
        u.endpoints.iter().for_each(|e| e.set_healthy(false));
        assert_eq!(u.select(0, None), None, "no healthy endpoint: fail fast");
    }

    #[test]
    fn connect_failures_in_a_row_take_an_endpoint_out_only_with_health_checks() {
        let mut u = upstream(2, 1);
        assert!(!u.connect_failed(0) && !u.connect_failed(0) && !u.connect_failed(0), "no checks: never");
        assert!(u.endpoints[0].is_healthy());
        u.health_check = Some(HealthCheckConfig {
            path: None,
            interval_ms: 1000,
            timeout_ms: 100,
            healthy_threshold: 1,
            unhealthy_threshold: 2,
        });
        u.endpoints[0].connect_failures.store(0, Ordering::Relaxed);
        assert!(!u.connect_failed(0));
        u.connected(0);
        assert!(!u.connect_failed(0), "a connection ended the run");
        assert!(u.connect_failed(0), "the second in a row takes it out");
        assert!(!u.endpoints[0].is_healthy());
        assert!(!u.connect_failed(0), "already out: reported once");
        assert!(u.endpoints[1].is_healthy());
    }

    /// A real lookup (the OS resolver, `localhost`): a stale address is replaced by one the name
    /// resolves to, every other peer setting and the endpoint's health kept; the next lookup
    /// changes nothing.
    #[tokio::test]
    async fn a_name_resolved_again_replaces_a_stale_address_and_keeps_the_rest() {
        let mut u = upstream(1, 0);
        u.endpoints[0].label = "localhost:8443".into();
        let mut stale = HttpPeer::new(SocketAddr::from(([127, 0, 0, 2], 8443)), true, "fhir.internal".into());
        stale.options.connection_timeout = Some(Duration::from_millis(1234));
        u.endpoints[0].peer.store(Arc::new(stale));
        u.endpoints[0].set_healthy(false);

        let next = dns::refresh(&u, 0).await.expect("localhost resolves elsewhere than 127.0.0.2");
        assert!(next.ip().is_loopback() && next.port() == 8443, "{next}");
        let peer = u.endpoints[0].peer.load();
        assert_eq!(peer._address.as_inet(), Some(&next));
        assert_eq!(
            (peer.sni.as_str(), peer.options.connection_timeout),
            ("fhir.internal", Some(Duration::from_millis(1234)))
        );
        assert!(!u.endpoints[0].is_healthy(), "health is the checks' business, not DNS's");
        assert_eq!(dns::refresh(&u, 0).await, None, "still in the answer: kept");
    }

    /// A name with `addresses_per_name` slots: every address a real lookup (`localhost`) answers
    /// gets one, the rest wait empty (no traffic, not counted); later answers keep, fill and empty
    /// slots, and selection follows.
    #[test]
    fn a_name_with_address_slots_spreads_over_every_answered_address() {
        let cfg: UpstreamConfig = serde_yaml::from_str(
            "{ name: u, insecure_plaintext: true, addresses_per_name: 3, \
             endpoints: ['localhost:8443', '10.0.0.9:8443'] }",
        )
        .unwrap();
        assert_eq!(cfg.slot_count(), 4);
        let u = Upstream::build(&cfg, Path::new(".")).unwrap();
        let labels: Vec<&str> = u.endpoints.iter().map(|e| &*e.label).collect();
        assert_eq!(labels, ["localhost:8443#1", "localhost:8443#2", "localhost:8443#3", "10.0.0.9:8443"]);
        let mut local: Vec<SocketAddr> = "localhost:8443".to_socket_addrs().unwrap().collect();
        local.sort_unstable();
        local.dedup();
        local.truncate(3);
        let present: Vec<SocketAddr> = u.endpoints[..3].iter().filter_map(Endpoint::address).collect();
        assert_eq!(present, local, "every answered address, lowest first");
        assert_eq!(u.health_counts(), (local.len() + 1, local.len() + 1));
        assert_eq!(u.groups.len(), 1);

        let metrics = crate::metrics::metrics().unwrap();
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let (a1, a2) = (addr("127.0.0.101:8443"), addr("127.0.0.102:8443"));
        u.endpoints[0].set_healthy(false);
        dns::apply(&u, 0, &[a2, a1], &metrics);
        assert_eq!(u.endpoints[0].address(), Some(a1));
        assert!(u.endpoints[0].is_healthy(), "a new address starts healthy");
        assert_eq!(u.endpoints[1].address(), Some(a2));
        assert_eq!(u.endpoints[2].address(), None);
        let picks: std::collections::HashSet<usize> = (0..12).map(|_| u.select(0, None).unwrap()).collect();
        assert_eq!(picks, [0, 1, 3].into(), "an empty slot takes no traffic");

        // a1 leaves the answer: its slot empties, a2 keeps its own (and its health).
        u.endpoints[1].set_healthy(false);
        assert_eq!(dns::apply(&u, 0, &[a2], &metrics), 1);
        assert_eq!((u.endpoints[0].address(), u.endpoints[1].address()), (None, Some(a2)));
        assert!(!u.endpoints[1].is_healthy(), "a kept address keeps its health");
        assert_eq!(u.health_counts(), (1, 2));
        assert_eq!(dns::apply(&u, 0, &[], &metrics), 0, "no answer: nothing changes");
    }

    #[test]
    fn address_slots_are_bounded_with_the_endpoints() {
        let cfg: UpstreamConfig = serde_yaml::from_str(
            "{ name: u, insecure_plaintext: true, addresses_per_name: 32, \
             endpoints: ['a.internal:1', 'b.internal:1', '10.0.0.1:1'] }",
        )
        .unwrap();
        let keys: Vec<String> = cfg.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["addresses_per_name"]);
        let cfg = UpstreamConfig { addresses_per_name: 31, ..cfg };
        assert!(cfg.problems().is_empty(), "31 + 31 + 1 = 63");
        let cfg = UpstreamConfig { addresses_per_name: 0, ..cfg };
        assert_eq!(cfg.problems()[0].1, "must be between 1 and 64");
    }

    #[test]
    fn retries_are_bounded_by_the_setting_and_the_candidates() {
        let u = upstream(3, 1);
        assert!(u.may_retry(tried_bit(0), 0));
        assert!(!u.may_retry(tried_bit(0) | tried_bit(1), 1), "max_connect_retries reached");
        u.endpoints[1].set_healthy(false);
        u.endpoints[2].set_healthy(false);
        assert!(!u.may_retry(tried_bit(0), 0), "no healthy endpoint left to try");
        assert_eq!(u.health_counts(), (1, 3));
    }
}
