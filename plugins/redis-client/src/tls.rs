//! The TLS material of a `rediss://` client: the `tls:` block's files are read and checked when
//! the config is built, so a wrong path, a file that is not PEM or a key that does not match its
//! certificate is a config error naming the key, not an outage found at the first connection.
//!
//! Certificates are public but keys are not: messages name the key and what is wrong, never the
//! file's contents (nor the path, which the operator already knows).

use std::path::Path;

use base64::Engine;
use phigate_plugin::ConfigIssue;
use redis::{ClientTlsConfig, TlsCertificates};
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::config::RedisTlsConfig;

/// Reads and checks the files of `tls` (relative paths against `dir`); each problem is reported
/// under `<prefix>.<field>`. The roots are always explicit (see the crate docs). `None` if any
/// file is unusable.
pub(crate) fn load(
    tls: &RedisTlsConfig,
    dir: &Path,
    prefix: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<TlsCertificates> {
    let before = issues.len();
    let issue = |field: &str, m: &str| ConfigIssue::new(format!("{prefix}.{field}"), m);
    let root_cert = match &tls.ca_path {
        Some(p) => ca_bundle(&dir.join(p), prefix, issues),
        None => system_roots().map_err(|m| issues.push(issue("ca_path", m))).ok(),
    };
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
        (Some(cert), Some(key)) => client_identity(&dir.join(cert), &dir.join(key), prefix, issues),
    };
    (issues.len() == before).then_some(TlsCertificates { client_tls, root_cert: Some(root_cert?) })
}

/// The file's bytes; a read error is reported under `field` (the OS message names no path).
fn read(path: &Path, prefix: &str, field: &str, issues: &mut Vec<ConfigIssue>) -> Option<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| {
            issues.push(ConfigIssue::new(format!("{prefix}.{field}"), format!("cannot be read: {e}")))
        })
        .ok()
}

/// Every certificate in a PEM file; `None` if there is none or one is malformed.
fn certificates(pem: &[u8]) -> Option<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().ok()?;
    (!certs.is_empty()).then_some(certs)
}

/// The CA bundle as PEM, once every certificate in it is usable as a trust anchor.
fn ca_bundle(path: &Path, prefix: &str, issues: &mut Vec<ConfigIssue>) -> Option<Vec<u8>> {
    let issue = |m: &str| ConfigIssue::new(format!("{prefix}.ca_path"), m);
    let pem = read(path, prefix, "ca_path", issues)?;
    let Some(certs) = certificates(&pem) else {
        issues.push(issue("holds no PEM certificate"));
        return None;
    };
    let (_, unusable) = rustls::RootCertStore::empty().add_parsable_certificates(certs);
    if unusable > 0 {
        issues.push(issue("holds a certificate that cannot be a trust anchor"));
        return None;
    }
    Some(pem)
}

/// The operating system's trusted roots as one PEM bundle, read now (once per config build).
/// Certificates that cannot be trust anchors, and files of the store that cannot be read, are
/// left out (fewer roots trust less, never more); no usable root at all is an error, as no
/// server could then be trusted.
fn system_roots() -> Result<Vec<u8>, &'static str> {
    let found = rustls_native_certs::load_native_certs();
    let usable: Vec<_> =
        found.certs.into_iter().filter(|c| rustls::RootCertStore::empty().add(c.clone()).is_ok()).collect();
    if usable.is_empty() {
        return Err("is required here: no trusted root could be read from the operating system");
    }
    Ok(pem_bundle(&usable))
}

/// DER certificates as a PEM bundle (RFC 7468), the form the redis client takes roots in.
fn pem_bundle(certs: &[CertificateDer<'_>]) -> Vec<u8> {
    let mut out = String::new();
    for cert in certs {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let text = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        for (i, c) in text.chars().enumerate() {
            if i > 0 && i % 64 == 0 {
                out.push('\n');
            }
            out.push(c);
        }
        out.push_str("\n-----END CERTIFICATE-----\n");
    }
    out.into_bytes()
}

/// The client certificate and key as PEM, once the key parses and matches the certificate.
fn client_identity(
    cert: &Path,
    key: &Path,
    prefix: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<ClientTlsConfig> {
    let issue = |field: &str, m: &str| ConfigIssue::new(format!("{prefix}.{field}"), m);
    let cert_pem = read(cert, prefix, "client_cert_path", issues);
    let key_pem = read(key, prefix, "client_key_path", issues);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_bundle_reads_back_as_the_same_certificates() {
        let key = rcgen::KeyPair::generate().unwrap();
        let der = |name: &str| {
            let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
            params.self_signed(&key).unwrap().der().clone()
        };
        let certs = vec![der("a.test"), der("b.test")];
        let pem = pem_bundle(&certs);
        assert_eq!(certificates(&pem).unwrap(), certs);
        let text = String::from_utf8(pem).unwrap();
        assert!(text.lines().all(|l| l.len() <= 64), "RFC 7468 lines");
    }
}
