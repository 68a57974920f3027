//! Token introspection (RFC 7662) against a real HTTPS endpoint on 127.0.0.1: opaque tokens
//! become principals through the issuer's claim mapping, inactive and misfit answers are
//! refused (and remembered), an endpoint that fails or hangs gives 503, concurrent requests
//! share one call, revoked JWTs are noticed within `cache_ttl_secs`, and the three client
//! authentication methods send what RFC 6749/8705 say. Time is a `ManualClock`.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use phigate_identity::{IdentityConfig, IdentityStage, ManualClock};
use phigate_plugin::{ErrorCode, Flow, RouteMeta, StageBuildCtx};
use serde_json::{json, Value};
use support::introspection::{IntrospectionServer, Mode};
use support::*;

const ISS: &str = "https://as.phigate.test";
const OPAQUE: &str = "2YotnFZFEjr1zCsicMWpAA-opaque-access-token";

struct Fx {
    server: IntrospectionServer,
    clock: Arc<ManualClock>,
    stage: IdentityStage,
    routes: Vec<Arc<RouteMeta>>,
}

async fn fx(client_auth_tls: bool, auth: &str) -> Fx {
    fx_in(client_auth_tls, auth, "", "{ require_mfa: true }", &temp_dir("introspect")).await
}

/// `auth`: the introspection section's lines after `endpoint` and `ca_path`; `issuer_extra`:
/// more lines of the issuer (files it names are already in `dir`).
async fn fx_in(
    client_auth_tls: bool,
    auth: &str,
    issuer_extra: &str,
    defaults: &str,
    dir: &std::path::Path,
) -> Fx {
    let server = IntrospectionServer::start(client_auth_tls).await;
    std::fs::write(dir.join("secret.txt"), "s3cr:et&\n").unwrap();
    let (cert, key) = server.pki.client_pem();
    std::fs::write(dir.join("client.pem"), cert).unwrap();
    std::fs::write(dir.join("client.key"), key).unwrap();
    let yaml = format!(
        r#"
issuers:
  - issuer: {ISS}
    audiences: ["{AUD}"]
    claims: {{ tenant: tenant }}
{issuer_extra}
    introspection:
      endpoint: {url}
      ca_path: {ca}
      cache_ttl_secs: 30
      timeout_ms: 300
{auth}
defaults: {defaults}
"#,
        url = server.url,
        ca = server.write_ca(dir)
    );
    let clock = Arc::new(ManualClock::new());
    let routes = routes(&["a"]);
    let stage = build_with(&yaml, &routes, dir, clock.clone());
    Fx { server, clock, stage, routes }
}

const BASIC: &str = "      client_id: phigate gw\n      client_secret_path: secret.txt";

fn active() -> Value {
    json!({
        "active": true, "iss": ISS, "aud": AUD, "sub": "dr-house", "tenant": "acme",
        "scope": "user/Observation.rs launch", "patient": "p-1", "fhirUser": "Practitioner/7",
        "client_id": "ehr-app", "amr": ["pwd", "otp"], "exp": now() + 3600, "iat": now(),
        "token_type": "Bearer"
    })
}

impl Fx {
    async fn run(&self, token: &str) -> Result<Flow, phigate_plugin::Denial> {
        let mut ctx = bearer(&self.routes[0], token);
        run(&self.stage, &mut ctx).await
    }
}

#[tokio::test]
async fn active_opaque_token_becomes_the_principal_through_the_claim_mapping() {
    let f = fx(false, BASIC).await;
    f.server.answer(OPAQUE, active());
    let mut ctx = bearer(&f.routes[0], OPAQUE);
    assert!(matches!(run(&f.stage, &mut ctx).await, Ok(Flow::Continue)));
    let p = ctx.principal.as_ref().unwrap();
    assert_eq!(p.issuer.as_ref(), ISS);
    assert_eq!(p.subject.as_str(), "dr-house");
    assert_eq!(p.tenant.as_ref().unwrap().as_str(), "acme");
    assert_eq!(p.scopes, ["user/Observation.rs", "launch"]);
    assert_eq!(p.patient.as_ref().unwrap().as_str(), "p-1");
    assert_eq!(p.fhir_user.as_deref(), Some("Practitioner/7"));
    assert_eq!(p.client_id.as_deref(), Some("ehr-app"));
    assert_eq!(ctx.tenant.as_ref().unwrap().as_str(), "acme");

    // RFC 7662 §2.1: a form POST with the token and the hint, client_secret_basic credentials
    // form-encoded before base64 (RFC 6749 §2.3.1).
    let seen = f.server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].content_type.as_deref(), Some("application/x-www-form-urlencoded"));
    assert_eq!(seen[0].field("token"), Some(OPAQUE));
    assert_eq!(seen[0].field("token_type_hint"), Some("access_token"));
    assert_eq!(seen[0].field("client_secret"), None);
    let basic = seen[0].authorization.as_deref().unwrap().strip_prefix("Basic ").unwrap();
    let raw = base64::engine::general_purpose::STANDARD.decode(basic).unwrap();
    assert_eq!(raw, b"phigate+gw:s3cr%3Aet%26");

    // The next request is served from the validated-token cache.
    assert!(matches!(f.run(OPAQUE).await, Ok(Flow::Continue)));
    assert_eq!(f.server.calls(), 1);
}

#[tokio::test]
async fn inactive_token_is_401_token_inactive_and_not_asked_again_at_once() {
    let f = fx(false, BASIC).await;
    let res = f.run(OPAQUE).await;
    assert_denied(res, ErrorCode::TokenInactive, Some(&invalid_token(ErrorCode::TokenInactive)), OPAQUE);
    let res = f.run(OPAQUE).await;
    assert_denied(res, ErrorCode::TokenInactive, Some(&invalid_token(ErrorCode::TokenInactive)), OPAQUE);
    assert_eq!(f.server.calls(), 1, "a refused token is remembered for refused_cache_ttl_secs");
    // Remembered exactly refused_cache_ttl_secs (10, the default) on the stage's clock: a token
    // the server re-activates is still refused a second before, accepted at the limit.
    f.clock.advance(Duration::from_secs(9));
    f.server.answer(OPAQUE, active());
    assert!(matches!(f.run(OPAQUE).await, Err(d) if d.code == ErrorCode::TokenInactive));
    assert_eq!(f.server.calls(), 1);
    f.clock.advance(Duration::from_secs(1));
    assert!(matches!(f.run(OPAQUE).await, Ok(Flow::Continue)));
    assert_eq!(f.server.calls(), 2);
}

#[tokio::test]
async fn active_answers_that_do_not_fit_are_refused_like_jwt_payloads() {
    let f = fx(false, BASIC).await;
    let cases: [(&str, Value, ErrorCode); 6] = [
        ("aud", json!("https://other-api"), ErrorCode::TokenAudienceInvalid),
        ("iss", json!("https://evil.test"), ErrorCode::TokenInactive),
        ("token_type", json!("refresh_token"), ErrorCode::TokenInactive),
        ("exp", json!(now() - 120), ErrorCode::TokenExpired),
        ("amr", json!(["pwd"]), ErrorCode::MfaRequired),
        ("cnf", json!({"x5t#S256": "abc"}), ErrorCode::TokenBindingMismatch),
    ];
    for (i, (member, value, code)) in cases.into_iter().enumerate() {
        let token = format!("{OPAQUE}-{i}");
        let mut answer = active();
        answer[member] = value;
        f.server.answer(&token, answer);
        let d = f.run(&token).await.expect_err(member);
        assert_eq!(d.code, code, "{member}: {:?}", d.cause);
    }
    // A refusal after the answer (aud) is remembered too; MFA and binding are per request.
    let d = f.run(&format!("{OPAQUE}-0")).await.unwrap_err();
    assert_eq!(d.code, ErrorCode::TokenAudienceInvalid);
    assert_eq!(f.server.calls(), 6);
}

#[tokio::test]
async fn dpop_bound_opaque_token_needs_its_proof() {
    let f = fx(false, BASIC).await;
    let mut answer = active();
    answer["cnf"] = json!({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"});
    answer["token_type"] = json!("DPoP");
    f.server.answer(OPAQUE, answer);
    let d = f.run(OPAQUE).await.unwrap_err();
    assert_eq!(d.code, ErrorCode::DpopProofInvalid, "{:?}", d.cause);
}

#[tokio::test]
async fn endpoint_failure_is_503_with_retry_after_and_never_remembered() {
    let f = fx(false, BASIC).await;
    f.server.answer(OPAQUE, active());
    f.server.set_mode(Mode::Status(500));
    let d = f.run(OPAQUE).await.unwrap_err();
    assert_eq!(d.code, ErrorCode::NotReady);
    assert!(d.headers.iter().any(|(n, v)| n == http::header::RETRY_AFTER && v == "1"));
    assert!(!d.headers.iter().any(|(n, _)| n == http::header::WWW_AUTHENTICATE));
    // The authorization server's answer to our own credentials (401) is a failure, not a refusal
    // of the client's token.
    f.server.set_mode(Mode::Status(401));
    assert_eq!(f.run(OPAQUE).await.unwrap_err().code, ErrorCode::NotReady);
    f.server.set_mode(Mode::Answer);
    assert!(matches!(f.run(OPAQUE).await, Ok(Flow::Continue)));
    assert_eq!(f.server.calls(), 3);
}

#[tokio::test]
async fn endpoint_that_never_answers_gives_503_after_timeout_ms_and_frees_its_slot() {
    let f = fx(false, &format!("{BASIC}\n      max_in_flight: 1")).await;
    f.server.answer(OPAQUE, active());
    f.server.set_mode(Mode::Hang);
    let d = f.run(OPAQUE).await.unwrap_err();
    assert_eq!(d.code, ErrorCode::NotReady, "{:?}", d.cause);
    // The only slot was given back when the hung call timed out: the next call gets through.
    f.server.set_mode(Mode::Answer);
    assert!(matches!(f.run(OPAQUE).await, Ok(Flow::Continue)));
    assert_eq!(f.server.calls(), 2);
}

#[tokio::test]
async fn concurrent_requests_with_one_new_token_share_one_call() {
    let f = Arc::new(fx(false, BASIC).await);
    f.server.answer(OPAQUE, active());
    f.server.hold();
    // On this single-threaded runtime every spawned request runs up to its wait on the shared
    // call before the endpoint (whose socket events come later) sees the first request.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let f = Arc::clone(&f);
            tokio::spawn(async move { f.run(OPAQUE).await.map(|_| ()).map_err(|d| d.code) })
        })
        .collect();
    f.server.arrived().await;
    f.server.release();
    for t in tasks {
        assert_eq!(t.await.unwrap(), Ok(()));
    }
    assert_eq!(f.server.calls(), 1);
}

#[tokio::test]
async fn client_secret_post_sends_the_credentials_in_the_form() {
    let f = fx(
        false,
        "      client_auth: client_secret_post\n      client_id: gw\n      client_secret_path: secret.txt",
    )
    .await;
    f.server.answer(OPAQUE, active());
    assert!(matches!(f.run(OPAQUE).await, Ok(Flow::Continue)));
    let seen = &f.server.seen()[0];
    assert_eq!(seen.authorization, None);
    assert_eq!((seen.field("client_id"), seen.field("client_secret")), (Some("gw"), Some("s3cr:et&")));
    assert_eq!(seen.field("token"), Some(OPAQUE));
}

/// RFC 7523 §2.2: each call carries a fresh assertion signed by the configured key (P-256 →
/// ES256, Ed25519 → EdDSA, RSA → RS256), issuer and subject the client, audience the endpoint, dated by the
/// stage's clock, and no secret anywhere.
#[tokio::test]
async fn private_key_jwt_sends_a_fresh_signed_assertion_per_call() {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    use phigate_identity::Clock;
    let ec = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let ed = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let keys = [
        (
            ec.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            DecodingKey::from_ec_pem(
                ec.verifying_key().to_public_key_pem(LineEnding::LF).unwrap().as_bytes(),
            )
            .unwrap(),
            Algorithm::ES256,
        ),
        (
            ed.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            DecodingKey::from_ed_pem(
                ed.verifying_key().to_public_key_pem(LineEnding::LF).unwrap().as_bytes(),
            )
            .unwrap(),
            Algorithm::EdDSA,
        ),
    ];
    let rsa_pem =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rsa2048.pem")).unwrap();
    let rsa_public = {
        use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
        let sk = rsa::RsaPrivateKey::from_pkcs8_pem(&rsa_pem).unwrap();
        let public = sk.to_public_key().to_public_key_pem(LineEnding::LF).unwrap();
        DecodingKey::from_rsa_pem(public.as_bytes()).unwrap()
    };
    for (pem, public, alg) in keys.into_iter().chain([(rsa_pem, rsa_public, Algorithm::RS256)]) {
        let dir = temp_dir("introspect-pkjwt");
        std::fs::write(dir.join("assertion.key"), pem).unwrap();
        let auth = "      client_auth: private_key_jwt\n      client_id: gw\n      \
                    assertion_key_path: assertion.key\n      assertion_kid: gw-2026";
        let f = fx_in(false, auth, "", "{ require_mfa: true }", &dir).await;
        f.server.answer(OPAQUE, active());
        assert!(matches!(f.run(OPAQUE).await, Ok(Flow::Continue)));
        f.clock.advance(Duration::from_secs(5));
        // Another token (unknown: inactive), so a second call.
        assert!(f.run("another-opaque-token").await.is_err());
        let seen = f.server.seen();
        assert_eq!(seen.len(), 2);
        let mut jtis = Vec::new();
        for (i, s) in seen.iter().enumerate() {
            assert_eq!((s.authorization.as_deref(), s.field("client_secret")), (None, None));
            let ids = s.form.iter().filter(|(k, _)| k == "client_id").count();
            assert_eq!((s.field("client_id"), ids), (Some("gw"), 1), "client_id once (RFC 6749 §3.2)");
            assert_eq!(
                s.field("client_assertion_type"),
                Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            );
            let mut v = Validation::new(alg);
            v.set_audience(&[f.server.url.as_str()]);
            v.set_issuer(&["gw"]);
            v.validate_exp = false; // the clock is the stage's, checked below
            let jwt =
                jsonwebtoken::decode::<Value>(s.field("client_assertion").unwrap(), &public, &v).unwrap();
            assert_eq!(jwt.header.kid.as_deref(), Some("gw-2026"));
            let c = jwt.claims;
            assert_eq!(c["sub"], "gw");
            let iat = f.clock.unix_secs() - if i == 0 { 5 } else { 0 };
            assert_eq!((c["iat"].as_i64(), c["exp"].as_i64()), (Some(iat), Some(iat + 60)));
            jtis.push(c["jti"].as_str().unwrap().to_owned());
        }
        assert_eq!(jtis[0].len(), 32);
        assert_ne!(jtis[0], jtis[1], "a fresh jti per assertion");
    }
}

#[tokio::test]
async fn tls_client_auth_presents_the_client_certificate() {
    let auth = "      client_auth: tls_client_auth\n      client_id: gw\n      client_cert_path: client.pem\n      client_key_path: client.key";
    let f = fx(true, auth).await;
    f.server.answer(OPAQUE, active());
    assert!(matches!(f.run(OPAQUE).await, Ok(Flow::Continue)));
    let seen = &f.server.seen()[0];
    assert!(seen.client_cert);
    assert_eq!(
        (seen.authorization.as_deref(), seen.field("client_id"), seen.field("client_secret")),
        (None, Some("gw"), None)
    );

    // Without the certificate the endpoint (which requires one) cannot be reached: 503.
    let g = fx(true, BASIC).await;
    g.server.answer(OPAQUE, active());
    assert_eq!(g.run(OPAQUE).await.unwrap_err().code, ErrorCode::NotReady);
    assert_eq!(g.server.calls(), 0);
}

#[tokio::test]
async fn revoked_jwt_is_refused_once_the_answer_is_older_than_cache_ttl() {
    let idp = rsa_issuer(ISS, jsonwebtoken::Algorithm::RS256);
    let dir = temp_dir("introspect-jwt");
    let jwks = file_issuer(&dir, "jwks", &[&idp]);
    let f = fx_in(
        false,
        &format!("{BASIC}\n      tokens: jwt"),
        &format!("    jwks_path: {jwks}"),
        "{ require_mfa: false }",
        &dir,
    )
    .await;
    let (stage, route) = (&f.stage, &f.routes[0]);
    let jwt = idp.sign(&idp.claims("alice", AUD, now()));
    f.server.answer(&jwt, json!({"active": true}));
    let mut ctx = bearer(route, &jwt);
    assert!(matches!(run(stage, &mut ctx).await, Ok(Flow::Continue)));
    // The JWT's own claims make the principal; the answer only says it is active.
    assert_eq!(ctx.principal.as_ref().unwrap().subject.as_str(), "alice");

    // Revoked at the authorization server: still accepted from the cache until cache_ttl_secs...
    f.server.answer(&jwt, json!({"active": false}));
    assert!(run(stage, &mut bearer(route, &jwt)).await.is_ok());
    f.clock.advance(Duration::from_secs(29));
    assert!(run(stage, &mut bearer(route, &jwt)).await.is_ok());
    assert_eq!(f.server.calls(), 1);
    // ...then asked again and refused.
    f.clock.advance(Duration::from_secs(1));
    let res = run(stage, &mut bearer(route, &jwt)).await;
    assert_denied(res, ErrorCode::TokenInactive, Some(&invalid_token(ErrorCode::TokenInactive)), &jwt);
    assert_eq!(f.server.calls(), 2);

    // A JWT with a bad signature never reaches the endpoint.
    let forged = format!("{}A", &jwt[..jwt.len() - 1]);
    let forged = if forged == jwt { format!("{}B", &jwt[..jwt.len() - 1]) } else { forged };
    assert_eq!(
        run(stage, &mut bearer(route, &forged)).await.unwrap_err().code,
        ErrorCode::TokenSignatureInvalid
    );
    assert_eq!(f.server.calls(), 2);
    // Opaque tokens are not taken by a `tokens: jwt` issuer.
    assert_eq!(run(stage, &mut bearer(route, OPAQUE)).await.unwrap_err().code, ErrorCode::TokenMalformed);
}

#[tokio::test]
async fn jwt_of_an_issuer_without_jwks_is_vouched_for_by_introspection_alone() {
    let idp = rsa_issuer(ISS, jsonwebtoken::Algorithm::RS256);
    let f = fx(false, &format!("{BASIC}\n      tokens: all")).await;
    let jwt = idp.sign(&idp.claims("alice", AUD, now()));
    let mut answer = active();
    answer["sub"] = json!("bob");
    f.server.answer(&jwt, answer);
    let mut ctx = bearer(&f.routes[0], &jwt);
    assert!(matches!(run(&f.stage, &mut ctx).await, Ok(Flow::Continue)));
    // No key to check the JWT with: only the answer counts, not the unverified payload.
    assert_eq!(ctx.principal.as_ref().unwrap().subject.as_str(), "bob");
    assert_eq!(f.server.calls(), 1);
}

fn config_issues(yaml: &str, dir: &std::path::Path) -> Vec<String> {
    let cfg: IdentityConfig = serde_yaml::from_str(yaml).unwrap();
    let routes = routes(&["a"]);
    let ctx = StageBuildCtx { routes: &routes, config_dir: dir };
    match cfg.build(&ctx) {
        Ok(_) => Vec::new(),
        Err(issues) => issues.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn config_errors_name_the_key_and_never_the_secret() {
    let dir = temp_dir("introspect-config");
    std::fs::write(dir.join("secret.txt"), "hunter2-secret\n").unwrap();
    std::fs::write(dir.join("empty.txt"), "\n").unwrap();
    let issuer = |iss: &str, ix: &str| {
        format!("  - issuer: {iss}\n    audiences: [a]\n    introspection:\n      client_id: gw\n{ix}\n")
    };
    let ok = "      endpoint: https://127.0.0.1:1/i\n      client_secret_path: secret.txt";
    std::fs::write(
        dir.join("not-a-key.pem"),
        "-----BEGIN PRIVATE KEY-----\nhunter2\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let pk = "      endpoint: https://127.0.0.1:1/i\n      client_auth: private_key_jwt";
    let cases: [(String, &str); 13] = [
        (
            issuer("a", pk),
            "issuers[0].introspection.assertion_key_path: private_key_jwt needs assertion_key_path",
        ),
        (
            issuer("a", &format!("{pk}\n      assertion_key_path: not-a-key.pem")),
            "issuers[0].introspection.assertion_key_path: not a PKCS#8 PEM private key",
        ),
        (
            issuer(
                "a",
                &format!("{pk}\n      assertion_key_path: x.pem\n      client_secret_path: secret.txt"),
            ),
            "issuers[0].introspection.client_auth: private_key_jwt takes assertion_key_path",
        ),
        (
            issuer("a", &format!("{ok}\n      assertion_key_path: x.pem")),
            "issuers[0].introspection.assertion_key_path: only applies to client_auth: private_key_jwt",
        ),
        (
            issuer("a", ok) + &issuer("b", ok),
            "issuers[1].introspection.tokens: only one issuer may introspect opaque tokens",
        ),
        (
            issuer("a", "      endpoint: http://127.0.0.1:1/i\n      client_secret_path: secret.txt"),
            "issuers[0].introspection.endpoint: must be an https URI",
        ),
        (
            issuer("a", "      endpoint: https://127.0.0.1:1/i"),
            "issuers[0].introspection.client_secret_path: client_secret_basic and client_secret_post need",
        ),
        (
            issuer("a", "      endpoint: https://127.0.0.1:1/i\n      client_secret_path: empty.txt"),
            "issuers[0].introspection.client_secret_path: the file is empty",
        ),
        (
            issuer("a", "      endpoint: https://127.0.0.1:1/i\n      client_secret_path: missing.txt"),
            "issuers[0].introspection.client_secret_path: cannot be read",
        ),
        (
            issuer("a", "      endpoint: https://127.0.0.1:1/i\n      client_auth: tls_client_auth"),
            "issuers[0].introspection.client_cert_path: tls_client_auth needs",
        ),
        (
            issuer("a", &format!("{ok}\n      cache_ttl_secs: 0")),
            "issuers[0].introspection.cache_ttl_secs: must be between 1 and 3600",
        ),
        (
            issuer("a", &format!("{ok}\n      timeout_ms: 10")),
            "issuers[0].introspection.timeout_ms: must be between 100 and 30000",
        ),
        (
            "  - issuer: a\n    audiences: [a]\n".to_owned(),
            "issuers[0].jwks_uri: set exactly one of jwks_uri and jwks_path (or introspection",
        ),
    ];
    for (issuers, want) in cases {
        let got = config_issues(&format!("issuers:\n{issuers}"), &dir);
        assert!(got.iter().any(|g| g.starts_with(want)), "want {want:?}, got {got:?}");
        assert!(got.iter().all(|g| !g.contains("hunter2")), "secret echoed: {got:?}");
    }
    // A valid opaque-only issuer builds (no JWKS, no call made at build).
    assert_eq!(config_issues(&format!("issuers:\n{}", issuer("a", ok)), &dir), Vec::<String>::new());
}

#[tokio::test]
async fn opaque_only_issuer_is_ready_without_jwks() {
    let f = fx(false, BASIC).await;
    assert!(matches!(phigate_plugin::Stage::readiness(&f.stage), phigate_plugin::Readiness::Ready(_)));
    assert_eq!(phigate_plugin::Stage::background_tasks(&f.stage).len(), 0);
}
