//! NDJSON lines shipped to an HTTPS collector (a SIEM's HTTP input such as Splunk HEC or an
//! Elastic or Sentinel ingestion endpoint, an incident tool), besides the file that keeps them.
//!
//! A [`Poster`] POSTs lines as `application/x-ndjson`, exactly as written, over HTTPS (TLS 1.3,
//! the process's provider); [`Poster::deliver`] retries a failure (connection, TLS, time-out, a
//! status other than 2xx) with backoff (1 s doubling to 60 s), the same lines whole. Two ways to
//! feed it:
//! - in memory: the owner (the exfil alert writer) hands each batch of lines it made durable to a
//!   [`Handoff`] and never waits; the [`ShipperTask`] delivers them in order. A full hand-off
//!   drops the batch for the collector only, counted; past `max_pending_bytes` waiting the oldest
//!   are dropped and counted;
//! - from the owner's own files (the audit trail), which then are the queue: the owner reads what
//!   to send and calls [`Poster::deliver`] itself.
//!
//! The file stays the record: shipping is delivery.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Request, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use phigate_plugin::ConfigIssue;
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::sync::mpsc;

use prometheus::{IntCounter, IntCounterVec};

/// Most bytes one POST carries.
const MAX_POST_BYTES: usize = 1 << 20;

/// Batches handed from the writer not yet taken by the task.
const HANDOFF_BATCHES: usize = 256;

const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Where lines are POSTed, besides the file that keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipperConfig {
    /// The collector's URL; `https://` only (the lines name principals and patients).
    pub url: String,
    /// CA bundle (PEM) the collector's certificate must chain to, relative to the config file.
    /// Default: the system's trusted roots.
    #[serde(default)]
    pub ca_path: Option<PathBuf>,
    /// Name of an environment variable holding the `Authorization` header value to send (for
    /// example `Splunk <token>` or `Bearer <token>`): the credential never sits in the config
    /// file. The variable must be set when the gateway starts. Default: no header.
    #[serde(default)]
    pub authorization_env: Option<String>,
    /// Time limit of one POST, in milliseconds. Default 5000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Most bytes waiting for delivery while the collector is down; past it the oldest lines
    /// are dropped (and counted). Default 16 MiB. Not for `audit.forward`, whose queue is the
    /// trail itself (nothing is dropped).
    #[serde(default)]
    pub max_pending_bytes: Option<usize>,
}

fn default_timeout_ms() -> u64 {
    5000
}

/// Default of `max_pending_bytes`.
const DEFAULT_MAX_PENDING_BYTES: usize = 16 << 20;

/// The counters of one shipper (each owner registers its own names).
#[derive(Debug, Clone)]
pub struct Metrics {
    /// POSTs by result: `delivered`, or why one failed (`connect`, `timeout`, `status`).
    pub posts: IntCounterVec,
    /// Lines the collector accepted.
    pub delivered: IntCounter,
    /// Lines that will not reach the collector (hand-off full, or the oldest dropped while it
    /// was down).
    pub dropped: IntCounter,
}

/// The owner's side: where each durable batch goes.
#[derive(Debug, Clone)]
pub struct Handoff {
    tx: mpsc::Sender<Bytes>,
    dropped: IntCounter,
}

impl Handoff {
    /// Hands a batch of complete lines over without waiting; a full hand-off drops it, counted.
    pub fn offer(&self, batch: &[u8]) {
        if self.tx.try_send(Bytes::copy_from_slice(batch)).is_err() {
            self.dropped.inc_by(lines_in(batch));
        }
    }
}

/// POSTs to one collector.
pub struct Poster {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
    authorization: Option<HeaderValue>,
    timeout: Duration,
    /// POSTs by result.
    posts: IntCounterVec,
    /// Lines the collector accepted.
    delivered: IntCounter,
    /// Names the shipper in its log lines (`exfil webhook`, `audit forward`).
    name: &'static str,
}

impl std::fmt::Debug for Poster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poster").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The in-memory delivery task, until the owner's background task runs it.
#[derive(Debug)]
pub struct ShipperTask {
    rx: mpsc::Receiver<Bytes>,
    poster: Poster,
    max_pending: usize,
    dropped: IntCounter,
}

impl ShipperConfig {
    /// The hand-off and the in-memory task, or every problem with the section (keys under
    /// `section.`, never a value). `dir`: the config file's directory; `name`: for log lines.
    ///
    /// # Errors
    /// Every problem found.
    pub fn build(
        &self,
        dir: &Path,
        section: &str,
        name: &'static str,
        metrics: Metrics,
    ) -> Result<(Handoff, ShipperTask), Vec<ConfigIssue>> {
        let max_pending = self.max_pending_bytes.unwrap_or(DEFAULT_MAX_PENDING_BYTES);
        let mut issues = Vec::new();
        if !(64 << 10..=1 << 30).contains(&max_pending) {
            issues.push(ConfigIssue::new(
                format!("{section}.max_pending_bytes"),
                "must be between 65536 and 1073741824",
            ));
        }
        let poster = self.poster_checked(dir, section, name, (metrics.posts, metrics.delivered), &mut issues);
        let (Some(poster), true) = (poster, issues.is_empty()) else {
            return Err(issues);
        };
        let (tx, rx) = mpsc::channel(HANDOFF_BATCHES);
        let handoff = Handoff { tx, dropped: metrics.dropped.clone() };
        Ok((handoff, ShipperTask { rx, poster, max_pending, dropped: metrics.dropped }))
    }

    /// A [`Poster`] for an owner that reads what to send from its own files (no hand-off, no
    /// queue: `max_pending_bytes` is refused). `counters`: POSTs by result, lines delivered.
    ///
    /// # Errors
    /// Every problem found (keys under `section.`).
    pub fn build_poster(
        &self,
        dir: &Path,
        section: &str,
        name: &'static str,
        counters: (IntCounterVec, IntCounter),
    ) -> Result<Poster, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        if self.max_pending_bytes.is_some() {
            issues.push(ConfigIssue::new(
                format!("{section}.max_pending_bytes"),
                "not used here: lines wait in the files they are read from, and none is dropped",
            ));
        }
        match self.poster_checked(dir, section, name, counters, &mut issues) {
            Some(poster) if issues.is_empty() => Ok(poster),
            _ => Err(issues),
        }
    }

    fn poster_checked(
        &self,
        dir: &Path,
        section: &str,
        name: &'static str,
        (posts, delivered): (IntCounterVec, IntCounter),
        issues: &mut Vec<ConfigIssue>,
    ) -> Option<Poster> {
        let mut bad = |k: &str, m: &str| issues.push(ConfigIssue::new(format!("{section}.{k}"), m));
        let url = match self.url.parse::<Uri>() {
            Ok(u) if u.scheme_str() == Some("https") && u.host().is_some() => Some(u),
            _ => {
                bad("url", "must be an https:// URL");
                None
            }
        };
        let mut ok = true;
        if !(100..=60_000).contains(&self.timeout_ms) {
            bad("timeout_ms", "must be between 100 and 60000");
            ok = false;
        }
        let authorization = match &self.authorization_env {
            None => None,
            Some(var) => match std::env::var(var).ok().and_then(|v| HeaderValue::from_str(&v).ok()) {
                Some(mut v) => {
                    v.set_sensitive(true);
                    Some(v)
                }
                None => {
                    bad("authorization_env", "the environment variable is not set (or not a header value)");
                    ok = false;
                    None
                }
            },
        };
        let tls = tls_config(self.ca_path.as_deref().map(|p| dir.join(p)).as_deref())
            .map_err(|m| bad("ca_path", m))
            .ok();
        let (Some(url), Some(tls), true) = (url, tls, ok) else {
            return None;
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Some(Poster {
            client: Client::builder(TokioExecutor::new()).build(connector),
            url,
            authorization,
            timeout: Duration::from_millis(self.timeout_ms),
            posts,
            delivered,
            name,
        })
    }
}

/// [`ShipperConfig::build`] for an optional section: `None` when absent or invalid, its
/// problems appended to `issues`.
pub fn build_optional(
    cfg: Option<&ShipperConfig>,
    dir: &Path,
    (section, name): (&str, &'static str),
    metrics: impl FnOnce() -> Metrics,
    issues: &mut Vec<ConfigIssue>,
) -> Option<(Handoff, ShipperTask)> {
    match cfg?.build(dir, section, name, metrics()) {
        Ok(built) => Some(built),
        Err(mut found) => {
            issues.append(&mut found);
            None
        }
    }
}

/// The trust store: the CA file's certificates, or the system's roots.
fn tls_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, &'static str> {
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<_> = match ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|_| "cannot read the file")?;
            rustls_pki_types::pem::PemObject::pem_slice_iter(&pem).filter_map(Result::ok).collect()
        }
        None => rustls_native_certs::load_native_certs().certs,
    };
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(if ca.is_some() {
            "holds no CA certificate"
        } else {
            "the system has no trusted roots: set it"
        });
    }
    // The process-default provider (ring, TLS 1.3 only) that the gateway installs.
    Ok(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth())
}

impl ShipperTask {
    /// Delivers batches in order until the owner is gone and everything queued was tried.
    pub async fn run(mut self) {
        let mut pending: VecDeque<Bytes> = VecDeque::new();
        let mut pending_bytes = 0usize;
        let mut backoff = BACKOFF_START;
        loop {
            if pending.is_empty() {
                match self.rx.recv().await {
                    Some(batch) => self.queue(&mut pending, &mut pending_bytes, batch),
                    None => return,
                }
            }
            while let Ok(batch) = self.rx.try_recv() {
                self.queue(&mut pending, &mut pending_bytes, batch);
            }
            // One POST: whole batches up to the size limit (at least one).
            let mut take = 0;
            let mut size = 0;
            while take < pending.len() && (take == 0 || size + pending[take].len() <= MAX_POST_BYTES) {
                size += pending[take].len();
                take += 1;
            }
            let body: Bytes = if take == 1 {
                pending[0].clone()
            } else {
                pending.iter().take(take).flat_map(|b| b.iter().copied()).collect::<Vec<u8>>().into()
            };
            if self.poster.post_counted(body, backoff).await {
                for _ in 0..take {
                    if let Some(b) = pending.pop_front() {
                        pending_bytes -= b.len();
                    }
                }
                backoff = BACKOFF_START;
            } else {
                // Batches keep arriving while the collector is down: they are taken off the
                // hand-off into the queue `max_pending_bytes` bounds, so the hand-off (a few
                // hundred batches) does not fill and drop the newest first.
                let wake = tokio::time::sleep(backoff);
                tokio::pin!(wake);
                loop {
                    tokio::select! {
                        () = &mut wake => break,
                        batch = self.rx.recv() => match batch {
                            Some(batch) => self.queue(&mut pending, &mut pending_bytes, batch),
                            None => {
                                (&mut wake).await;
                                break;
                            }
                        },
                    }
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }

    /// Queues a batch, dropping the oldest (counted) past `max_pending` bytes waiting.
    fn queue(&self, pending: &mut VecDeque<Bytes>, pending_bytes: &mut usize, batch: Bytes) {
        *pending_bytes += batch.len();
        pending.push_back(batch);
        while *pending_bytes > self.max_pending {
            let Some(old) = pending.pop_front() else { break };
            *pending_bytes -= old.len();
            self.dropped.inc_by(lines_in(&old));
        }
    }
}

impl Poster {
    /// Most bytes one POST should carry (callers cut their reads to it).
    pub const MAX_POST_BYTES: usize = MAX_POST_BYTES;

    /// POSTs `body` until the collector accepts it, waiting 1 s doubling to 60 s between tries.
    /// Never gives up: the caller's lines wait in its files meanwhile.
    pub async fn deliver(&self, body: Bytes) {
        let mut backoff = BACKOFF_START;
        while !self.post_counted(body.clone(), backoff).await {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One POST, counted; a failure is logged with the wait before the next try.
    async fn post_counted(&self, body: Bytes, backoff: Duration) -> bool {
        let lines = lines_in(&body);
        match self.post(body).await {
            Ok(()) => {
                self.posts.with_label_values(&["delivered"]).inc();
                self.delivered.inc_by(lines);
                true
            }
            Err(reason) => {
                self.posts.with_label_values(&[reason]).inc();
                log::warn!("{}: delivery failed ({reason}); retrying in {}s", self.name, backoff.as_secs());
                false
            }
        }
    }

    /// One POST; the failure's metric label.
    async fn post(&self, body: Bytes) -> Result<(), &'static str> {
        let mut req = Request::post(self.url.clone())
            .header(CONTENT_TYPE, "application/x-ndjson")
            .header(USER_AGENT, "phigate")
            .body(Full::new(body))
            .map_err(|_| "request")?;
        if let Some(auth) = &self.authorization {
            req.headers_mut().insert(AUTHORIZATION, auth.clone());
        }
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => Err("timeout"),
            Ok(Err(_)) => Err("connect"),
            Ok(Ok(res)) if res.status().is_success() => Ok(()),
            Ok(Ok(_)) => Err("status"),
        }
    }
}

fn lines_in(batch: &[u8]) -> u64 {
    batch.iter().filter(|&&b| b == b'\n').count() as u64
}

#[cfg(feature = "testing")]
pub mod testing;
