//! A server certificate resolver whose certificate and key can be swapped while serving.
//!
//! Rotation must not drop connections: established connections keep the key they negotiated with,
//! and new handshakes pick up the new pair atomically. A reload that fails (unreadable file, key
//! not matching) keeps the old pair and is counted.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    /// Hash of the files' bytes at the last successful load, to skip no-op reloads.
    loaded_hash: Mutex<[u8; 32]>,
    metrics: Arc<Metrics>,
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
        let (key, hash) = load_pair(cert_path, key_path)?;
        Ok(ReloadableCert {
            listener: listener.into(),
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: arc_swap::ArcSwap::from_pointee(key),
            loaded_hash: Mutex::new(hash),
            metrics,
        })
    }

    /// Re-reads the files; swaps the pair in when they changed and load cleanly. Returns whether
    /// a new pair is now served.
    ///
    /// # Errors
    /// When the new files cannot be used; the old pair keeps serving.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let result = load_pair(&self.cert_path, &self.key_path);
        let mut loaded = self.loaded_hash.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok((_, hash)) if hash == *loaded => Ok(false),
            Ok((key, hash)) => {
                self.current.store(Arc::new(key));
                *loaded = hash;
                self.metrics.cert_reloads.with_label_values(&[&self.listener, "ok"]).inc();
                log::info!("listener {}: certificate reloaded", self.listener);
                Ok(true)
            }
            Err(e) => {
                self.metrics.cert_reloads.with_label_values(&[&self.listener, "error"]).inc();
                log::warn!("listener {}: certificate reload failed, keeping the old one: {e}", self.listener);
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

fn load_pair(cert_path: &Path, key_path: &Path) -> Result<(CertifiedKey, [u8; 32]), TlsError> {
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let mut h = Sha256::new();
    h.update(&cert_pem);
    h.update(&key_pem);
    let hash: [u8; 32] = h.finalize().into();
    let certs = parse_certs(cert_path, &cert_pem)?;
    let key = parse_key(key_path, &key_pem)?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| TlsError::Invalid {
        path: key_path.display().to_string(),
        message: format!("unsupported private key: {e}"),
    })?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|_| TlsError::Invalid {
        path: key_path.display().to_string(),
        message: "the private key does not match the certificate".to_owned(),
    })?;
    Ok((ck, hash))
}
