//! Tests of loading, validation, the generated reference and the shipped example configs.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::{load, validate, ConfigErrors, LoadedConfig, ValidateOptions};

mod examples;
mod parse_errors;
mod reference;
mod spans;
mod validate_files;
mod validate_rules;
mod validate_upstreams;

/// A valid config; tests break it with [`replace`]. Line numbers matter to the tests.
const VALID: &str = "\
listeners:
  - name: public
    address: 127.0.0.1:8443
    tls:
      cert_path: pki/gateway.crt
      key_path: pki/gateway.key
upstreams:
  - name: fhir
    address: fhir.internal:8443
    sni: fhir.internal
    tls:
      ca_path: pki/internal-ca.crt
      client_cert_path: pki/gateway-client.crt
      client_key_path: pki/gateway-client.key
routes:
  - name: fhir
    path_prefix: /fhir
    upstream: fhir
    fhir: true
";

/// A value that looks like a secret: it must never appear in any error output.
const SECRET: &str = "sk_live_9f8e7d6c5b4a";

/// `VALID` with `from` replaced by `to`; panics if `from` is absent, so that a case cannot
/// silently test the valid config.
fn replace(from: &str, to: &str) -> String {
    assert!(VALID.contains(from), "`{from}` is not in VALID");
    VALID.replacen(from, to, 1)
}

/// Checks rule cases: `(name, replace this, with this, expected key path, expected line, message
/// fragment)`, each giving exactly one error, at its key and line, with the message.
fn assert_rule_cases<T: AsRef<str>>(cases: Vec<(&str, &str, T, &str, usize, &str)>) {
    for (name, from, to, key_path, line, message) in cases {
        let errors = Fixture::new(&replace(from, to.as_ref())).errors();
        let found = errors.0.iter().find(|e| e.key_path == key_path);
        let Some(error) = found else { panic!("{name}: no error at {key_path}: {errors}") };
        assert_eq!(error.line, Some(line), "{name}: {error}");
        assert!(error.message.contains(message), "{name}: {error}");
        assert_eq!(errors.0.len(), 1, "{name}: expected exactly one error: {errors}");
    }
}

/// A config file in a fresh temporary directory.
struct Fixture {
    dir: TempDir,
    path: PathBuf,
}

impl Fixture {
    fn new(yaml: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("phigate.yaml");
        std::fs::write(&path, yaml).expect("write config");
        Fixture { dir, path }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn load(&self) -> Result<LoadedConfig, ConfigErrors> {
        load(&self.path)
    }

    /// Load and validate, without file checks unless asked.
    fn check(&self, check_files: bool) -> Result<LoadedConfig, ConfigErrors> {
        let loaded = self.load()?;
        validate(&loaded, ValidateOptions { check_files })?;
        Ok(loaded)
    }

    /// The errors of load + validate (without file checks); panics if there are none.
    fn errors(&self) -> ConfigErrors {
        match self.check(false) {
            Ok(_) => panic!("config was accepted"),
            Err(errors) => errors,
        }
    }
}

#[test]
fn valid_config_loads_and_validates() {
    let loaded = Fixture::new(VALID).check(false).expect("valid");
    assert_eq!(loaded.config.routes[0].upstream, "fhir");
}
