//! An open-loop, fixed-rate HTTP client (the wrk2 model) with HDR latency histograms.
//!
//! Closed-loop tools (wrk, h2load without a rate) send the next request only after the previous
//! answer, so a slow server quietly lowers the offered load and its stalls vanish from the
//! percentiles ("coordinated omission"). Here each connection has its own schedule
//! (`connections / rate` seconds apart, staggered between connections):
//! - HTTP/1.1: one request at a time per connection. When the previous response arrived after
//!   this request's scheduled time, the server made us late and latency is measured from the
//!   scheduled time. Otherwise the only delay is our own timer (tokio's is 1 ms coarse) and
//!   latency is measured from the actual send.
//! - HTTP/2: every scheduled request is sent at once on the shared connection (up to
//!   [`H2_MAX_IN_FLIGHT`] streams), so the server cannot hold the schedule back; latency is
//!   measured from the send.
//!
//! How far the sender fell behind its own schedule is reported (`max_lag_us`): a large lag means
//! the load generator, not the target, was the bottleneck, and the run should not be trusted.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{header::HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Empty};
use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio::{net::TcpStream, task::JoinSet, time::Instant};
use tokio_rustls::TlsConnector;

mod h1;
mod h2;

/// A request with no complete answer after this long counts as a socket error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A saturated target makes the sender fall behind its schedule; past the end of the run plus
/// this much, the remaining slots are counted as `unsent` instead of stretching the run.
pub const OVERRUN: Duration = Duration::from_secs(1);

/// What to send, where, and how fast.
#[derive(Debug, Clone)]
pub struct RatePlan {
    /// The target's socket address (loopback only in `load-tests/run`).
    pub addr: SocketAddr,
    /// TLS server name (SNI and certificate check).
    pub server_name: ServerName<'static>,
    /// `Host` / `:authority`.
    pub authority: String,
    /// Request paths with query, used round-robin.
    pub paths: Arc<Vec<String>>,
    /// Extra request headers (the bearer token).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Offered rate, requests per second, over all connections; 0 = closed loop (as fast as the
    /// target answers).
    pub rate_per_sec: f64,
    /// HTTP/2 streams in flight per connection at most (the closed-loop concurrency).
    pub h2_streams: usize,
    /// Whole run, warm-up included.
    pub duration: Duration,
    /// Leading part of the run whose results are discarded.
    pub warmup: Duration,
    /// Connections, each with its own share of the schedule.
    pub connections: usize,
    /// Speak HTTP/2 (else HTTP/1.1 keep-alive).
    pub h2: bool,
    /// TLS client configuration (ALPN must match `h2`).
    pub tls: Arc<rustls::ClientConfig>,
}

/// What one run measured (latencies in microseconds, after warm-up).
#[derive(Debug, Clone, Serialize)]
pub struct RateReport {
    /// Offered rate, requests per second.
    pub offered_rps: f64,
    /// Completed requests per second after warm-up.
    pub achieved_rps: f64,
    /// Requests recorded (after warm-up), errors included.
    pub requests: u64,
    /// Responses with a non-2xx status.
    pub errors_status: u64,
    /// Connection, TLS, protocol errors and timeouts.
    pub errors_socket: u64,
    /// Median latency.
    pub p50_us: u64,
    /// 99th percentile latency.
    pub p99_us: u64,
    /// 99.9th percentile latency.
    pub p999_us: u64,
    /// Largest latency.
    pub max_us: u64,
    /// Mean latency.
    pub mean_us: f64,
    /// Largest delay of a send behind its schedule caused by the generator itself.
    pub max_lag_us: u64,
    /// Scheduled requests never sent because the target was saturated (the run ended first);
    /// non-zero means the target cannot sustain the offered rate.
    pub unsent: u64,
}

/// Per-connection tallies, merged at the end.
#[derive(Debug)]
struct Tally {
    hist: Histogram<u64>,
    errors_status: u64,
    errors_socket: u64,
    max_lag_us: u64,
    unsent: u64,
}

impl Tally {
    fn new(hist: Histogram<u64>) -> Self {
        Tally { hist, errors_status: 0, errors_socket: 0, max_lag_us: 0, unsent: 0 }
    }

    fn record(&mut self, latency: Duration, outcome: Outcome) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        self.hist.saturating_record(us);
        match outcome {
            Outcome::Ok => {}
            Outcome::Status => self.errors_status += 1,
            Outcome::Socket => self.errors_socket += 1,
        }
    }

    fn lag(&mut self, lag: Duration) {
        let us = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        self.max_lag_us = self.max_lag_us.max(us);
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.hist.add(&other.hist);
        self.errors_status += other.errors_status;
        self.errors_socket += other.errors_socket;
        self.max_lag_us = self.max_lag_us.max(other.max_lag_us);
        self.unsent += other.unsent;
    }
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Status,
    Socket,
}

/// One connection's fixed schedule (`every` zero: closed loop, every slot is "now").
#[derive(Debug, Clone, Copy)]
struct Schedule {
    first: Instant,
    every: Duration,
    record_from: Instant,
    end: Instant,
}

impl Schedule {
    /// The `k`-th slot, or `None` when the run is over.
    fn at(&self, k: u32) -> Option<Instant> {
        let t =
            if self.every.is_zero() { Instant::now().max(self.first) } else { self.first + self.every * k };
        (t < self.end).then_some(t)
    }

    /// Waits for slot `k`; `None` when the run is over, counting the slots left out when the
    /// sender is so far behind that the run would overrun.
    async fn wait(&self, k: u32, t: &mut Tally) -> Option<Instant> {
        let slot = self.at(k)?;
        let now = Instant::now();
        if now > self.end + OVERRUN {
            let left = (self.end - slot).as_secs_f64() / self.every.as_secs_f64().max(1e-9);
            t.unsent += left.ceil() as u64;
            return None;
        }
        if slot > now {
            tokio::time::sleep_until(slot).await;
        }
        Some(slot)
    }
}

/// Runs `plan` and returns what it measured.
pub async fn run(plan: RatePlan) -> Result<RateReport, hdrhistogram::CreationError> {
    // 1 µs .. 100 s at 3 significant digits.
    let empty = Histogram::new_with_bounds(1, 100_000_000, 3)?;
    let plan = Arc::new(plan);
    let start = Instant::now() + Duration::from_millis(50);
    let every = if plan.rate_per_sec > 0.0 {
        Duration::from_secs_f64(plan.connections as f64 / plan.rate_per_sec)
    } else {
        Duration::ZERO
    };
    let mut tasks = JoinSet::new();
    for conn in 0..plan.connections {
        let schedule = Schedule {
            first: start + every.mul_f64(conn as f64 / plan.connections as f64),
            every,
            record_from: start + plan.warmup,
            end: start + plan.duration,
        };
        let plan = plan.clone();
        let tally = Tally::new(empty.clone());
        tasks.spawn(async move {
            if plan.h2 {
                h2::drive(&plan, conn, schedule, tally).await
            } else {
                h1::drive(&plan, conn, schedule, tally).await
            }
        });
    }
    let mut total = Tally::new(empty);
    while let Some(joined) = tasks.join_next().await {
        if let Ok(tally) = joined {
            total.merge(tally);
        }
    }
    Ok(report(&plan, &total))
}

fn report(plan: &RatePlan, t: &Tally) -> RateReport {
    let measured = plan.duration.saturating_sub(plan.warmup).as_secs_f64().max(1e-9);
    RateReport {
        offered_rps: plan.rate_per_sec,
        achieved_rps: t.hist.len() as f64 / measured,
        requests: t.hist.len(),
        errors_status: t.errors_status,
        errors_socket: t.errors_socket,
        p50_us: t.hist.value_at_quantile(0.50),
        p99_us: t.hist.value_at_quantile(0.99),
        p999_us: t.hist.value_at_quantile(0.999),
        max_us: t.hist.max(),
        mean_us: t.hist.mean(),
        max_lag_us: t.max_lag_us,
        unsent: t.unsent,
    }
}

/// Opens TCP + TLS to the target (no Nagle: small requests must leave at once).
async fn connect(plan: &RatePlan) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(plan.addr).await?;
    tcp.set_nodelay(true)?;
    TlsConnector::from(plan.tls.clone()).connect(plan.server_name.clone(), tcp).await
}

/// The `k`-th request of connection `conn` (paths interleave across connections).
fn request(plan: &RatePlan, conn: usize, k: u32, absolute: bool) -> Request<Empty<Bytes>> {
    let paths = &plan.paths;
    let path = &paths[(conn + k as usize * plan.connections) % paths.len()];
    let uri = if absolute { format!("https://{}{path}", plan.authority) } else { path.clone() };
    let mut builder = Request::get(uri);
    if !absolute {
        builder = builder.header(http::header::HOST, plan.authority.as_str());
    }
    for (name, value) in &plan.headers {
        builder = builder.header(name, value);
    }
    builder.body(Empty::new()).unwrap_or_default()
}

/// Reads a whole response and classifies it; the body is drained, not kept.
async fn finish(response: Result<http::Response<hyper::body::Incoming>, hyper::Error>) -> Outcome {
    let Ok(response) = response else { return Outcome::Socket };
    let ok = response.status().is_success();
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            return Outcome::Socket;
        }
    }
    if ok {
        Outcome::Ok
    } else {
        Outcome::Status
    }
}
