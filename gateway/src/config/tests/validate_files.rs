//! File checks: present, regular, readable, parsable, keys matching their certificates; contents
//! never printed. Certificates are generated with rcgen for each test.

use super::{Fixture, VALID};

/// A fresh self-signed certificate and its key, as PEM.
fn cert_and_key() -> (String, String) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("rcgen");
    (generated.cert.pem(), generated.signing_key.serialize_pem())
}

/// PEM framing around bytes that are not a certificate: parses as PEM, fails as X.509.
const NOT_X509: &str = "-----BEGIN CERTIFICATE-----\nc2VjcmV0LWJ5dGVz\n-----END CERTIFICATE-----\n";
/// A key file whose body is not base64: the PEM parser's own error would quote this line.
const SECRET_LINE: &str = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==!!\n";

/// The five files VALID names, all good: (file name, contents).
fn all_good() -> Vec<(&'static str, String)> {
    let (gateway_crt, gateway_key) = cert_and_key();
    let (client_crt, client_key) = cert_and_key();
    let (ca, _) = cert_and_key();
    vec![
        ("gateway.crt", gateway_crt),
        ("gateway.key", gateway_key),
        ("internal-ca.crt", ca),
        ("gateway-client.crt", client_crt),
        ("gateway-client.key", client_key),
    ]
}

fn fixture_with_pki(files: &[(&str, String)]) -> Fixture {
    let fixture = Fixture::new(VALID);
    std::fs::create_dir(fixture.dir().join("pki")).expect("mkdir");
    for (name, contents) in files {
        std::fs::write(fixture.dir().join("pki").join(name), contents).expect("write pem");
    }
    fixture
}

/// `all_good()` with `file` replaced by `contents` (or removed when `None`).
fn with(file: &str, contents: Option<String>) -> Fixture {
    let mut files = all_good();
    files.retain(|(name, _)| *name != file);
    if let Some(contents) = contents {
        files.push((file, contents));
    }
    fixture_with_pki(&files)
}

#[test]
fn present_matching_pem_files_pass() {
    fixture_with_pki(&all_good()).check(true).expect("files present");
}

#[test]
fn file_problems_name_the_key_and_line() {
    let (other_cert, other_key) = cert_and_key();
    let cases: [(&str, Option<String>, &str, usize, &str); 8] = [
        ("gateway.crt", None, "listeners[0].tls.cert_path", 5, "file not found"),
        ("gateway.key", Some(other_cert), "listeners[0].tls.key_path", 6, "no PEM private key"),
        (
            "gateway.key",
            Some(other_key.clone()),
            "listeners[0].tls.key_path",
            6,
            "does not match the certificate in `cert_path`",
        ),
        (
            "gateway.crt",
            Some(NOT_X509.to_owned()),
            "listeners[0].tls.cert_path",
            5,
            "not a valid X.509 certificate",
        ),
        ("internal-ca.crt", Some(other_key), "upstreams[0].tls.ca_path", 12, "no PEM certificate found"),
        (
            "internal-ca.crt",
            Some(NOT_X509.to_owned()),
            "upstreams[0].tls.ca_path",
            12,
            "not a valid X.509 certificate",
        ),
        (
            "gateway-client.crt",
            Some(String::new()),
            "upstreams[0].tls.client_cert_path",
            13,
            "no PEM certificate",
        ),
        (
            "gateway-client.key",
            Some(SECRET_LINE.to_owned()),
            "upstreams[0].tls.client_key_path",
            14,
            "malformed PEM",
        ),
    ];
    for (file, contents, key_path, line, message) in cases {
        let errors = with(file, contents).check(true).expect_err(file);
        assert_eq!(errors.0.len(), 1, "{file}: {errors}");
        let error = &errors.0[0];
        assert_eq!((error.key_path.as_str(), error.line), (key_path, Some(line)), "{error}");
        assert!(error.message.contains(message), "{error}");
        assert!(!errors.to_string().contains("c2VjcmV0"), "file contents echoed: {errors}");
    }
}

#[test]
fn a_directory_is_not_a_certificate() {
    let fixture = with("gateway.crt", None);
    std::fs::create_dir(fixture.dir().join("pki/gateway.crt")).expect("mkdir");
    let errors = fixture.check(true).expect_err("directory");
    assert_eq!(errors.0[0].message, "not a regular file", "{errors}");
}

#[test]
fn every_missing_file_is_reported() {
    let errors = Fixture::new(VALID).check(true).expect_err("no files");
    assert_eq!(errors.0.len(), 5, "{errors}");
}
