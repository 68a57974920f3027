//! Checks the certificate and key files a config names: present, regular, readable, and holding
//! the expected PEM items. Errors never include file contents (a key file's first line, echoed
//! by a PEM parser, could be key material).

use std::io;
use std::path::Path;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{ConfigError, LoadedConfig};

/// Larger PEM files are refused: a certificate bundle is kilobytes, and a wrong path (a log file,
/// a disk image) must not be read whole at startup.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// What a file must hold.
#[derive(Debug, Clone, Copy)]
enum Pem {
    /// At least one certificate.
    Certs,
    /// A private key.
    Key,
}

/// Appends an error for every configured file that is missing, unreadable or not the expected PEM.
pub(crate) fn check_files(loaded: &LoadedConfig, errors: &mut Vec<ConfigError>) {
    let config = &loaded.config;
    let mut files: Vec<(String, &Path, Pem)> = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let key = format!("listeners[{i}].tls");
        files.push((format!("{key}.cert_path"), &l.tls.cert_path, Pem::Certs));
        files.push((format!("{key}.key_path"), &l.tls.key_path, Pem::Key));
        if let Some(ca) = &l.tls.client_ca_path {
            files.push((format!("{key}.client_ca_path"), ca, Pem::Certs));
        }
    }
    for (i, u) in config.upstreams.iter().enumerate() {
        if let Some(tls) = &u.tls {
            let key = format!("upstreams[{i}].tls");
            files.push((format!("{key}.ca_path"), &tls.ca_path, Pem::Certs));
            files.push((
                format!("{key}.client_cert_path"),
                &tls.client_cert_path,
                Pem::Certs,
            ));
            files.push((
                format!("{key}.client_key_path"),
                &tls.client_key_path,
                Pem::Key,
            ));
        }
    }
    for (key, path, kind) in files {
        if let Err(message) = check_pem(path, kind) {
            errors.push(loaded.error_at(key, message));
        }
    }
}

/// Checks one file. The message names the problem, never the path's contents.
fn check_pem(path: &Path, kind: Pem) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| io_message(&e))?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    if meta.len() > MAX_PEM_BYTES {
        return Err(format!("file is larger than {MAX_PEM_BYTES} bytes"));
    }
    match kind {
        Pem::Certs => {
            let mut count = 0usize;
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| pem_message(&e, kind))? {
                cert.map_err(|e| pem_message(&e, kind))?;
                count += 1;
            }
            if count == 0 {
                return Err(pem_message(&pem::Error::NoItemsFound, kind));
            }
            Ok(())
        }
        Pem::Key => PrivateKeyDer::from_pem_file(path)
            .map(drop)
            .map_err(|e| pem_message(&e, kind)),
    }
}

fn io_message(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "file not found".to_owned(),
        io::ErrorKind::PermissionDenied => "file not readable (permission denied)".to_owned(),
        kind => format!("cannot read the file: {kind}"),
    }
}

/// A fixed message per PEM error: the parser's own messages quote the offending line.
fn pem_message(e: &pem::Error, kind: Pem) -> String {
    let (what, formats) = match kind {
        Pem::Certs => ("certificate", "`CERTIFICATE`"),
        Pem::Key => ("private key", "PKCS#8, SEC1 or PKCS#1"),
    };
    match e {
        pem::Error::Io(io) => io_message(io),
        pem::Error::NoItemsFound => format!("no PEM {what} found in the file (expected {formats})"),
        _ => format!("malformed PEM in the file (expected a {what})"),
    }
}
