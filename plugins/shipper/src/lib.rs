//! NDJSON lines shipped to an HTTPS collector (a SIEM's HTTP input such as Splunk HEC or an
//! Elastic or Sentinel ingestion endpoint, an incident tool), besides the file that keeps them.
//!
//! The owner (the exfil alert writer, the audit writer) hands each batch of lines it made
//! durable to a [`Handoff`] and never waits: a full hand-off drops the batch for the collector
//! only, counted. The [`ShipperTask`] POSTs the lines as `application/x-ndjson`, exactly as
//! written and in order, over HTTPS (TLS 1.3, the process's provider). A failure (connection,
//! TLS, time-out, a status other than 2xx) is retried with backoff (1 s doubling to 60 s), the
//! same lines whole; past `max_pending_bytes` waiting the oldest are dropped and counted. The
//! file stays the record: shipping is delivery.

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
    /// are dropped (and counted). Default 16 MiB.
    #[serde(default = "default_max_pending_bytes")]
    pub max_pending_bytes: usize,
}

fn default_timeout_ms() -> u64 {
    5000
}

fn default_max_pending_bytes() -> usize {
    16 << 20
}

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

/// The delivery task, until the owner's background task runs it.
pub struct ShipperTask {
    rx: mpsc::Receiver<Bytes>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
    authorization: Option<HeaderValue>,
    timeout: Duration,
    max_pending: usize,
    metrics: Metrics,
    /// Names the shipper in its log lines (`exfil webhook`, `audit forward`).
    name: &'static str,
}

impl std::fmt::Debug for ShipperTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShipperTask").field("name", &self.name).finish_non_exhaustive()
    }
}

impl ShipperConfig {
    /// The hand-off and the task, or every problem with the section (keys under `section.`,
    /// never a value). `dir`: the config file's directory; `name`: for log lines.
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
        let mut issues = Vec::new();
        let mut bad = |k: &str, m: &str| issues.push(ConfigIssue::new(format!("{section}.{k}"), m));
        let url = match self.url.parse::<Uri>() {
            Ok(u) if u.scheme_str() == Some("https") && u.host().is_some() => Some(u),
            _ => {
                bad("url", "must be an https:// URL");
                None
            }
        };
        if !(100..=60_000).contains(&self.timeout_ms) {
            bad("timeout_ms", "must be between 100 and 60000");
        }
        if !(64 << 10..=1 << 30).contains(&self.max_pending_bytes) {
            bad("max_pending_bytes", "must be between 65536 and 1073741824");
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
                    None
                }
            },
        };
        let tls = tls_config(self.ca_path.as_deref().map(|p| dir.join(p)).as_deref())
            .map_err(|m| bad("ca_path", m))
            .ok();
        let (Some(url), Some(tls), true) = (url, tls, issues.is_empty()) else {
            return Err(issues);
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let (tx, rx) = mpsc::channel(HANDOFF_BATCHES);
        let handoff = Handoff { tx, dropped: metrics.dropped.clone() };
        let task = ShipperTask {
            rx,
            client,
            url,
            authorization,
            timeout: Duration::from_millis(self.timeout_ms),
            max_pending: self.max_pending_bytes,
            metrics,
            name,
        };
        Ok((handoff, task))
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
            let lines = lines_in(&body);
            match self.post(body).await {
                Ok(()) => {
                    self.metrics.posts.with_label_values(&["delivered"]).inc();
                    self.metrics.delivered.inc_by(lines);
                    for _ in 0..take {
                        if let Some(b) = pending.pop_front() {
                            pending_bytes -= b.len();
                        }
                    }
                    backoff = BACKOFF_START;
                }
                Err(reason) => {
                    self.metrics.posts.with_label_values(&[reason]).inc();
                    log::warn!(
                        "{}: delivery failed ({reason}); retrying in {}s",
                        self.name,
                        backoff.as_secs()
                    );
                    // Batches keep arriving while the collector is down: they are taken off
                    // the hand-off into the queue `max_pending_bytes` bounds, so the hand-off
                    // (a few hundred batches) does not fill and drop the newest first.
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
    }

    /// Queues a batch, dropping the oldest (counted) past `max_pending` bytes waiting.
    fn queue(&self, pending: &mut VecDeque<Bytes>, pending_bytes: &mut usize, batch: Bytes) {
        *pending_bytes += batch.len();
        pending.push_back(batch);
        while *pending_bytes > self.max_pending {
            let Some(old) = pending.pop_front() else { break };
            *pending_bytes -= old.len();
            self.metrics.dropped.inc_by(lines_in(&old));
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
