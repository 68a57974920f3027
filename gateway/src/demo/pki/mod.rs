//! The dev PKI: two certificate authorities and the leaf certificates `phigate demo` and the tests
//! need, generated fresh with rcgen (ECDSA P-256, ring backend).
//!
//! Two CAs, because trust must not leak across the boundary: the *public* dev CA signs what faces
//! end users (the gateway's server certificate, the end-user client certificate used for RFC 8705
//! certificate-bound tokens), and the *internal* CA signs what lives on the internal network (the
//! upstream's server certificate, the gateway's client certificate towards upstreams). An upstream
//! that trusts only the internal CA therefore refuses an end user who connects to it directly with
//! their own client certificate.
//!
//! Nothing here is for production: keys are generated in memory on every run, and only the leaf
//! keys are written out (mode 0600); CA keys never touch the disk.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

mod files;

pub use files::DevPkiPaths;

/// How long CA certificates are valid from generation.
const CA_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long leaf certificates are valid from generation.
const LEAF_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// Backdating of `notBefore`, so a peer whose clock lags a little still accepts a fresh cert.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);
/// The SANs of the gateway's public server certificate.
pub const GATEWAY_SANS: &[&str] = &["localhost", "127.0.0.1", "::1"];
/// The SANs of the sample upstream's server certificate.
pub const UPSTREAM_SANS: &[&str] = &["fhir-upstream.internal", "localhost", "127.0.0.1"];
/// The DNS name the gateway uses as SNI towards the sample upstream.
pub const UPSTREAM_SERVER_NAME: &str = "fhir-upstream.internal";

/// Why the dev PKI could not be generated or written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused the parameters or failed to sign (for example an invalid SAN).
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A SAN is neither an IP address nor a valid DNS name.
    #[error("invalid subject alternative name {0:?}")]
    InvalidName(String),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// The RFC 8705 `x5t#S256` thumbprint of a DER certificate: SHA-256, base64url without padding.
pub fn cert_thumbprint(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

/// Which of the dev PKI's two CAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhichCa {
    /// The public dev CA (`ca.crt`): gateway server cert, end-user client certs.
    Public,
    /// The internal CA (`internal-ca.crt`): upstream server certs, the gateway's client cert.
    Internal,
}

/// A leaf certificate and its private key.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    key_pkcs8: Arc<[u8]>,
    key_pem: String,
}

impl IssuedCert {
    /// The certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key (PKCS#8), DER, as rustls takes it.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.to_vec()))
    }

    /// The private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The RFC 8705 `x5t#S256` thumbprint of the certificate (what a bound token's `cnf` holds).
    pub fn thumbprint(&self) -> String {
        cert_thumbprint(&self.cert_der)
    }
}

/// A certificate authority that can issue server and client certificates.
pub struct CertAuthority {
    name: String,
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
}

impl std::fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The issuer holds the CA's private key: keep it out of debug output.
        f.debug_struct("CertAuthority").field("name", &self.name).finish_non_exhaustive()
    }
}

impl CertAuthority {
    /// A new self-signed CA named `name` (common name `phigate <name> CA`). Also the way tests make
    /// an untrusted "rogue" CA for negative cases.
    ///
    /// # Errors
    /// When rcgen cannot generate the key or sign.
    pub fn new(name: &str) -> Result<Self, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&format!("phigate {name} CA"));
        // Path length 0: the dev CAs sign leaves only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params, CA_VALIDITY);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(CertAuthority {
            name: name.to_owned(),
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The name given at creation.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A root store trusting only this CA.
    pub fn root_store(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        // A certificate we just generated always parses; `add` failing would be an rcgen bug, and
        // an empty store fails closed (nothing verifies) rather than open.
        let _ = roots.add(self.cert_der.clone());
        roots
    }

    /// Issues a server certificate (serverAuth EKU) for these names. Each SAN that parses as an IP
    /// address becomes an IP SAN, any other a DNS SAN; the first is also the common name.
    ///
    /// # Errors
    /// When a name is not a valid DNS name or IP address, or signing fails.
    pub fn issue_server(&self, sans: &[&str]) -> Result<IssuedCert, PkiError> {
        let mut params = leaf_params(sans.first().copied().unwrap_or("server"));
        params.subject_alt_names = sans.iter().map(|s| san(s)).collect::<Result<Vec<_>, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// Issues a client certificate (clientAuth EKU) with this common name.
    ///
    /// # Errors
    /// When signing fails.
    pub fn issue_client(&self, common_name: &str) -> Result<IssuedCert, PkiError> {
        let mut params = leaf_params(common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Result<IssuedCert, PkiError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pkcs8: Arc::from(key.serialize_der()),
            key_pem: key.serialize_pem(),
        })
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "phigate dev");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn leaf_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(common_name);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, LEAF_VALIDITY);
    params
}

fn san(name: &str) -> Result<SanType, PkiError> {
    Ok(match name.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => {
            // rcgen accepts any IA5 string; check DNS syntax here so a typo fails at generation
            // rather than as a name mismatch at handshake time.
            rustls_pki_types::DnsName::try_from(name).map_err(|_| PkiError::InvalidName(name.to_owned()))?;
            SanType::DnsName(name.to_owned().try_into()?)
        }
    })
}

fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let at = |secs: u64| {
        OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    };
    params.not_before = at(now.saturating_sub(CLOCK_SKEW.as_secs()));
    params.not_after = at(now.saturating_add(validity.as_secs()));
}

/// The complete dev PKI of `phigate demo`: both CAs and the four leaf certificates.
#[derive(Debug)]
pub struct DevPki {
    /// The public dev CA (`ca.crt`).
    pub ca: CertAuthority,
    /// The internal CA (`internal-ca.crt`).
    pub internal_ca: CertAuthority,
    /// The gateway's server certificate (public CA; SANs [`GATEWAY_SANS`]).
    pub gateway: IssuedCert,
    /// The end-user client certificate (public CA; clientAuth), for certificate-bound tokens.
    pub client: IssuedCert,
    /// The sample upstream's server certificate (internal CA; SANs [`UPSTREAM_SANS`]).
    pub upstream: IssuedCert,
    /// The gateway's client certificate towards upstreams (internal CA; clientAuth).
    pub gateway_client: IssuedCert,
}

impl DevPki {
    /// Generates both CAs and the four leaf certificates.
    ///
    /// # Errors
    /// When rcgen fails to generate or sign.
    pub fn generate() -> Result<Self, PkiError> {
        let ca = CertAuthority::new("dev")?;
        let internal_ca = CertAuthority::new("internal")?;
        Ok(DevPki {
            gateway: ca.issue_server(GATEWAY_SANS)?,
            client: ca.issue_client("demo end user")?,
            upstream: internal_ca.issue_server(UPSTREAM_SANS)?,
            gateway_client: internal_ca.issue_client("phigate gateway")?,
            ca,
            internal_ca,
        })
    }

    /// One of the two CAs.
    pub fn ca(&self, which: WhichCa) -> &CertAuthority {
        match which {
            WhichCa::Public => &self.ca,
            WhichCa::Internal => &self.internal_ca,
        }
    }

    /// Issues an extra server certificate from one of the CAs (see [`CertAuthority::issue_server`]).
    ///
    /// # Errors
    /// When a name is invalid or signing fails.
    pub fn issue_server(&self, which: WhichCa, sans: &[&str]) -> Result<IssuedCert, PkiError> {
        self.ca(which).issue_server(sans)
    }

    /// Issues an extra client certificate from one of the CAs (see [`CertAuthority::issue_client`]).
    ///
    /// # Errors
    /// When signing fails.
    pub fn issue_client(&self, which: WhichCa, common_name: &str) -> Result<IssuedCert, PkiError> {
        self.ca(which).issue_client(common_name)
    }
}

#[cfg(test)]
mod tests;
