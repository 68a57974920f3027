//! Identity assertions end to end: the upstream receives a JWS the gateway signed for the
//! verified caller, which verifies against the JWKS served on the admin port; a value the client
//! sends in the assertion header never reaches the upstream.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod common;

use common::{admin_get, parse_raw, Env, FullEnv};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use phigate::demo::upstream::SeenRequest;

/// Not an `x-phigate-` name: the gateway's header hygiene would strip those anyway, so the
/// assertion stage's own removal is what keeps a forged value from the upstream here.
const HEADER: &str = "x-upstream-assertion";

/// The full pipeline with an `assertion:` section whose route `fhir` has assertions `enabled`,
/// sent in [`HEADER`].
async fn start(enabled: bool) -> FullEnv {
    start_with_header(enabled, &format!("\n  header: {HEADER}")).await
}

/// As [`start`], with `header_line` appended to the section's `issuer` line.
async fn start_with_header(enabled: bool, header_line: &str) -> FullEnv {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap().serialize_pem();
    let extra = format!(
        "assertion:\n  key_path: assertion.key\n  issuer: https://phigate.test{header_line}\n  \
         routes:\n    fhir: {{ enabled: {enabled} }}\n"
    );
    FullEnv::start_with(|p| std::fs::write(p.parent().unwrap().join("assertion.key"), key).unwrap(), &extra)
        .await
}

/// Reads a patient as `clinician_a` with a forged assertion header; the request the upstream saw.
async fn forged_read(env: &FullEnv, forged: &str) -> SeenRequest {
    forged_read_in(env, HEADER, forged).await
}

/// As [`forged_read`], forging `header`.
async fn forged_read_in(env: &FullEnv, header: &str, forged: &str) -> SeenRequest {
    let res = env
        .pki
        .public_client()
        .get(&env.gw.url("/fhir/Patient/a-p1"))
        .bearer(&env.token("clinician_a"))
        .header(header, forged)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    env.upstream.recorder.next().await
}

/// The JWKS from the admin port, checking status and content type.
async fn fetch_jwks(env: &FullEnv) -> JwkSet {
    let raw = admin_get(env.gw.admin, "/.well-known/phigate/jwks.json").await;
    let (status, head, body) = parse_raw(raw.as_bytes());
    assert_eq!(status, 200, "{raw}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/jwk-set+json"), "{head}");
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_receives_an_assertion_that_verifies_against_the_admin_jwks_never_the_clients() {
    let env = start(true).await;
    let seen = forged_read(&env, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.").await;
    let values: Vec<_> =
        seen.headers.get_all(HEADER).iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    assert_eq!(values.len(), 1, "exactly the gateway's assertion: {values:?}");
    assert!(!values[0].contains("eyJhbGciOiJub25lIn0"), "the forged value never reaches the upstream");

    let jwks = fetch_jwks(&env).await;
    let header = jsonwebtoken::decode_header(&values[0]).unwrap();
    let key = DecodingKey::from_jwk(jwks.find(header.kid.as_deref().unwrap()).unwrap()).unwrap();
    let mut validation = Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["fhir"]); // the route's upstream name
    validation.set_issuer(&["https://phigate.test"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&values[0], &key, &validation).unwrap().claims;
    assert_eq!(claims["idp"], phigate::demo::personas::ISSUER);
    assert_eq!(claims["tenant"], "tenant-a");
    assert_eq!(claims["roles"], serde_json::json!(["clinician"]));
    assert!(claims["sub"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(claims.get("scope").is_none() && !values[0].contains("a-p1"), "no request data in the assertion");
}

/// The default name is an `x-phigate-` one, which the gateway strips from every client request:
/// the stage's own value must still reach the upstream (set after the strip), exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_header_survives_the_gateways_own_x_phigate_strip() {
    let env = start_with_header(true, "").await;
    let seen = forged_read_in(&env, "x-phigate-assertion", "forged").await;
    let values: Vec<_> = seen.headers.get_all("x-phigate-assertion").iter().collect();
    assert_eq!(values.len(), 1, "exactly the gateway's assertion: {values:?}");
    let header = jsonwebtoken::decode_header(values[0].to_str().unwrap()).unwrap();
    assert!(fetch_jwks(&env).await.find(header.kid.as_deref().unwrap()).is_some(), "signed by a JWKS key");
}

/// The `kid` of the assertion the upstream received, checked to verify against `jwks`.
fn verified_kid(seen: &SeenRequest, jwks: &JwkSet) -> String {
    let value = seen.headers.get(HEADER).unwrap().to_str().unwrap();
    let kid = jsonwebtoken::decode_header(value).unwrap().kid.unwrap();
    let key = DecodingKey::from_jwk(jwks.find(&kid).expect("the assertion's key is in the JWKS")).unwrap();
    let mut validation = Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["fhir"]);
    validation.set_issuer(&["https://phigate.test"]);
    jsonwebtoken::decode::<serde_json::Value>(value, &key, &validation).unwrap();
    kid
}

/// The real SIGHUP path (the gateway's reloader, which runs every stage's `reload`): the stage
/// re-reads its key on its own thread, the JWKS gains the new key and keeps the old one (so
/// assertions signed just before still verify), and the next request is signed with the new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_the_signing_key_and_the_jwks_keeps_the_old_one() {
    let env = start(true).await;
    let before = verified_kid(&forged_read(&env, "x").await, &fetch_jwks(&env).await);

    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap().serialize_pem();
    std::fs::write(env.pki.dir().join("assertion.key"), key).unwrap();
    env.gw.reloader.reload_all();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let jwks = loop {
        let jwks = fetch_jwks(&env).await;
        if jwks.keys.len() == 2 {
            break jwks;
        }
        assert!(std::time::Instant::now() < deadline, "the JWKS did not gain the new key in 20 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(jwks.find(&before).is_some(), "the replaced key stays in the JWKS");
    let after = verified_kid(&forged_read(&env, "x").await, &jwks);
    assert_ne!(after, before, "signed with the new key (the cache went with the old one)");
    assert!(admin_get(env.gw.admin, "/readyz").await.contains(&format!("signing key {after}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_header_is_removed_on_a_route_with_assertions_off() {
    let env = start(false).await;
    let seen = forged_read(&env, "forged").await;
    assert!(seen.headers.get(HEADER).is_none(), "nothing reaches the upstream in the assertion header");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_is_404_without_the_assertion_stage() {
    let env = Env::start().await;
    let raw = admin_get(env.gw.admin, "/.well-known/phigate/jwks.json").await;
    assert!(raw.starts_with("HTTP/1.1 404"), "{raw}");
}

#[test]
fn bad_assertion_key_is_a_config_error_at_its_file_line_and_key() {
    let pki = phigate_test_support::TestPki::new();
    std::fs::write(pki.dir().join("assertion.key"), "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n")
        .unwrap();
    let yaml = format!(
        "{}assertion:\n  issuer: https://phigate.test\n  key_path: assertion.key\n",
        common::yaml(&pki, "127.0.0.1:9".parse().unwrap(), "none")
    );
    let line = yaml.lines().position(|l| l.trim_start().starts_with("key_path: assertion.key")).unwrap() + 1;
    let file = pki.dir().join("phigate.yaml");
    let loaded = phigate::config::load_from_str(&yaml, &file).unwrap();
    let routes = phigate::runtime::route_metas(&loaded.config);
    let Err(errors) = phigate::stages::build_stages(&loaded, &routes) else {
        panic!("a bad key must not build")
    };
    let [e] = errors.errors() else { panic!("one error: {errors:?}") };
    assert_eq!((e.key_path.as_str(), e.line), ("assertion.key_path", Some(line)), "{e}");
    assert!(!e.message.contains("MCowBQYDK2VwAyEA"), "the file's content is never echoed: {e}");
}
