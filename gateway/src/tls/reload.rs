//! A server certificate resolver whose certificate and key can be swapped while serving.
//!
//! Rotation must not drop connections: established connections keep the key they negotiated with,
//! and new handshakes pick up the new pair atomically. A reload that fails (unreadable file, key
//! not matching) keeps the old pair and is counted.
//!
//! With a [`ChangeSink`] attached (audit configured), the certificate in force at start, each new
//! one and each refused pair are reported for the audit trail: fingerprint and notAfter, never
//! key material. A broken pair left in place is reported once, not at every periodic check.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use phigate_plugin::{Change, ChangeEvent, ChangeSink, ChangeTrigger};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

use super::TlsError;
use crate::metrics::Metrics;

/// The current certificate of a listener, reloadable from its files.
pub struct ReloadableCert {
    listener: Arc<str>,
    cert_path: PathBuf,
    key_path: PathBuf,
    current: arc_swap::ArcSwap<CertifiedKey>,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
    changes: OnceLock<ChangeSink>,
}

/// What was last loaded and last refused.
struct State {
    /// Hash of the files' bytes at the last successful load, to skip no-op reloads.
    files: [u8; 32],
    /// The served certificate as recorded.
    served: Served,
    /// The last refused files' hash (zero when unreadable) and reason class.
    refused: Option<([u8; 32], &'static str)>,
}

/// The leaf certificate's SHA-256 (DER, hex) and notAfter (RFC 3339).
struct Served {
    sha256: String,
    not_after: Option<String>,
}

impl Served {
    fn of(key: &CertifiedKey) -> Served {
        let der = key.end_entity_cert().map(|c| c.as_ref()).unwrap_or_default();
        Served { sha256: hex::encode(Sha256::digest(der)), not_after: not_after(der) }
    }
}

/// The certificate's notAfter as RFC 3339 UTC; `None` if x509-parser cannot read what rustls
/// accepted.
fn not_after(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let at = time::OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp()).ok()?;
    at.format(&time::format_description::well_known::Rfc3339).ok()
}

impl fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableCert").field("listener", &self.listener).finish_non_exhaustive()
    }
}

impl ReloadableCert {
    /// Loads the pair for the first time.
    ///
    /// # Errors
    /// When a file is unreadable, holds no certificate or key, or the key is unusable.
    pub fn load(
        listener: &str,
        cert_path: &Path,
        key_path: &Path,
        metrics: Arc<Metrics>,
    ) -> Result<Self, TlsError> {
        let files = read_pair(cert_path, key_path)?;
        let key = parse_pair(cert_path, key_path, &files.cert_pem, &files.key_pem)?;
        let served = Served::of(&key);
        Ok(ReloadableCert {
            listener: listener.into(),
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: arc_swap::ArcSwap::from_pointee(key),
            state: Mutex::new(State { files: files.hash, served, refused: None }),
            metrics,
            changes: OnceLock::new(),
        })
    }

    /// Reports later reloads to `changes`, and the certificate served now (trigger `startup`).
    pub fn attach_changes(&self, changes: ChangeSink) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if self.changes.set(changes).is_ok() {
            self.report(
                ChangeTrigger::Startup,
                Change::CertificateReloaded {
                    listener: self.listener.to_string(),
                    previous_sha256: None,
                    sha256: state.served.sha256.clone(),
                    not_after: state.served.not_after.clone(),
                },
            );
        }
    }

    fn report(&self, trigger: ChangeTrigger, change: Change) {
        if let Some(sink) = self.changes.get() {
            sink.emit(ChangeEvent::now(trigger, change));
        }
    }

    /// Re-reads the files; swaps the pair in when they changed and load cleanly. Returns whether
    /// a new pair is now served. A change is reported with trigger `watch` (the periodic check).
    ///
    /// # Errors
    /// When the new files cannot be used; the old pair keeps serving.
    pub fn reload(&self) -> Result<bool, TlsError> {
        self.reload_by(ChangeTrigger::Watch)
    }

    /// [`ReloadableCert::reload`], reporting a change as set off by `trigger`.
    ///
    /// # Errors
    /// When the new files cannot be used; the old pair keeps serving.
    pub fn reload_by(&self, trigger: ChangeTrigger) -> Result<bool, TlsError> {
        let read = read_pair(&self.cert_path, &self.key_path);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let files = read.as_ref().ok().map(|f| f.hash);
        if files == Some(state.files) {
            state.refused = None;
            return Ok(false);
        }
        let parsed = read.and_then(|f| parse_pair(&self.cert_path, &self.key_path, &f.cert_pem, &f.key_pem));
        match parsed {
            Ok(key) => {
                let served = Served::of(&key);
                self.current.store(Arc::new(key));
                state.files = files.unwrap_or_default();
                state.refused = None;
                self.metrics.cert_reloads.with_label_values(&[&self.listener, "ok"]).inc();
                log::info!("listener {}: certificate reloaded", self.listener);
                let previous = std::mem::replace(&mut state.served, served);
                self.report(
                    trigger,
                    Change::CertificateReloaded {
                        listener: self.listener.to_string(),
                        previous_sha256: Some(previous.sha256),
                        sha256: state.served.sha256.clone(),
                        not_after: state.served.not_after.clone(),
                    },
                );
                Ok(true)
            }
            Err(e) => {
                self.metrics.cert_reloads.with_label_values(&[&self.listener, "error"]).inc();
                log::warn!("listener {}: certificate reload failed, keeping the old one: {e}", self.listener);
                let refused = Some((files.unwrap_or_default(), e.class()));
                if state.refused != refused {
                    state.refused = refused;
                    self.report(
                        trigger,
                        Change::CertificateReloadFailed {
                            listener: self.listener.to_string(),
                            active_sha256: state.served.sha256.clone(),
                            reason: e.class(),
                        },
                    );
                }
                Err(e)
            }
        }
    }

    /// The listener's name.
    pub fn listener(&self) -> &str {
        &self.listener
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.metrics.tls_handshakes_started.with_label_values(&[&self.listener]).inc();
        Some(self.current.load_full())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.display().to_string(), source })
}

/// Reads and parses a PEM certificate chain.
pub(crate) fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsError::Missing { path: path.display().to_string(), what: "certificate" });
    }
    Ok(certs)
}

/// Reads and parses a PEM private key.
pub(crate) fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|_| TlsError::Missing { path: path.display().to_string(), what: "private key" })
}

/// Both files' bytes and a hash over them (to skip reloads of unchanged files).
struct PairFiles {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    hash: [u8; 32],
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<PairFiles, TlsError> {
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let mut h = Sha256::new();
    h.update(&cert_pem);
    h.update(&key_pem);
    Ok(PairFiles { cert_pem, key_pem, hash: h.finalize().into() })
}

fn parse_pair(
    cert_path: &Path,
    key_path: &Path,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let certs = parse_certs(cert_path, cert_pem)?;
    let key = parse_key(key_path, key_pem)?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| TlsError::Invalid {
        path: key_path.display().to_string(),
        message: format!("unsupported private key: {e}"),
    })?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|_| TlsError::Invalid {
        path: key_path.display().to_string(),
        message: "the private key does not match the certificate".to_owned(),
    })?;
    Ok(ck)
}
