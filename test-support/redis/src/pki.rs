//! A throwaway PKI in a temp dir (removed on drop), made with rcgen for the TLS tests: a CA, a
//! Redis server certificate for 127.0.0.1 (and an expired one), a client certificate, and a
//! second, unrelated CA.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

/// File names inside [`Pki::dir`]: the CA that signed every certificate below.
pub const CA: &str = "ca.pem";
/// A CA that signed nothing here.
pub const OTHER_CA: &str = "other-ca.pem";
/// The server certificate, for `127.0.0.1`.
pub const SERVER_CERT: &str = "server.pem";
/// Its key.
pub const SERVER_KEY: &str = "server-key.pem";
/// A server certificate for `127.0.0.1` that was valid during 2020 only.
pub const EXPIRED_CERT: &str = "expired.pem";
/// Its key.
pub const EXPIRED_KEY: &str = "expired-key.pem";
/// A client certificate (`clientAuth`).
pub const CLIENT_CERT: &str = "client.pem";
/// Its key.
pub const CLIENT_KEY: &str = "client-key.pem";

/// The PKI's files.
pub struct Pki {
    dir: TempDir,
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

impl Pki {
    /// Generates every certificate and writes it as PEM.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).expect("write PEM");
        let (ca_pem, issuer) = ca("phigate test redis CA");
        write(CA, ca_pem);
        write(OTHER_CA, ca("an unrelated CA").0);
        let server = leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth, false, &issuer);
        write(SERVER_CERT, server.0);
        write(SERVER_KEY, server.1);
        let expired = leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth, true, &issuer);
        write(EXPIRED_CERT, expired.0);
        write(EXPIRED_KEY, expired.1);
        let client = leaf("phigate-redis-client", ExtendedKeyUsagePurpose::ClientAuth, false, &issuer);
        write(CLIENT_CERT, client.0);
        write(CLIENT_KEY, client.1);
        Pki { dir }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The path of file `name` (one of the constants above).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("CA key");
    let cert = params.self_signed(&key).expect("CA cert");
    (cert.pem(), Issuer::new(params, key))
}

/// `(certificate, key)` as PEM; `expired` ones were valid during 2020 only.
fn leaf(
    name: &str,
    purpose: ExtendedKeyUsagePurpose,
    expired: bool,
    issuer: &Issuer<'static, KeyPair>,
) -> (String, String) {
    let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages.push(purpose);
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, issuer).expect("leaf cert");
    (cert.pem(), key.serialize_pem())
}
