//! What an assertion says and to whom: claims, algorithms, audiences per route, the header
//! always stripped from clients, expiry bounded by the token.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod support;

use phigate_assertion::Clock as _;
use phigate_plugin::{ErrorCode, Principal, Stage};
use serde_json::json;
use support::*;

#[tokio::test]
async fn ed25519_assertion_verifies_against_the_jwks_and_carries_the_principal_claims() {
    let dir = tempfile::tempdir().unwrap();
    let (stage, _clock) = stage(dir.path(), Alg::Ed25519, "");
    let p = full_principal();
    let jws = run(&stage, &mut ctx(0, Some(p.clone()), &[])).await.expect("an assertion");
    assert_eq!(jsonwebtoken::decode_header(&jws).unwrap().alg, jsonwebtoken::Algorithm::EdDSA);
    let c = verify(&jws, &stage.jwks_json(), "ehr");
    let iat = c["iat"].as_i64().unwrap();
    assert_eq!(c["exp"].as_i64().unwrap() - iat, 60, "default ttl_secs");
    let expected = json!({
        "iss": ISSUER, "aud": "ehr", "sub": "alice", "iat": iat, "exp": iat + 60,
        "idp": "https://idp.example", "tenant": "acme", "roles": ["clinician", "nurse"],
        "sid": "sess-1", "client_id": "ehr-app", "fhir_user": "Practitioner/7", "patient": "p-42",
        "amr": ["pwd", "otp"], "acr": "urn:mace:incommon:iap:silver", "auth_time": p.auth_time,
        "cnf": { "x5t#S256": "x5t-thumb" },
    });
    assert_eq!(c, expected, "exactly these claims: no scopes, query, headers or body");
}

#[tokio::test]
async fn es256_assertion_verifies_against_the_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let (stage, _clock) = stage(dir.path(), Alg::P256, "");
    let jws = run(&stage, &mut ctx(0, Some(full_principal()), &[])).await.unwrap();
    assert_eq!(jsonwebtoken::decode_header(&jws).unwrap().alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(verify(&jws, &stage.jwks_json(), "ehr")["sub"], "alice");
    assert_eq!(jwks(&stage)["keys"][0]["crv"], "P-256");
}

#[tokio::test]
async fn minimal_principal_gets_only_the_required_claims() {
    let dir = tempfile::tempdir().unwrap();
    let (stage, _clock) = stage(dir.path(), Alg::Ed25519, "");
    let p = Principal {
        expires_at: now() + 3600,
        dpop_jkt: Some("jkt-1".into()),
        ..Principal::new("https://idp.example", "bob")
    };
    let c = verify(&run(&stage, &mut ctx(0, Some(p), &[])).await.unwrap(), &stage.jwks_json(), "ehr");
    let mut keys: Vec<_> = c.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["aud", "cnf", "exp", "iat", "idp", "iss", "sub"]);
    assert_eq!(c["cnf"], json!({ "jkt": "jkt-1" }));
}

#[tokio::test]
async fn audience_is_the_upstream_name_unless_the_route_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let (stage, _clock) =
        stage(dir.path(), Alg::Ed25519, "routes:\n  api: { audience: https://api.internal }\n");
    let aud = |jws: &str| support::claims(jws)["aud"].as_str().unwrap().to_owned();
    let fhir = run(&stage, &mut ctx(0, Some(full_principal()), &[])).await.unwrap();
    let api = run(&stage, &mut ctx(1, Some(full_principal()), &[])).await.unwrap();
    let admin = run(&stage, &mut ctx(2, Some(full_principal()), &[])).await.unwrap();
    assert_eq!(
        (aud(&fhir), aud(&api), aud(&admin)),
        ("ehr".into(), "https://api.internal".into(), "ops".into())
    );
    verify(&api, &stage.jwks_json(), "https://api.internal");
}

#[tokio::test]
async fn route_with_assertions_off_gets_none_and_the_client_header_is_still_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (stage, _clock) = stage(dir.path(), Alg::Ed25519, "routes:\n  admin: { enabled: false }\n");
    let mut c = ctx(2, Some(full_principal()), &[("x-phigate-assertion", "forged")]);
    assert_eq!(run(&stage, &mut c).await, None);
}

#[tokio::test]
async fn client_sent_header_is_removed_without_a_principal() {
    let dir = tempfile::tempdir().unwrap();
    let (stage, _clock) = stage(dir.path(), Alg::Ed25519, "header: x-pomerium-jwt-assertion\n");
    let mut c = ctx(0, None, &[("x-pomerium-jwt-assertion", "eyJhbGciOiJub25lIn0.e30.")]);
    assert_eq!(run(&stage, &mut c).await, None, "no principal: no assertion, and the forged one is gone");
}

#[tokio::test]
async fn client_sent_header_is_replaced_by_the_gateways_with_a_principal() {
    let dir = tempfile::tempdir().unwrap();
    let (stage, _clock) = stage(dir.path(), Alg::Ed25519, "");
    let mut c = ctx(0, Some(full_principal()), &[("x-phigate-assertion", "forged")]);
    let jws = run(&stage, &mut c).await.unwrap();
    assert_ne!(jws, "forged");
    verify(&jws, &stage.jwks_json(), "ehr");
}

#[tokio::test]
async fn expiry_is_bounded_by_the_token_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let (stage, clock) = stage(dir.path(), Alg::Ed25519, "ttl_secs: 300\n");
    let t = clock.unix_now();
    let p = Principal { expires_at: t + 20, ..full_principal() };
    let c = verify(&run(&stage, &mut ctx(0, Some(p), &[])).await.unwrap(), &stage.jwks_json(), "ehr");
    assert_eq!((c["iat"].as_i64(), c["exp"].as_i64()), (Some(t), Some(t + 20)));
}

#[tokio::test]
async fn expired_token_is_refused_with_token_expired() {
    let dir = tempfile::tempdir().unwrap();
    let (stage, clock) = stage(dir.path(), Alg::Ed25519, "");
    // Within the identity stage's clock leeway: verified, but no assertion may outlive it.
    let p = Principal { expires_at: clock.unix_now(), ..full_principal() };
    let mut c = ctx(0, Some(p), &[("x-phigate-assertion", "forged")]);
    let denial = stage.on_request(&mut c).await.unwrap_err();
    assert_eq!(denial.code, ErrorCode::TokenExpired);
    assert!(c.upstream.set_headers.is_empty());
}
