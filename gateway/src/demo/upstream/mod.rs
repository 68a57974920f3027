//! The sample FHIR R4 upstream: a small, fast HTTPS server on hyper that serves [`SampleData`]
//! and requires the gateway's client certificate (mutual TLS, TLS 1.3 only, `h2` or `http/1.1`
//! by ALPN).
//!
//! It plays the hospital's FHIR server in `phigate demo`, in the end-to-end tests and in the load
//! tests, so it records what it receives ([`Recorder`]) and answers from bytes serialized once at
//! startup. It is read-only, bulk export jobs aside. Routes (JSON, `application/fhir+json`, unless
//! noted):
//!
//! ```text
//! GET  {base}/metadata                    CapabilityStatement
//! GET  {base}/.well-known/smart-configuration   SMART discovery (placeholder endpoints)
//! GET  {base}/{type}/{id}                 read (404 OperationOutcome when missing)
//! GET  {base}/{type}/{id}/_history        its history (one version)
//! GET  {base}/{type}?params               search: patient|subject|_id|tokens, _count (≤100), _offset
//! POST {base}/{type}/_search              search with a form body
//! GET  {base}/Patient/{id}/{type}         compartment search
//! GET  {base}/Patient/{id}/$everything    everything about a patient, paged
//! POST {base}                             batch Bundle → batch-response
//! GET  {base}/$export, {base}/Patient/$export        bulk export kick-off (Prefer: respond-async) → 202
//! GET  {base}/$export-poll-status?_jobId=job-N       202 in progress, then the manifest (application/json)
//! DELETE {base}/$export-poll-status?_jobId=job-N     cancel: 202, job and files gone
//! GET  {base}/Binary/job-N-{type}                    export file (application/fhir+ndjson)
//! ```
//!
//! Bodies of 1 KiB or more are gzipped when the request accepts gzip, as HAPI FHIR does
//! ([`Gzip`]).
//!
//! Bulk export (FHIR Bulk Data Access v2, HAPI FHIR's URLs) honours `X-Phigate-Tenant` as a
//! partition; see `bulk.rs` for the details.

mod batch;
mod bulk;
mod fhir;
mod recorder;
mod search;
mod server;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use batch::MAX_BATCH_ENTRIES;
pub use bulk::{FHIR_NDJSON, MAX_EXPORT_JOBS, TENANT_HEADER};
pub use fhir::FHIR_JSON;
pub use recorder::{Recorder, SeenRequest, MAX_RECORDED_BODY};
pub use search::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
pub use tls::PemSource;

use crate::demo::data::SampleData;
use crate::demo::pki::IssuedCert;

/// Requests kept by the recorder unless the builder says otherwise.
pub const DEFAULT_RECORD_CAPACITY: usize = 256;

/// Why the sample upstream could not start.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A TLS setting was not given (`cert`, `key` or `client_ca`); plaintext must be asked for.
    #[error("sample upstream: {0} is required unless insecure_plaintext is set")]
    Missing(&'static str),
    /// A PEM file could not be read.
    #[error("sample upstream: cannot read {path}: {source}")]
    ReadPem {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM input held no usable item of the expected kind.
    #[error("sample upstream: no valid PEM {0}")]
    BadPem(&'static str),
    /// rustls refused the configuration.
    #[error("sample upstream: TLS configuration: {0}")]
    Tls(String),
    /// The base path or public base URL is malformed.
    #[error("sample upstream: invalid {0}")]
    BadSetting(&'static str),
    /// The listener could not be bound.
    #[error("sample upstream: bind failed: {0}")]
    Bind(#[source] std::io::Error),
    /// The dedicated runtime could not be started.
    #[error("sample upstream: runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Entry point: `SampleUpstream::builder()`.
#[derive(Debug)]
pub struct SampleUpstream;

impl SampleUpstream {
    /// A builder with the defaults: base path `/fhir`, generated [`SampleData`], TLS required.
    pub fn builder() -> SampleUpstreamBuilder {
        SampleUpstreamBuilder {
            tls: tls::TlsMaterial::default(),
            plaintext: false,
            base_path: "/fhir".to_owned(),
            public_base_url: None,
            data: None,
            record_capacity: DEFAULT_RECORD_CAPACITY,
            export_copies: 1,
            gzip: Gzip::WhenAsked,
        }
    }
}

/// When the sample upstream gzips a response body (of 1 KiB or more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gzip {
    /// When the request's `Accept-Encoding` names `gzip`, as HAPI FHIR does (the default).
    WhenAsked,
    /// Always, asked or not: a misbehaving server, for tests of what the gateway does then.
    Always,
}

/// Configures and starts a sample upstream.
#[derive(Debug)]
pub struct SampleUpstreamBuilder {
    tls: tls::TlsMaterial,
    plaintext: bool,
    base_path: String,
    public_base_url: Option<String>,
    data: Option<Arc<SampleData>>,
    record_capacity: usize,
    export_copies: usize,
    gzip: Gzip,
}

impl SampleUpstreamBuilder {
    /// The server certificate chain (leaf first).
    pub fn cert(mut self, pem: impl Into<PemSource>) -> Self {
        self.tls.cert = Some(pem.into());
        self
    }

    /// The server private key.
    pub fn key(mut self, pem: impl Into<PemSource>) -> Self {
        self.tls.key = Some(pem.into());
        self
    }

    /// Server certificate and key from an in-memory [`IssuedCert`].
    pub fn identity(mut self, cert: &IssuedCert) -> Self {
        self.tls.identity(cert);
        self
    }

    /// The CA client certificates must chain to (the internal CA in the demo). Required with TLS.
    pub fn client_ca(mut self, pem: impl Into<PemSource>) -> Self {
        self.tls.client_ca = Some(pem.into());
        self
    }

    /// The path prefix of the FHIR base (default `/fhir`; `""` serves at the root).
    pub fn base_path(mut self, path: &str) -> Self {
        self.base_path = path.to_owned();
        self
    }

    /// The base URL written into `fullUrl` and paging links, instead of one derived from the
    /// request's `Host` (for example the gateway's public URL).
    pub fn public_base_url(mut self, url: &str) -> Self {
        self.public_base_url = Some(url.to_owned());
        self
    }

    /// The data to serve (default: [`SampleData::generate`]).
    pub fn data(self, data: SampleData) -> Self {
        self.shared_data(Arc::new(data))
    }

    /// The data to serve, already shared.
    pub fn shared_data(mut self, data: Arc<SampleData>) -> Self {
        self.data = Some(data);
        self
    }

    /// Serve plain HTTP (h1, or h2 with prior knowledge) without TLS. Only for tests of the
    /// gateway's plaintext-upstream option: PHI must never cross a network unencrypted.
    pub fn insecure_plaintext(mut self) -> Self {
        self.plaintext = true;
        self
    }

    /// How many requests the [`Recorder`] keeps (default [`DEFAULT_RECORD_CAPACITY`]; 0 turns
    /// recording off, for load tests).
    pub fn record_capacity(mut self, capacity: usize) -> Self {
        self.record_capacity = capacity;
        self
    }

    /// Each resource appears `copies` times in a row in bulk export files (and in the
    /// manifest's counts): an export far larger than the sample data, for tests of files that
    /// stream in many pieces. Default 1.
    pub fn export_copies(mut self, copies: usize) -> Self {
        self.export_copies = copies.max(1);
        self
    }

    /// When response bodies are gzipped. Default [`Gzip::WhenAsked`].
    pub fn gzip(mut self, gzip: Gzip) -> Self {
        self.gzip = gzip;
        self
    }

    /// Binds the listener, then starts serving on the current tokio runtime.
    ///
    /// # Errors
    /// When TLS material is missing or invalid, a setting is malformed, or binding fails.
    pub async fn bind(self, addr: impl tokio::net::ToSocketAddrs) -> Result<RunningUpstream, UpstreamError> {
        let prepared = self.prepare()?;
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(UpstreamError::Bind)?;
        Ok(prepared.start(listener))
    }

    /// Starts the upstream on a runtime of its own (`worker_threads` threads), for callers that
    /// are not inside tokio, like the `phigate demo` command before pingora takes the main thread.
    ///
    /// # Errors
    /// As [`SampleUpstreamBuilder::bind`], or when the runtime cannot be created.
    pub fn bind_on_own_runtime(
        self,
        addr: SocketAddr,
        worker_threads: usize,
    ) -> Result<DedicatedUpstream, UpstreamError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads.max(1))
            .thread_name("phigate-sample-upstream")
            .enable_all()
            .build()
            .map_err(UpstreamError::Runtime)?;
        let upstream = runtime.block_on(self.bind(addr))?;
        Ok(DedicatedUpstream { upstream, runtime: Some(runtime) })
    }

    fn prepare(self) -> Result<server::Prepared, UpstreamError> {
        let base_path = normalize_base_path(&self.base_path)?;
        let public_base_url = match self.public_base_url {
            Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
                Some(url.trim_end_matches('/').to_owned())
            }
            Some(_) => return Err(UpstreamError::BadSetting("public_base_url")),
            None => None,
        };
        let tls = if self.plaintext { None } else { Some(self.tls.server_config()?) };
        Ok(server::Prepared {
            tls,
            base_path,
            public_base_url,
            data: self.data.unwrap_or_else(|| Arc::new(SampleData::generate())),
            recorder: Recorder::new(self.record_capacity),
            export_copies: self.export_copies,
            gzip: self.gzip,
        })
    }
}

fn normalize_base_path(path: &str) -> Result<String, UpstreamError> {
    let trimmed = path.trim_end_matches('/');
    let ok = trimmed.is_empty()
        || (trimmed.starts_with('/')
            && trimmed.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
            && !trimmed.contains("//"));
    if ok {
        Ok(trimmed.to_owned())
    } else {
        Err(UpstreamError::BadSetting("base_path"))
    }
}

/// A running sample upstream. Dropping it stops accepting and drains connections in the
/// background; [`RunningUpstream::shutdown`] does the same and waits.
#[derive(Debug)]
pub struct RunningUpstream {
    /// The bound address (read the port from here after binding `:0`).
    pub addr: SocketAddr,
    /// What the upstream received.
    pub recorder: Recorder,
    data: Arc<SampleData>,
    base_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningUpstream {
    /// The FHIR base URL, like `https://127.0.0.1:40123/fhir` (`http://` in plaintext mode).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The data being served.
    pub fn data(&self) -> &Arc<SampleData> {
        &self.data
    }

    /// Stops accepting, lets open connections finish (bounded by a grace period), and waits.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// A sample upstream running on its own tokio runtime (see
/// [`SampleUpstreamBuilder::bind_on_own_runtime`]). Dropping it stops the server and the runtime.
#[derive(Debug)]
pub struct DedicatedUpstream {
    upstream: RunningUpstream,
    runtime: Option<tokio::runtime::Runtime>,
}

impl DedicatedUpstream {
    /// The running upstream (address, recorder, base URL).
    pub fn upstream(&self) -> &RunningUpstream {
        &self.upstream
    }
}

impl Drop for DedicatedUpstream {
    fn drop(&mut self) {
        if let Some(tx) = self.upstream.shutdown.take() {
            let _ = tx.send(());
        }
        let Some(rt) = self.runtime.take() else {
            return;
        };
        // Draining needs `block_on`, which panics inside another runtime; there the drain is
        // skipped and the runtime is torn down in the background.
        if let (Some(task), Err(_)) = (self.upstream.task.take(), tokio::runtime::Handle::try_current()) {
            let _ = rt.block_on(task);
        }
        rt.shutdown_background();
    }
}

#[cfg(test)]
mod api_tests;
