//! Attack tokens: each is refused with the right code, and every algorithm we accept works.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use phigate_identity::dev::{DevClaims, DevIssuer};
use phigate_identity::IdentityStage;
use phigate_plugin::{ErrorCode, RouteMeta};
use serde_json::{json, Value};
use support::*;

struct Fx {
    es: DevIssuer,
    rsa: DevIssuer,
    ps: DevIssuer,
    ed: DevIssuer,
    strict: DevIssuer,
    stage: IdentityStage,
    routes: Vec<Arc<RouteMeta>>,
}

fn fx() -> Fx {
    let es = DevIssuer::es256("https://es.test").unwrap();
    let rsa = rsa_issuer("https://rsa.test", jsonwebtoken::Algorithm::RS256);
    let ps = rsa_issuer("https://rsa.test", jsonwebtoken::Algorithm::PS256);
    let ed = DevIssuer::eddsa("https://ed.test").unwrap();
    let strict = DevIssuer::es256("https://strict.test").unwrap();
    let dir = temp_dir("attacks");
    let (j1, j2, j3, j4) = (
        file_issuer(&dir, "es", &[&es]),
        file_issuer(&dir, "rsa", &[&rsa]),
        file_issuer(&dir, "ed", &[&ed]),
        file_issuer(&dir, "strict", &[&strict]),
    );
    let yaml = format!(
        r#"
issuers:
  - {{ issuer: "https://es.test", audiences: ["{AUD}"], jwks_path: {j1} }}
  - {{ issuer: "https://rsa.test", audiences: ["{AUD}"], jwks_path: {j2} }}
  - {{ issuer: "https://ed.test", audiences: ["{AUD}"], jwks_path: {j3} }}
  - {{ issuer: "https://strict.test", audiences: ["{AUD}"], jwks_path: {j4}, algorithms: [ES256], require_at_jwt_typ: true }}
defaults: {{ require_mfa: false }}
"#
    );
    let routes = routes(&["a"]);
    let stage = build(&yaml, &routes, &dir);
    Fx { es, rsa, ps, ed, strict, stage, routes }
}

fn claims(i: &DevIssuer) -> DevClaims {
    i.claims("alice", AUD, now())
}

fn raw(header: &Value, payload: &Value, sig: &str) -> String {
    format!(
        "{}.{}.{sig}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    )
}

impl Fx {
    async fn deny(&self, token: &str, code: ErrorCode) {
        let mut ctx = bearer(&self.routes[0], token);
        assert_denied(run(&self.stage, &mut ctx).await, code, Some(&invalid_token(code)), token);
    }

    async fn accept(&self, token: &str) {
        let mut ctx = bearer(&self.routes[0], token);
        let r = run(&self.stage, &mut ctx).await;
        assert!(r.is_ok(), "{:?}", r.err());
    }
}

#[tokio::test]
async fn rs256_ps256_es256_and_eddsa_tokens_are_accepted() {
    let f = fx();
    for i in [&f.rsa, &f.ps, &f.es, &f.ed, &f.strict] {
        f.accept(&i.sign(&claims(i))).await;
    }
}

#[tokio::test]
async fn alg_none_in_any_casing_is_refused() {
    let f = fx();
    let payload = Value::Object(claims(&f.es).0);
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = json!({"alg": alg, "kid": f.es.kid()});
        // Unsigned (empty signature): not even a JWS.
        f.deny(&raw(&h, &payload, ""), ErrorCode::TokenMalformed).await;
        // With some signature bytes: the algorithm itself is refused.
        f.deny(&raw(&h, &payload, "c2ln"), ErrorCode::TokenSignatureInvalid).await;
    }
}

#[tokio::test]
async fn hs256_signed_with_the_issuers_public_key_is_refused() {
    let f = fx();
    let payload = Value::Object(claims(&f.rsa).0);
    let h = json!({"alg": "HS256", "kid": f.rsa.kid()});
    let input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(h.to_string()), URL_SAFE_NO_PAD.encode(payload.to_string()));
    // The classic confusion: the attacker HMACs with what the verifier would load as the key.
    for secret in [f.rsa.jwk().to_string(), f.rsa.jwks_json()] {
        let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::HS256).unwrap();
        f.deny(&format!("{input}.{sig}"), ErrorCode::TokenSignatureInvalid).await;
    }
}

#[tokio::test]
async fn unknown_kid_is_refused() {
    let f = fx();
    let h = json!({"alg": "ES256", "kid": "not-a-key"});
    f.deny(&f.es.sign_raw(&h, &Value::Object(claims(&f.es).0)), ErrorCode::TokenSignatureInvalid).await;
}

#[tokio::test]
async fn kid_with_path_or_sql_characters_is_refused() {
    let f = fx();
    for kid in ["../../../../etc/passwd", "' OR '1'='1", "x; DROP TABLE keys; --", "/dev/null", "%2e%2e%2f"] {
        let h = json!({"alg": "ES256", "kid": kid});
        f.deny(&f.es.sign_raw(&h, &Value::Object(claims(&f.es).0)), ErrorCode::TokenSignatureInvalid).await;
    }
}

#[tokio::test]
async fn key_reference_headers_are_never_followed_even_with_a_valid_signature() {
    let f = fx();
    let payload = Value::Object(claims(&f.es).0);
    for (name, value) in [
        ("jku", json!("https://evil.test/jwks")),
        ("x5u", json!("https://evil.test/cert")),
        ("jwk", f.es.jwk().clone()),
        ("x5c", json!(["MIIB"])),
    ] {
        let mut h = json!({"alg": "ES256", "kid": f.es.kid()});
        h[name] = value;
        f.deny(&f.es.sign_raw(&h, &payload), ErrorCode::TokenSignatureInvalid).await;
    }
}

#[tokio::test]
async fn crit_header_is_refused() {
    let f = fx();
    let h = json!({"alg": "ES256", "kid": f.es.kid(), "crit": ["exp"], "exp": 1});
    f.deny(&f.es.sign_raw(&h, &Value::Object(claims(&f.es).0)), ErrorCode::TokenMalformed).await;
}

#[tokio::test]
async fn iss_as_array_is_refused_even_if_it_contains_a_trusted_issuer() {
    let f = fx();
    let t = f.es.sign(&claims(&f.es).set("iss", json!(["https://es.test"])));
    f.deny(&t, ErrorCode::TokenMalformed).await;
    let t = f.es.sign(&claims(&f.es).set("iss", json!({"x": 1})));
    f.deny(&t, ErrorCode::TokenMalformed).await;
}

#[tokio::test]
async fn exp_as_string_missing_exp_and_missing_iat_are_refused() {
    let f = fx();
    let later = (now() + 600).to_string();
    f.deny(&f.es.sign(&claims(&f.es).set("exp", later)), ErrorCode::TokenMalformed).await;
    f.deny(&f.es.sign(&claims(&f.es).remove("exp")), ErrorCode::TokenMalformed).await;
    f.deny(&f.es.sign(&claims(&f.es).remove("iat")), ErrorCode::TokenMalformed).await;
    f.deny(&f.es.sign(&claims(&f.es).set("iat", "yesterday")), ErrorCode::TokenMalformed).await;
}

#[tokio::test]
async fn future_nbf_and_future_iat_are_refused() {
    let f = fx();
    f.deny(&f.es.sign(&claims(&f.es).nbf(now() + 3600)), ErrorCode::TokenNotYetValid).await;
    f.deny(&f.es.sign(&claims(&f.es).iat(now() + 3600)), ErrorCode::TokenNotYetValid).await;
}

#[tokio::test]
async fn duplicate_claims_are_refused() {
    let f = fx();
    let h = json!({"alg": "ES256", "kid": f.es.kid()});
    let body = format!(
        r#"{{"iss":"https://es.test","sub":"alice","sub":"admin","aud":"{AUD}","iat":{},"exp":{}}}"#,
        now(),
        now() + 600
    );
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(h.to_string()), URL_SAFE_NO_PAD.encode(body));
    // Validly signed by the real key: the duplicate itself is what is refused.
    let sig = {
        let pem = f.es.private_key_pem();
        let key = jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
        jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::ES256).unwrap()
    };
    f.deny(&format!("{input}.{sig}"), ErrorCode::TokenMalformed).await;
}

#[tokio::test]
async fn oversized_token_is_refused() {
    let f = fx();
    let t = f.es.sign(&claims(&f.es).set("pad", "x".repeat(9000)));
    f.deny(&t, ErrorCode::TokenMalformed).await;
}

#[tokio::test]
async fn access_token_query_parameter_is_refused_as_invalid_request() {
    let f = fx();
    let t = f.es.sign(&claims(&f.es));
    for mut ctx in [
        with_query(request(&f.routes[0], &[]), "access_token", &t),
        with_query(bearer(&f.routes[0], &t), "access_token", &t),
    ] {
        assert_denied(run(&f.stage, &mut ctx).await, ErrorCode::TokenMalformed, Some(&invalid_request()), &t);
    }
}

#[tokio::test]
async fn two_authorization_headers_are_refused_as_invalid_request() {
    let f = fx();
    let t = f.es.sign(&claims(&f.es));
    let h = format!("Bearer {t}");
    let mut ctx = request(&f.routes[0], &[&h, &h]);
    assert_denied(run(&f.stage, &mut ctx).await, ErrorCode::TokenMalformed, Some(&invalid_request()), &t);
    let mut ctx = request(&f.routes[0], &[&h, "Basic YTpi"]);
    assert_denied(run(&f.stage, &mut ctx).await, ErrorCode::TokenMalformed, Some(&invalid_request()), &t);
}

#[tokio::test]
async fn algorithm_not_configured_for_the_issuer_is_refused() {
    let f = fx();
    // The strict issuer only allows ES256; an EdDSA key cannot be smuggled in under its name.
    let t = f.ed.sign(&claims(&f.ed).set("iss", "https://strict.test"));
    f.deny(&t, ErrorCode::TokenSignatureInvalid).await;
}

#[tokio::test]
async fn header_alg_that_does_not_fit_the_key_is_refused() {
    let f = fx();
    // kid of the EC key with an RSA algorithm: no key fits, so no verification is attempted.
    let h = json!({"alg": "RS256", "kid": f.es.kid()});
    f.deny(&f.rsa.sign_raw(&h, &Value::Object(claims(&f.es).0)), ErrorCode::TokenSignatureInvalid).await;
}

#[tokio::test]
async fn token_signed_by_another_issuers_key_is_refused() {
    let f = fx();
    // Right iss and kid of es.test, but signed by the strict issuer's key.
    let h = json!({"alg": "ES256", "kid": f.es.kid()});
    f.deny(&f.strict.sign_raw(&h, &Value::Object(claims(&f.es).0)), ErrorCode::TokenSignatureInvalid).await;
}

#[tokio::test]
async fn issuer_requiring_at_jwt_refuses_an_id_token_typ() {
    let f = fx();
    let h = json!({"alg": "ES256", "kid": f.strict.kid(), "typ": "JWT"});
    f.deny(&f.strict.sign_raw(&h, &Value::Object(claims(&f.strict).0)), ErrorCode::TokenMalformed).await;
}
