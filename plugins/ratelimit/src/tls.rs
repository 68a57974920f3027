//! The Redis client for `redis.url`, and for `rediss://` its TLS material: the `tls:` block's
//! files are read and checked when the config is built, so a wrong path, a file that is not PEM
//! or a key that does not match its certificate is a config error naming the key, not an outage
//! found at the first connection.
//!
//! Certificates are public but keys are not: messages name the key path and what is wrong,
//! never the file's contents (nor the path, which the operator already knows).

use std::path::Path;

use phigate_plugin::ConfigIssue;
use redis::{ClientTlsConfig, TlsCertificates};
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::config::{RedisConfig, RedisTlsConfig};

/// The client for `cfg.url` (with `cfg.tls`, relative paths against `dir`); does no I/O but
/// reading the TLS files. Problems are reported under `redis.url` / `redis.tls[.<field>]`.
pub(crate) fn client(cfg: &RedisConfig, dir: &Path, issues: &mut Vec<ConfigIssue>) -> Option<redis::Client> {
    let bad = |k: &str, m: &str| ConfigIssue::new(format!("redis.{k}"), m);
    // The parser's message may quote the URL (and its password): report a fixed text.
    let Ok(plain) = redis::Client::open(cfg.url.as_str()) else {
        issues.push(bad("url", "is not a valid redis:// or rediss:// URL"));
        return None;
    };
    let (is_tls, insecure) = match plain.get_connection_info().addr() {
        redis::ConnectionAddr::TcpTls { insecure, .. } => (true, *insecure),
        _ => (false, false),
    };
    if insecure {
        // `#insecure` turns certificate checks off: whoever sits on the path could then read
        // and answer the traffic that TLS was configured to protect.
        issues.push(bad("url", "must not disable certificate checks (`#insecure`)"));
        return None;
    }
    let Some(tls) = &cfg.tls else { return Some(plain) };
    if !is_tls {
        issues.push(bad("tls", "is only used with a rediss:// URL (this one is not TLS)"));
        return None;
    }
    let certs = load(tls, dir, issues)?;
    match redis::Client::build_with_tls(cfg.url.as_str(), certs) {
        Ok(client) => Some(client),
        Err(_) => {
            issues.push(bad("tls", "cannot be used with this URL"));
            None
        }
    }
}

/// Reads and checks the files of `tls` (relative paths against `dir`); each problem is reported
/// under `redis.tls.<field>`. `None` if any file is unusable.
fn load(tls: &RedisTlsConfig, dir: &Path, issues: &mut Vec<ConfigIssue>) -> Option<TlsCertificates> {
    let before = issues.len();
    let root_cert = tls.ca_path.as_deref().and_then(|p| ca_bundle(&dir.join(p), issues));
    let client_tls = match (&tls.client_cert_path, &tls.client_key_path) {
        (None, None) => None,
        (Some(_), None) => {
            issues.push(issue("client_key_path", "is required with client_cert_path"));
            None
        }
        (None, Some(_)) => {
            issues.push(issue("client_cert_path", "is required with client_key_path"));
            None
        }
        (Some(cert), Some(key)) => client_identity(&dir.join(cert), &dir.join(key), issues),
    };
    (issues.len() == before).then_some(TlsCertificates { client_tls, root_cert })
}

fn issue(field: &str, message: &str) -> ConfigIssue {
    ConfigIssue::new(format!("redis.tls.{field}"), message)
}

/// The file's bytes; a read error is reported under `field` (the OS message names no path).
fn read(path: &Path, field: &str, issues: &mut Vec<ConfigIssue>) -> Option<Vec<u8>> {
    std::fs::read(path).map_err(|e| issues.push(issue(field, &format!("cannot be read: {e}")))).ok()
}

/// Every certificate in a PEM file; `None` if there is none or one is malformed.
fn certificates(pem: &[u8]) -> Option<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().ok()?;
    (!certs.is_empty()).then_some(certs)
}

/// The CA bundle as PEM, once every certificate in it is usable as a trust anchor.
fn ca_bundle(path: &Path, issues: &mut Vec<ConfigIssue>) -> Option<Vec<u8>> {
    let pem = read(path, "ca_path", issues)?;
    let Some(certs) = certificates(&pem) else {
        issues.push(issue("ca_path", "holds no PEM certificate"));
        return None;
    };
    let (_, unusable) = rustls::RootCertStore::empty().add_parsable_certificates(certs);
    if unusable > 0 {
        issues.push(issue("ca_path", "holds a certificate that cannot be a trust anchor"));
        return None;
    }
    Some(pem)
}

/// The client certificate and key as PEM, once the key parses and matches the certificate.
fn client_identity(cert: &Path, key: &Path, issues: &mut Vec<ConfigIssue>) -> Option<ClientTlsConfig> {
    let cert_pem = read(cert, "client_cert_path", issues);
    let key_pem = read(key, "client_key_path", issues);
    let chain = cert_pem.as_deref().and_then(|pem| {
        let chain = certificates(pem);
        if chain.is_none() {
            issues.push(issue("client_cert_path", "holds no PEM certificate"));
        }
        chain
    });
    let key_der = key_pem.as_deref().and_then(|pem| {
        let key = PrivateKeyDer::from_pem_slice(pem).ok();
        if key.is_none() {
            issues.push(issue("client_key_path", "holds no PEM private key"));
        }
        key
    });
    // The check the TLS client would make at the first connection; with ring, the provider the
    // gateway runs on (only its key loader is used here).
    if CertifiedKey::from_der(chain?, key_der?, &ring::default_provider()).is_err() {
        issues
            .push(issue("client_key_path", "is not a supported key for the certificate in client_cert_path"));
        return None;
    }
    Some(ClientTlsConfig { client_cert: cert_pem?, client_key: key_pem? })
}
