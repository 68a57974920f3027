//! Checks the certificate and key files a config names: present, regular, readable, parsable,
//! and each key matching its certificate, so `phigate check` catches a bad rotation before a
//! deploy does. Errors never include file contents (a PEM parser's own messages quote the
//! offending line, which in a key file is key material).

use std::io;
use std::path::Path;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{ConfigError, LoadedConfig};

/// Larger PEM files are refused: a certificate bundle is kilobytes, and a wrong path (a log file,
/// a disk image) must not be read whole at startup.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Appends an error for every configured file that is missing, unreadable, malformed, or a key
/// that does not match its certificate.
pub(crate) fn check_files(loaded: &LoadedConfig, errors: &mut Vec<ConfigError>) {
    let mut sink = Sink { loaded, errors, provider: rustls::crypto::ring::default_provider() };
    for (i, l) in loaded.config.listeners.iter().enumerate() {
        let key = format!("listeners[{i}].tls");
        sink.pair(&key, ("cert_path", &l.tls.cert_path), ("key_path", &l.tls.key_path));
        if let Some(ca) = &l.tls.client_ca_path {
            sink.ca(format!("{key}.client_ca_path"), ca);
        }
    }
    for (i, u) in loaded.config.upstreams.iter().enumerate() {
        if let Some(tls) = &u.tls {
            let key = format!("upstreams[{i}].tls");
            sink.ca(format!("{key}.ca_path"), &tls.ca_path);
            let cert = ("client_cert_path", tls.client_cert_path.as_path());
            sink.pair(&key, cert, ("client_key_path", &tls.client_key_path));
        }
    }
}

struct Sink<'a> {
    loaded: &'a LoadedConfig,
    errors: &'a mut Vec<ConfigError>,
    provider: CryptoProvider,
}

impl Sink<'_> {
    fn push(&mut self, key_path: String, message: String) {
        self.errors.push(self.loaded.error_at(key_path, message));
    }

    /// A CA bundle: every certificate in it must parse as a trust anchor.
    fn ca(&mut self, key_path: String, path: &Path) {
        let result = read_certs(path).and_then(|certs| {
            let mut store = RootCertStore::empty();
            certs
                .into_iter()
                .try_for_each(|c| store.add(c))
                .map_err(|_| "a certificate in the bundle is not a valid X.509 certificate".to_owned())
        });
        if let Err(message) = result {
            self.push(key_path, message);
        }
    }

    /// A certificate chain and its private key: `(key name, path)` each, under `prefix`.
    fn pair(&mut self, prefix: &str, cert: (&str, &Path), key: (&str, &Path)) {
        let certs = read_certs(cert.1);
        let private_key = read_key(key.1);
        match (certs, private_key) {
            (Ok(certs), Ok(private_key)) => {
                let checked = CertifiedKey::from_der(certs, private_key, &self.provider);
                if let Err(err) = checked {
                    let (cert_at_fault, message) = pair_message(&err, cert.0);
                    let field = if cert_at_fault { cert.0 } else { key.0 };
                    self.push(format!("{prefix}.{field}"), message);
                }
            }
            (certs, private_key) => {
                if let Err(message) = certs {
                    self.push(format!("{prefix}.{}", cert.0), message);
                }
                if let Err(message) = private_key {
                    self.push(format!("{prefix}.{}", key.0), message);
                }
            }
        }
    }
}

/// Whether the certificate (rather than the key) of a pair is at fault, and a fixed message.
fn pair_message(err: &rustls::Error, cert_key: &str) -> (bool, String) {
    match err {
        rustls::Error::InconsistentKeys(_) => {
            (false, format!("does not match the certificate in `{cert_key}`"))
        }
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            (true, "the first certificate is not a valid X.509 certificate".to_owned())
        }
        _ => (false, "unsupported or malformed private key".to_owned()),
    }
}

/// The PEM certificates of a file: at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    check_regular_file(path)?;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_message(&e, "certificate"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_message(&e, "certificate"))?;
    if certs.is_empty() {
        return Err(pem_message(&pem::Error::NoItemsFound, "certificate"));
    }
    Ok(certs)
}

/// The first PEM private key of a file (PKCS#8, SEC1 or PKCS#1).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    check_regular_file(path)?;
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_message(&e, "private key"))
}

fn check_regular_file(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| io_message(&e))?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    if meta.len() > MAX_PEM_BYTES {
        return Err(format!("file is larger than {MAX_PEM_BYTES} bytes"));
    }
    Ok(())
}

fn io_message(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "file not found".to_owned(),
        io::ErrorKind::PermissionDenied => "file not readable (permission denied)".to_owned(),
        kind => format!("cannot read the file: {kind}"),
    }
}

/// A fixed message per PEM error: the parser's own messages quote the offending line.
fn pem_message(e: &pem::Error, what: &str) -> String {
    match e {
        pem::Error::Io(io) => io_message(io),
        pem::Error::NoItemsFound if what == "private key" => {
            "no PEM private key found in the file (expected PKCS#8, SEC1 or PKCS#1)".to_owned()
        }
        pem::Error::NoItemsFound => format!("no PEM {what} found in the file"),
        _ => format!("malformed PEM in the file (expected a {what})"),
    }
}
