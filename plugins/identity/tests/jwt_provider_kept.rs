//! A jsonwebtoken provider installed before the identity stage is built is kept (and that is
//! logged once), and the stage still checks signatures with ring.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER as RUST_CRYPTO;
use jsonwebtoken::{Algorithm, DecodingKey};
use phigate_identity::dev::DevIssuer;
use phigate_plugin::ErrorCode;
use serde_json::{json, Value};
use support::*;

struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        self.0.lock().unwrap().push(format!("{} {}", r.target(), r.args()));
    }
    fn flush(&self) {}
}

static LOGS: Capture = Capture(Mutex::new(Vec::new()));

#[tokio::test]
async fn a_provider_installed_first_is_kept_and_logged_once_and_the_stage_still_verifies_with_ring() {
    log::set_logger(&LOGS).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    RUST_CRYPTO.install_default().unwrap();

    let idp = DevIssuer::eddsa("https://ed.test").unwrap();
    let x = URL_SAFE_NO_PAD.decode(idp.jwk()["x"].as_str().unwrap()).unwrap();
    let longer = [&x[..], &[0]].concat();
    // The JWKS publishes the key with one byte too many: RustCrypto would truncate and accept.
    let mut jwk = idp.jwk().clone();
    jwk["x"] = Value::String(URL_SAFE_NO_PAD.encode(&longer));
    let dir = temp_dir("jwt-provider-kept");
    std::fs::write(dir.join("long.json"), json!({"keys": [jwk]}).to_string()).unwrap();
    let good = file_issuer(&dir, "good", &[&idp]);
    let yaml = |j: &str| {
        format!(
            "issuers: [{{ issuer: \"https://ed.test\", audiences: [\"{AUD}\"], jwks_path: {j} }}]\n\
             defaults: {{ require_mfa: false }}\n"
        )
    };
    let routes = routes(&["a"]);
    let long_stage = build(&yaml("long.json"), &routes, &dir);
    let good_stage = build(&yaml(&good), &routes, &dir);
    let kept: Vec<String> =
        LOGS.0.lock().unwrap().iter().filter(|l| l.contains("process crypto provider")).cloned().collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].starts_with("phigate::identity "), "{kept:?}");

    let token = idp.sign(&idp.claims("alice", AUD, now()));
    let (input, sig) = token.rsplit_once('.').unwrap();
    // The process default is still RustCrypto: it accepts the 33-byte key.
    let key = DecodingKey::from_ed_der(&longer);
    assert!(jsonwebtoken::crypto::verify(sig, input.as_bytes(), &key, Algorithm::EdDSA).unwrap());
    // The stage does not: its checks are ring's whatever the process default is.
    let code = ErrorCode::TokenSignatureInvalid;
    assert_denied(
        run(&long_stage, &mut bearer(&routes[0], &token)).await,
        code,
        Some(&invalid_token(code)),
        &token,
    );
    assert!(run(&good_stage, &mut bearer(&routes[0], &token)).await.is_ok());
}
