//! Every YAML file in the top-level `config/` loads and validates; key fields are as documented.

use std::path::{Path, PathBuf};

use crate::config::{load, validate, ClientCertMode, LoadedConfig, ValidateOptions};

fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config")
}

/// The PEM files are not in the repository, so files are not checked here.
fn load_valid(path: &Path) -> LoadedConfig {
    let loaded = load(path).unwrap_or_else(|e| panic!("{e}"));
    validate(&loaded, ValidateOptions { check_files: false }).unwrap_or_else(|e| panic!("{e}"));
    loaded
}

#[test]
fn every_example_config_loads_and_validates() {
    let mut count = 0;
    for entry in std::fs::read_dir(config_dir()).expect("config/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            load_valid(&path);
            count += 1;
        }
    }
    assert!(count >= 2, "expected demo.yaml and production.example.yaml");
}

#[test]
fn production_example_has_the_documented_shape() {
    let config = load_valid(&config_dir().join("production.example.yaml")).config;
    let listener = &config.listeners[0];
    assert_eq!(listener.address, "0.0.0.0:8443");
    assert_eq!(listener.tls.client_cert, ClientCertMode::Optional);
    assert_eq!(listener.tls.cert_path, Path::new("/etc/phigate/tls/gateway.crt"));
    let names: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["fhir", "terminology"]);
    assert!(config.upstreams.iter().all(|u| u.tls.is_some() && !u.insecure_plaintext));
    let endpoints: Vec<&str> = config.upstreams[0].endpoint_list().into_iter().map(|(_, e)| e).collect();
    assert_eq!(endpoints, ["10.30.1.21:8443", "10.30.2.21:8443"]);
    let check = config.upstreams[0].health_check.as_ref().expect("health check");
    assert_eq!(check.path.as_deref(), Some("/baseR4/metadata"));
    assert_eq!(config.upstreams[1].address.as_deref(), Some("10.30.4.12:9443"));
    let fhir = &config.routes[0];
    assert!(fhir.fhir);
    assert_eq!((fhir.path_prefix.as_str(), fhir.upstream.as_str()), ("/fhir/r4", "fhir"));
    let cors = fhir.cors.as_ref().expect("the portal app's CORS policy");
    assert_eq!(cors.allowed_origins, ["https://portal.example.org"]);
    assert!(!cors.allow_credentials);
    assert!(config.routes[1].cors.is_none(), "terminology is not called from browsers");
    assert_eq!(config.trusted_proxies, ["10.20.0.0/24", "10.20.1.0/24"]);
    assert_eq!(config.admin.address, "127.0.0.1:9901");
}

#[test]
fn demo_config_points_into_the_demo_pki() {
    let loaded = load_valid(&config_dir().join("demo.yaml"));
    let pki = loaded.dir.join("pki");
    let config = &loaded.config;
    let tls = &config.listeners[0].tls;
    assert_eq!(tls.cert_path, pki.join("gateway.crt"));
    assert_eq!(tls.key_path, pki.join("gateway.key"));
    assert_eq!(tls.client_ca_path.as_deref(), Some(pki.join("ca.crt").as_path()));
    let upstream = config.upstreams[0].tls.as_ref().expect("mTLS upstream");
    assert_eq!(upstream.ca_path, pki.join("internal-ca.crt"));
    assert_eq!(upstream.client_cert_path, pki.join("gateway-client.crt"));
    assert_eq!(upstream.client_key_path, pki.join("gateway-client.key"));
    assert!(config.listeners[0].address.starts_with("127.0.0.1:"));
    assert_eq!(config.upstreams[0].sni.as_deref(), Some("fhir-upstream.internal"));
    assert!(config.routes[0].fhir);
}
