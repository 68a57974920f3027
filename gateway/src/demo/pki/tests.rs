use std::fs;
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::ring::default_provider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{ServerName, UnixTime};

use super::*;

fn server_ok(ca: &CertAuthority, leaf: &IssuedCert, name: &str) -> Result<(), rustls::Error> {
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(ca.root_store()), Arc::new(default_provider()))
            .build()
            .expect("verifier");
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    verifier.verify_server_cert(leaf.cert_der(), &[], &name, &[], UnixTime::now()).map(|_| ())
}

fn client_ok(ca: &CertAuthority, leaf: &IssuedCert) -> Result<(), rustls::Error> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(ca.root_store()), Arc::new(default_provider()))
            .build()
            .expect("verifier");
    verifier.verify_client_cert(leaf.cert_der(), &[], UnixTime::now()).map(|_| ())
}

#[test]
fn gateway_cert_verifies_against_public_ca_for_every_loopback_name() {
    let pki = DevPki::generate().expect("pki");
    for name in GATEWAY_SANS {
        server_ok(&pki.ca, &pki.gateway, name).expect(name);
    }
}

#[test]
fn gateway_cert_is_rejected_by_internal_ca() {
    let pki = DevPki::generate().expect("pki");
    assert!(server_ok(&pki.internal_ca, &pki.gateway, "localhost").is_err());
}

#[test]
fn upstream_cert_verifies_against_internal_ca_only() {
    let pki = DevPki::generate().expect("pki");
    for name in UPSTREAM_SANS {
        server_ok(&pki.internal_ca, &pki.upstream, name).expect(name);
    }
    assert!(server_ok(&pki.ca, &pki.upstream, UPSTREAM_SERVER_NAME).is_err());
}

#[test]
fn server_cert_is_rejected_for_a_name_it_does_not_carry() {
    let pki = DevPki::generate().expect("pki");
    assert!(server_ok(&pki.ca, &pki.gateway, "fhir-upstream.internal").is_err());
    assert!(server_ok(&pki.internal_ca, &pki.upstream, "::1").is_err());
}

#[test]
fn end_user_client_cert_verifies_against_public_ca_not_internal() {
    let pki = DevPki::generate().expect("pki");
    client_ok(&pki.ca, &pki.client).expect("public CA accepts client.crt");
    // The internal network must not trust end-user certificates.
    assert!(client_ok(&pki.internal_ca, &pki.client).is_err());
}

#[test]
fn gateway_client_cert_verifies_against_internal_ca_not_public() {
    let pki = DevPki::generate().expect("pki");
    client_ok(&pki.internal_ca, &pki.gateway_client).expect("internal CA accepts");
    assert!(client_ok(&pki.ca, &pki.gateway_client).is_err());
}

#[test]
fn rogue_ca_certs_are_rejected_by_both_dev_cas() {
    let pki = DevPki::generate().expect("pki");
    let rogue = CertAuthority::new("rogue").expect("rogue CA");
    let client = rogue.issue_client("mallory").expect("client");
    let server = rogue.issue_server(&["localhost"]).expect("server");
    for ca in [&pki.ca, &pki.internal_ca] {
        assert!(client_ok(ca, &client).is_err());
        assert!(server_ok(ca, &server, "localhost").is_err());
    }
    client_ok(&rogue, &client).expect("rogue trusts its own");
}

#[test]
fn server_cert_is_not_accepted_as_client_cert_and_vice_versa() {
    let pki = DevPki::generate().expect("pki");
    // EKU separation: a stolen server key must not authenticate as a client.
    assert!(client_ok(&pki.internal_ca, &pki.upstream).is_err());
    assert!(server_ok(&pki.internal_ca, &pki.gateway_client, "localhost").is_err());
}

#[test]
fn extra_certs_from_the_builder_verify() {
    let pki = DevPki::generate().expect("pki");
    let extra = pki.issue_server(WhichCa::Internal, &["other.internal", "10.0.0.7"]).expect("extra");
    server_ok(&pki.internal_ca, &extra, "other.internal").expect("dns");
    server_ok(&pki.internal_ca, &extra, "10.0.0.7").expect("ip");
    let c = pki.issue_client(WhichCa::Public, "alice").expect("client");
    client_ok(&pki.ca, &c).expect("client");
}

#[test]
fn invalid_san_is_an_error() {
    let ca = CertAuthority::new("t").expect("ca");
    assert!(matches!(ca.issue_server(&["bad name with spaces"]), Err(PkiError::InvalidName(_))));
}

#[test]
fn thumbprint_is_base64url_sha256_of_der() {
    let pki = DevPki::generate().expect("pki");
    let t = pki.client.thumbprint();
    assert_eq!(t.len(), 43);
    assert!(t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    assert_ne!(t, pki.gateway_client.thumbprint());
}

#[test]
fn write_to_writes_parseable_pem_with_private_keys_0600() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("pki");
    let pki = DevPki::generate().expect("pki");
    let paths = pki.write_to(&dir).expect("write");
    let cert = CertificateDer::from_pem_file(&paths.gateway_client_cert).expect("cert pem");
    assert_eq!(&cert, pki.gateway_client.cert_der());
    let key = PrivateKeyDer::from_pem_file(&paths.gateway_client_key).expect("key pem");
    assert!(matches!(key, PrivateKeyDer::Pkcs8(_)));
    let ca = CertificateDer::from_pem_file(&paths.internal_ca_cert).expect("ca pem");
    assert_eq!(&ca, pki.internal_ca.cert_der());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in [&paths.gateway_key, &paths.client_key, &paths.upstream_key, &paths.gateway_client_key] {
            let mode = fs::metadata(key).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
    }
}

#[cfg(unix)]
#[test]
fn write_to_narrows_an_existing_world_readable_key_file() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let key = dir.join("client.key");
    fs::write(&key, "old").expect("old");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
    DevPki::generate().expect("pki").write_to(dir).expect("write");
    let mode = fs::metadata(&key).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
