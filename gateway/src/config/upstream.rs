//! Upstream services: their endpoints, mTLS, timeouts, active health checks and connect-failure
//! retry, and the rules that check them (every problem reported with its key, never its value).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use rustls_pki_types::ServerName;
use schemars::JsonSchema;
use serde::Deserialize;

/// Most endpoints an upstream may list (a request remembers the endpoints it tried in a 64-bit set).
pub const MAX_ENDPOINTS: usize = 64;
/// Most connect retries per request: each may wait a whole `connect_timeout_ms`.
pub const MAX_CONNECT_RETRIES: u32 = 8;

/// A named upstream service.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// A unique name that routes refer to.
    pub name: String,
    /// `host:port` of the one endpoint (an IP address, or a DNS name resolved at start and again
    /// every `dns_refresh_secs`).
    /// Exactly one of `address` and `endpoints` is required.
    #[serde(default)]
    pub address: Option<String>,
    /// Several `host:port` endpoints serving the same service (replicas on VMs, one per zone),
    /// each an IP address or a DNS name (resolved at start and again every `dns_refresh_secs`);
    /// at most 64, no duplicates.
    /// Requests are spread round robin over the endpoints that are healthy (all of them without
    /// `health_check`). Every endpoint shares this upstream's `sni`, `tls` and timeouts, so each
    /// must present a certificate for `sni` from the configured CA. When no endpoint is healthy
    /// the gateway answers 502 `upstream_unavailable` at once, without trying any (no "panic
    /// mode": health checks over the same mTLS as traffic already said they would fail). Exactly
    /// one of `address` and `endpoints` is required.
    #[serde(default)]
    pub endpoints: Option<Vec<String>>,
    /// TLS server name sent (SNI) and verified against the upstream certificate. Required with
    /// `tls`.
    #[serde(default)]
    pub sni: Option<String>,
    /// mTLS to the upstream (the default and expected setting). Required unless
    /// `insecure_plaintext` is true.
    #[serde(default)]
    pub tls: Option<UpstreamTlsConfig>,
    /// Send plain HTTP to this upstream. PHI then crosses the network unencrypted, against HIPAA
    /// transmission-security guidance: the gateway logs a warning at every start. Default: false.
    #[serde(default)]
    pub insecure_plaintext: bool,
    /// TCP + TLS connect timeout, in milliseconds. Default: 2000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Longest wait for each read from the upstream, in milliseconds. Default: 30000.
    #[serde(default = "default_read_timeout_ms")]
    pub read_timeout_ms: u64,
    /// How long an idle keep-alive connection stays in the pool, in seconds. Default: 60.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Offer HTTP/2 to the upstream via ALPN (falls back to HTTP/1.1). Default: false.
    #[serde(default)]
    pub http2: bool,
    /// When connecting to the chosen endpoint fails (refused, TLS handshake failure, connect
    /// timeout), try up to this many other healthy endpoints, each at most once per request.
    /// Only connection failures are retried: once any byte of the request has been sent upstream
    /// it never is. With a single endpoint there is nothing to retry. At most 8. Default: 1.
    #[serde(default = "default_max_connect_retries")]
    pub max_connect_retries: u32,
    /// How often endpoints given as DNS names are resolved again, in seconds (an upstream behind
    /// a cloud load balancer whose addresses rotate). The lookup runs on the background runtime,
    /// never on a request; a new address takes effect for new connections (pooled ones to the old
    /// address drain as they idle out), is logged, and keeps the endpoint's health; a failed
    /// lookup keeps the last address. IP addresses are never looked up. 0 turns it off (resolved
    /// once at start). At most 86400. Default: 30.
    #[serde(default = "default_dns_refresh_secs")]
    pub dns_refresh_secs: u64,
    /// How many addresses of an endpoint given as a DNS name take traffic. 1 (the default): the
    /// first address the lookup answers, kept while later lookups still hold it (a name behind
    /// a load balancer). More: every address of the answer up to this many (lowest first), each
    /// an endpoint of its own in the round robin with its own health, connect retries and
    /// checks (a Kubernetes headless service, a name with one A record per replica, as Envoy's
    /// `STRICT_DNS`). Each lookup keeps the addresses still answered, adds new ones (healthy,
    /// as at start) and drops vanished ones; a failed or empty lookup changes nothing. Metrics
    /// and logs name them `host:port#1`, `#2`, ... 1..=64, and the upstream's endpoints times
    /// this (for names) at most 64.
    #[serde(default = "default_addresses_per_name")]
    pub addresses_per_name: u32,
    /// Most requests this gateway process has at the upstream at once (Envoy's circuit breaker
    /// `max_requests`). A request beyond it is refused at once, after identity and policy and
    /// before anything is sent, with 503 `upstream_overloaded` and `Retry-After: 1` (audited as
    /// refused, counted in `phigate_upstream_overloaded_total`): a slow upstream then cannot make
    /// requests, memory and connections pile up in the gateway. Counted per process, across every
    /// endpoint. 1..=1000000. Default: absent, no limit.
    #[serde(default)]
    pub max_requests_in_flight: Option<u32>,
    /// Requests that may wait for a place when `max_requests_in_flight` are at the upstream
    /// (Envoy's `max_pending_requests`): a short burst then waits instead of being refused. A
    /// request beyond this many waiting, or still waiting after `pending_timeout_ms`, is refused
    /// with 503 `upstream_overloaded` like one that found no place; places go to waiters in
    /// arrival order. Needs `max_requests_in_flight`. 0..=1000000. Default: 0 (no waiting: refused
    /// at once).
    #[serde(default)]
    pub max_pending_requests: u32,
    /// Longest a request waits for a place among `max_requests_in_flight`, in milliseconds.
    /// 1..=60000. Default: 1000.
    #[serde(default = "default_pending_timeout_ms")]
    pub pending_timeout_ms: u64,
    /// Active health checks of every endpoint, on the gateway's background runtime, over the same
    /// mTLS (client certificate, CA, SNI) as traffic. Endpoints start healthy; one becomes
    /// unhealthy after `unhealthy_threshold` consecutive failed checks and healthy again after
    /// `healthy_threshold` consecutive passed ones. Transitions are logged (upstream name and
    /// endpoint only), the gauge `phigate_upstream_endpoint_healthy{upstream,endpoint}` follows
    /// them, and `/readyz` shows healthy/total endpoints per upstream without turning not-ready
    /// when none is healthy (a restart would not heal the upstream, and failing every replica's
    /// readiness at once would cascade). Absent: no checks, every endpoint is always a candidate.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
}

/// Active health checks of an upstream's endpoints.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Path (and query) to `GET`, like `/fhir/metadata`, sent with HTTP/1.1, `Host` set to `sni`
    /// and `User-Agent: phigate-health-check`; a 2xx answer passes. Each check opens a fresh
    /// connection, so the TCP connect and the TLS handshake are checked too. Absent: a check is
    /// the TCP connect and the TLS handshake only (the gateway's client certificate presented,
    /// the upstream's verified).
    #[serde(default)]
    pub path: Option<String>,
    /// Time between two checks of an endpoint, in milliseconds. 100 to 300000. Default: 5000.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Longest a check may take (connect, handshake and answer) before it fails, in
    /// milliseconds. 1 to 60000, and at most `interval_ms`. Default: 1000.
    #[serde(default = "default_check_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive passed checks that make an unhealthy endpoint healthy again. 1 to 100.
    /// Default: 2.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failed checks that make a healthy endpoint unhealthy. 1 to 100. Default: 3.
    /// The same number of traffic connections in a row that cannot be established (refused, TLS
    /// handshake failure, connect timeout) takes it out at once, without waiting for the next
    /// check (passive health: a blackholed endpoint would otherwise cost every request sent to
    /// it a whole connect timeout); the checks bring it back.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
}

/// mTLS settings towards an upstream.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// CA bundle (PEM) the upstream's certificate must chain to.
    pub ca_path: PathBuf,
    /// The gateway's client certificate chain (PEM) presented to the upstream.
    pub client_cert_path: PathBuf,
    /// The gateway's client private key (PEM).
    pub client_key_path: PathBuf,
}

impl UpstreamConfig {
    /// The configured endpoints, `address` or `endpoints`, with their key paths (relative to the
    /// upstream).
    pub fn endpoint_list(&self) -> Vec<(String, &str)> {
        match (&self.address, &self.endpoints) {
            (Some(a), _) => vec![("address".to_owned(), a.as_str())],
            (None, Some(list)) => {
                list.iter().enumerate().map(|(i, e)| (format!("endpoints[{i}]"), e.as_str())).collect()
            }
            (None, None) => Vec::new(),
        }
    }

    /// The endpoints a request may be sent to: one per IP endpoint, `addresses_per_name` per name.
    pub fn slot_count(&self) -> usize {
        self.endpoint_list()
            .iter()
            .map(|(_, text)| match text.parse::<std::net::SocketAddr>() {
                Ok(_) => 1,
                Err(_) => self.addresses_per_name as usize,
            })
            .sum()
    }

    /// Every problem of this upstream as (key path relative to the upstream, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut err = |key: &str, message: &str| out.push((key.to_owned(), message.to_owned()));
        match (&self.address, &self.endpoints) {
            (Some(_), Some(_)) => err("endpoints", "contradicts `address`: set exactly one of them"),
            (None, None) => err("address", "is required (or `endpoints`, for several)"),
            (None, Some(list)) if list.is_empty() => err("endpoints", "must list at least one endpoint"),
            (None, Some(list)) if list.len() > MAX_ENDPOINTS => err("endpoints", "must list at most 64"),
            _ => {}
        }
        let mut seen = HashSet::new();
        for (key, text) in self.endpoint_list() {
            if let Err(why) = check_host_port(text) {
                err(&key, why);
            } else if !seen.insert(text) {
                err(&key, "duplicate endpoint");
            }
        }
        match (&self.tls, self.insecure_plaintext) {
            (None, false) => {
                err("tls", "is required (mTLS); only `insecure_plaintext: true` allows plain HTTP")
            }
            (Some(_), true) => err("insecure_plaintext", "contradicts `tls`: remove one of them"),
            _ => {}
        }
        match (&self.sni, &self.tls) {
            (None, Some(_)) => err("sni", "is required with `tls`"),
            (Some(sni), _) if ServerName::try_from(sni.as_str()).is_err() => {
                err("sni", "not a valid DNS name or IP address")
            }
            (Some(_), None) => err("sni", "is set but `tls` is not"),
            _ => {}
        }
        for (name, value) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("read_timeout_ms", self.read_timeout_ms),
            ("idle_timeout_secs", self.idle_timeout_secs),
        ] {
            if value == 0 {
                err(name, "must be greater than 0");
            }
        }
        if self.max_connect_retries > MAX_CONNECT_RETRIES {
            err("max_connect_retries", "must be at most 8");
        }
        if self.dns_refresh_secs > 86_400 {
            err("dns_refresh_secs", "must be at most 86400");
        }
        if !(1..=MAX_ENDPOINTS as u32).contains(&self.addresses_per_name) {
            err("addresses_per_name", "must be between 1 and 64");
        } else if self.slot_count() > MAX_ENDPOINTS {
            err(
                "addresses_per_name",
                "endpoints given as names times this, plus the IP endpoints, must be at most 64",
            );
        }
        if self.max_requests_in_flight.is_some_and(|m| !(1..=1_000_000).contains(&m)) {
            err("max_requests_in_flight", "must be between 1 and 1000000");
        }
        if self.max_pending_requests > 1_000_000 {
            err("max_pending_requests", "must be between 0 and 1000000");
        } else if self.max_pending_requests > 0 && self.max_requests_in_flight.is_none() {
            err("max_pending_requests", "needs `max_requests_in_flight` (requests wait for its places)");
        }
        if !(1..=60_000).contains(&self.pending_timeout_ms) {
            err("pending_timeout_ms", "must be between 1 and 60000");
        }
        if let Some(check) = &self.health_check {
            out.extend(check.problems().into_iter().map(|(k, m)| (format!("health_check.{k}"), m)));
        }
        out
    }
}

impl HealthCheckConfig {
    /// Every problem as (key path relative to `health_check`, message).
    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let bounds: [(&'static str, u64, u64, u64); 4] = [
            ("interval_ms", self.interval_ms, 100, 300_000),
            ("timeout_ms", self.timeout_ms, 1, 60_000),
            ("healthy_threshold", u64::from(self.healthy_threshold), 1, 100),
            ("unhealthy_threshold", u64::from(self.unhealthy_threshold), 1, 100),
        ];
        for (key, value, min, max) in bounds {
            if !(min..=max).contains(&value) {
                out.push((key, format!("must be between {min} and {max}")));
            }
        }
        if self.timeout_ms > self.interval_ms {
            out.push(("timeout_ms", "must be at most `interval_ms`".to_owned()));
        }
        if let Some(path) = &self.path {
            // The path goes verbatim into a request line: nothing that could split or smuggle it.
            let visible = path.chars().all(|c| c.is_ascii_graphic());
            if !path.starts_with('/') || !visible || path.contains('#') {
                out.push(("path", "must start with `/` and hold only visible ASCII, no `#`".to_owned()));
            }
        }
        out
    }
}

/// An upstream address: `IP:port` or `dns-name:port`, port 1..=65535.
fn check_host_port(text: &str) -> Result<(), &'static str> {
    const SHAPE: &str = "not `host:port` (like `fhir.internal:8443` or `10.0.0.5:8443`)";
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return if addr.port() == 0 { Err("port must not be 0") } else { Ok(()) };
    }
    let (host, port) = text.rsplit_once(':').ok_or(SHAPE)?;
    match port.parse::<u16>() {
        Ok(0) => return Err("port must not be 0"),
        Ok(_) => {}
        Err(_) => return Err(SHAPE),
    }
    if host.contains(':') {
        return Err("an IPv6 address needs brackets (like `[2001:db8::5]:8443`)");
    }
    match ServerName::try_from(host) {
        Ok(ServerName::DnsName(_)) => Ok(()),
        _ => Err("host is not a valid DNS name or IP address"),
    }
}

fn default_connect_timeout_ms() -> u64 {
    2000
}
fn default_read_timeout_ms() -> u64 {
    30000
}
fn default_idle_timeout_secs() -> u64 {
    60
}
fn default_max_connect_retries() -> u32 {
    1
}
fn default_dns_refresh_secs() -> u64 {
    30
}
fn default_addresses_per_name() -> u32 {
    1
}
fn default_pending_timeout_ms() -> u64 {
    1000
}
fn default_interval_ms() -> u64 {
    5000
}
fn default_check_timeout_ms() -> u64 {
    1000
}
fn default_healthy_threshold() -> u32 {
    2
}
fn default_unhealthy_threshold() -> u32 {
    3
}
