//! File checks: present, regular, readable, PEM of the expected kind; contents never printed.

use super::{Fixture, VALID};

// The validator checks PEM framing and labels only (the TLS layer parses the DER at start), so
// framed placeholder bodies are enough here.
const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----\n";
const SECRET_LINE: &str = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==!!\n";

fn fixture_with_pki(files: &[(&str, &str)]) -> Fixture {
    let fixture = Fixture::new(VALID);
    std::fs::create_dir(fixture.dir().join("pki")).expect("mkdir");
    for (name, contents) in files {
        std::fs::write(fixture.dir().join("pki").join(name), contents).expect("write pem");
    }
    fixture
}

fn all_good() -> Vec<(&'static str, &'static str)> {
    vec![
        ("gateway.crt", CERT),
        ("gateway.key", KEY),
        ("internal-ca.crt", CERT),
        ("gateway-client.crt", CERT),
        ("gateway-client.key", KEY),
    ]
}

#[test]
fn present_pem_files_pass() {
    fixture_with_pki(&all_good())
        .check(true)
        .expect("files present");
}

#[test]
fn file_problems_name_the_key_and_line() {
    let cases: [(&str, Option<&str>, &str, usize, &str); 5] = [
        (
            "gateway.crt",
            None,
            "listeners[0].tls.cert_path",
            5,
            "file not found",
        ),
        (
            "gateway.key",
            Some(CERT),
            "listeners[0].tls.key_path",
            6,
            "no PEM private key found",
        ),
        (
            "internal-ca.crt",
            Some(KEY),
            "upstreams[0].tls.ca_path",
            12,
            "no PEM certificate found",
        ),
        (
            "gateway-client.crt",
            Some(""),
            "upstreams[0].tls.client_cert_path",
            13,
            "no PEM certificate",
        ),
        (
            "gateway-client.key",
            Some(SECRET_LINE),
            "upstreams[0].tls.client_key_path",
            14,
            "malformed PEM",
        ),
    ];
    for (file, contents, key_path, line, message) in cases {
        let mut files = all_good();
        files.retain(|(name, _)| *name != file);
        if let Some(contents) = contents {
            files.push((file, contents));
        }
        let errors = fixture_with_pki(&files).check(true).expect_err(file);
        assert_eq!(errors.0.len(), 1, "{file}: {errors}");
        let error = &errors.0[0];
        assert_eq!(
            (error.key_path.as_str(), error.line),
            (key_path, Some(line)),
            "{error}"
        );
        assert!(error.message.contains(message), "{error}");
        assert!(
            !errors.to_string().contains("c2VjcmV0"),
            "file contents echoed: {errors}"
        );
    }
}

#[test]
fn a_directory_is_not_a_certificate() {
    let mut files = all_good();
    files.retain(|(name, _)| *name != "gateway.crt");
    let fixture = fixture_with_pki(&files);
    std::fs::create_dir(fixture.dir().join("pki/gateway.crt")).expect("mkdir");
    let errors = fixture.check(true).expect_err("directory");
    assert_eq!(errors.0[0].message, "not a regular file", "{errors}");
}

#[test]
fn every_missing_file_is_reported() {
    let errors = Fixture::new(VALID).check(true).expect_err("no files");
    assert_eq!(errors.0.len(), 5, "{errors}");
}
