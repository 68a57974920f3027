//! Building the identity stage makes ring jsonwebtoken's process crypto provider. Nothing in this
//! test binary uses jsonwebtoken before the build (which would settle its default first).
#![allow(clippy::unwrap_used)]

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER as RUST_CRYPTO;
use jsonwebtoken::{Algorithm, DecodingKey};
use phigate_identity::dev::DevIssuer;
use support::*;

#[test]
fn building_the_stage_installs_ring_as_jsonwebtokens_process_provider() {
    let idp = DevIssuer::eddsa("https://ed.test").unwrap();
    let dir = temp_dir("jwt-provider");
    let j = file_issuer(&dir, "ed", &[&idp]);
    let yaml =
        format!("issuers: [{{ issuer: \"https://ed.test\", audiences: [\"{AUD}\"], jwks_path: {j} }}]\n");
    let routes = routes(&["a"]);
    build(&yaml, &routes, &dir);
    build(&yaml, &routes, &dir);

    let token = idp.sign(&idp.claims("alice", AUD, now()));
    let (input, sig) = token.rsplit_once('.').unwrap();
    let x = URL_SAFE_NO_PAD.decode(idp.jwk()["x"].as_str().unwrap()).unwrap();
    let exact = DecodingKey::from_ed_der(&x);
    assert!(jsonwebtoken::crypto::verify(sig, input.as_bytes(), &exact, Algorithm::EdDSA).unwrap());
    // The probe: a 33-byte key starting with the real one. RustCrypto truncates it and accepts;
    // the process default refuses it, so the default is ring.
    let longer = DecodingKey::from_ed_der(&[&x[..], &[0]].concat());
    let raw_sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    let rust = (RUST_CRYPTO.verifier_factory)(&Algorithm::EdDSA, &longer).unwrap();
    assert!(rust.verify(input.as_bytes(), &raw_sig).is_ok());
    assert!(!jsonwebtoken::crypto::verify(sig, input.as_bytes(), &longer, Algorithm::EdDSA).unwrap());
}
