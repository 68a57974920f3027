//! Every error code of the stage: status, code, the exact challenge, and no token echo.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use phigate_identity::dev::{cert_thumbprint, DevIssuer};
use phigate_identity::IdentityStage;
use phigate_plugin::{ErrorCode, Flow, RouteMeta};
use support::*;

const ISS: &str = "https://idp.test";

struct Fx {
    idp: DevIssuer,
    stage: IdentityStage,
    routes: Vec<Arc<RouteMeta>>,
}

fn fx() -> Fx {
    let idp = DevIssuer::es256(ISS).unwrap();
    let dir = temp_dir("codes");
    let jwks = file_issuer(&dir, "idp", &[&idp]);
    let yaml = format!(
        r#"
issuers:
  - issuer: {ISS}
    audiences: ["{AUD}"]
    jwks_path: {jwks}
    claims: {{ tenant: tenant }}
routes:
  b: {{ max_auth_age_secs: 300, mfa_acr: ["urn:phigate:mfa"] }}
  c: {{ require_bound_token: true }}
  d: {{ require_mfa: false, strip_authorization: true, forward_subject_header: true, forward_tenant_header: true }}
"#
    );
    let routes = routes(&["a", "b", "c", "d"]);
    let stage = build(&yaml, &routes, &dir);
    Fx { idp, stage, routes }
}

impl Fx {
    fn good(&self) -> phigate_identity::dev::DevClaims {
        self.idp
            .claims("alice", AUD, now())
            .tenant("tenant", "tenant-a")
            .amr(&["pwd", "otp"])
            .auth_time(now() - 10)
            .roles(&["clinician"])
            .scope("patient/*.read openid")
    }

    async fn deny(&self, route: usize, token: &str, code: ErrorCode, www: Option<&str>) {
        let mut ctx = bearer(&self.routes[route], token);
        assert_denied(run(&self.stage, &mut ctx).await, code, www, token);
        assert!(ctx.principal.is_none());
    }
}

#[tokio::test]
async fn valid_mfa_token_sets_principal_and_tenant() {
    let f = fx();
    let token = f.idp.sign(&f.good().sid("s-1"));
    let mut ctx = bearer(&f.routes[0], &token);
    assert!(matches!(run(&f.stage, &mut ctx).await, Ok(Flow::Continue)));
    let p = ctx.principal.clone().unwrap();
    assert_eq!(p.subject.as_str(), "alice");
    assert_eq!(p.tenant.as_ref().unwrap().as_str(), "tenant-a");
    assert_eq!(p.roles, vec!["clinician"]);
    assert_eq!(p.scopes, vec!["patient/*.read", "openid"]);
    assert_eq!(p.amr, vec!["pwd", "otp"]);
    assert_eq!(p.session_id.as_deref(), Some("s-1"));
    assert_eq!(&*p.issuer, ISS);
    assert_eq!(ctx.tenant.unwrap().as_str(), "tenant-a");
    // Default: Authorization is forwarded, no identity headers added.
    assert!(ctx.upstream.remove_headers.is_empty() && ctx.upstream.set_headers.is_empty());
}

#[tokio::test]
async fn route_can_strip_authorization_and_forward_identity_headers() {
    let f = fx();
    let token = f.idp.sign(&f.good());
    let mut ctx = bearer(&f.routes[3], &token);
    run(&f.stage, &mut ctx).await.unwrap();
    // The DPoP proof goes with the token it proves.
    let dpop = http::HeaderName::from_static("dpop");
    assert_eq!(ctx.upstream.remove_headers, vec![http::header::AUTHORIZATION, dpop]);
    let set: Vec<_> =
        ctx.upstream.set_headers.iter().map(|(n, v)| (n.as_str(), v.to_str().unwrap())).collect();
    assert_eq!(set, vec![("x-phigate-subject", "alice"), ("x-phigate-tenant", "tenant-a")]);
}

#[tokio::test]
async fn tenant_named_by_route_is_not_overwritten() {
    let f = fx();
    let token = f.idp.sign(&f.good());
    let mut ctx = bearer(&f.routes[0], &token);
    ctx.tenant = Some("tenant-b".into());
    run(&f.stage, &mut ctx).await.unwrap();
    assert_eq!(ctx.tenant.unwrap().as_str(), "tenant-b");
    assert_eq!(ctx.principal.unwrap().tenant.as_ref().unwrap().as_str(), "tenant-a");
}

#[tokio::test]
async fn missing_token_is_401_token_missing_with_bare_challenge() {
    let f = fx();
    let mut ctx = request(&f.routes[0], &[]);
    assert_denied(run(&f.stage, &mut ctx).await, ErrorCode::TokenMissing, Some("Bearer"), "");
    let mut ctx = request(&f.routes[0], &["Basic YWxpY2U6cHc="]);
    assert_denied(run(&f.stage, &mut ctx).await, ErrorCode::TokenMissing, Some("Bearer"), "");
}

#[tokio::test]
async fn garbage_token_is_401_token_malformed_invalid_token() {
    let f = fx();
    for t in ["abc", "a.b", "a.b.c.d", "eyJhbGciOiJFUzI1NiJ9.e30.", "!!!.x.y"] {
        f.deny(0, t, ErrorCode::TokenMalformed, Some(&invalid_token(ErrorCode::TokenMalformed))).await;
    }
}

#[tokio::test]
async fn empty_bearer_is_401_token_malformed_invalid_request() {
    let f = fx();
    let mut ctx = request(&f.routes[0], &["Bearer "]);
    assert_denied(run(&f.stage, &mut ctx).await, ErrorCode::TokenMalformed, Some(&invalid_request()), "");
}

#[tokio::test]
async fn expired_token_is_401_token_expired() {
    let f = fx();
    let token = f.idp.sign(&f.good().iat(now() - 4000).exp(now() - 31));
    f.deny(0, &token, ErrorCode::TokenExpired, Some(&invalid_token(ErrorCode::TokenExpired))).await;
}

#[tokio::test]
async fn token_within_leeway_of_exp_is_accepted() {
    let f = fx();
    let token = f.idp.sign(&f.good().exp(now() - 5));
    let mut ctx = bearer(&f.routes[0], &token);
    assert!(run(&f.stage, &mut ctx).await.is_ok());
}

#[tokio::test]
async fn future_nbf_is_401_token_not_yet_valid() {
    let f = fx();
    let token = f.idp.sign(&f.good().nbf(now() + 600));
    f.deny(0, &token, ErrorCode::TokenNotYetValid, Some(&invalid_token(ErrorCode::TokenNotYetValid))).await;
}

#[tokio::test]
async fn tampered_payload_is_401_token_signature_invalid() {
    let f = fx();
    let token = f.idp.sign(&f.good());
    let other = f.idp.sign(&f.good().set("sub", "mallory"));
    let parts: Vec<_> = token.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], other.split('.').nth(1).unwrap(), parts[2]);
    f.deny(
        0,
        &forged,
        ErrorCode::TokenSignatureInvalid,
        Some(&invalid_token(ErrorCode::TokenSignatureInvalid)),
    )
    .await;
}

#[tokio::test]
async fn unknown_issuer_is_401_token_issuer_unknown() {
    let f = fx();
    let token = f.idp.sign(&f.good().set("iss", "https://evil.test"));
    f.deny(0, &token, ErrorCode::TokenIssuerUnknown, Some(&invalid_token(ErrorCode::TokenIssuerUnknown)))
        .await;
}

#[tokio::test]
async fn aud_mismatch_is_401_token_audience_invalid() {
    let f = fx();
    for aud in [serde_json::json!("https://other.test"), serde_json::json!(["a", "b"]), serde_json::json!(7)]
    {
        let token = f.idp.sign(&f.good().set("aud", aud));
        f.deny(
            0,
            &token,
            ErrorCode::TokenAudienceInvalid,
            Some(&invalid_token(ErrorCode::TokenAudienceInvalid)),
        )
        .await;
    }
    let token = f.idp.sign(&f.good().remove("aud"));
    f.deny(0, &token, ErrorCode::TokenAudienceInvalid, Some(&invalid_token(ErrorCode::TokenAudienceInvalid)))
        .await;
}

#[tokio::test]
async fn aud_array_containing_ours_is_accepted() {
    let f = fx();
    let token = f.idp.sign(&f.good().set("aud", serde_json::json!(["x", AUD])));
    assert!(run(&f.stage, &mut bearer(&f.routes[0], &token)).await.is_ok());
}

#[tokio::test]
async fn password_only_token_is_401_mfa_required_step_up() {
    let f = fx();
    let token = f.idp.sign(&f.good().amr(&["pwd"]));
    let www = "Bearer error=\"insufficient_user_authentication\", \
               error_description=\"Multi-factor authentication is required.\"";
    f.deny(0, &token, ErrorCode::MfaRequired, Some(www)).await;
    // Route b also advertises what it accepts and how fresh (RFC 9470 §3).
    let www_b = "Bearer error=\"insufficient_user_authentication\", \
                 error_description=\"Multi-factor authentication is required.\", \
                 acr_values=\"urn:phigate:mfa\", max_age=\"300\"";
    f.deny(1, &token, ErrorCode::MfaRequired, Some(www_b)).await;
    // A route that does not require MFA accepts it.
    assert!(run(&f.stage, &mut bearer(&f.routes[3], &token)).await.is_ok());
}

#[tokio::test]
async fn configured_acr_proves_mfa() {
    let f = fx();
    let token = f.idp.sign(&f.good().amr(&["pwd"]).acr("urn:phigate:mfa"));
    assert!(run(&f.stage, &mut bearer(&f.routes[1], &token)).await.is_ok());
}

#[tokio::test]
async fn stale_authentication_is_401_auth_too_old_with_max_age() {
    let f = fx();
    let www = "Bearer error=\"insufficient_user_authentication\", \
               error_description=\"The authentication is too old; sign in again.\", \
               acr_values=\"urn:phigate:mfa\", max_age=\"300\"";
    let old = f.idp.sign(&f.good().auth_time(now() - 1000));
    f.deny(1, &old, ErrorCode::AuthTooOld, Some(www)).await;
    let none = f.idp.sign(&f.good().remove("auth_time"));
    f.deny(1, &none, ErrorCode::AuthTooOld, Some(www)).await;
    // Route a has no age limit.
    assert!(run(&f.stage, &mut bearer(&f.routes[0], &old)).await.is_ok());
}

#[tokio::test]
async fn bound_token_without_matching_cert_is_401_token_binding_mismatch() {
    let f = fx();
    let www = invalid_token(ErrorCode::TokenBindingMismatch);
    let good_tp = cert_thumbprint(b"client cert der");
    let token = f.idp.sign(&f.good().cnf_x5t_s256(&good_tp));
    // No client certificate on the connection.
    f.deny(0, &token, ErrorCode::TokenBindingMismatch, Some(&www)).await;
    // Another certificate.
    let mut ctx = bearer(&f.routes[0], &token);
    ctx.client.cert_thumbprint = Some(cert_thumbprint(b"other cert der").into());
    assert_denied(run(&f.stage, &mut ctx).await, ErrorCode::TokenBindingMismatch, Some(&www), &token);
    // The bound certificate.
    let mut ctx = bearer(&f.routes[2], &token);
    ctx.client.cert_thumbprint = Some(good_tp.as_str().into());
    assert!(run(&f.stage, &mut ctx).await.is_ok());
    assert_eq!(ctx.principal.unwrap().cert_thumbprint.as_deref(), Some(good_tp.as_str()));
}

#[tokio::test]
async fn route_requiring_bound_tokens_refuses_unbound_token() {
    let f = fx();
    let token = f.idp.sign(&f.good());
    let mut ctx = bearer(&f.routes[2], &token);
    ctx.client.cert_thumbprint = Some(cert_thumbprint(b"client").into());
    assert_denied(
        run(&f.stage, &mut ctx).await,
        ErrorCode::TokenBindingMismatch,
        Some(&invalid_token(ErrorCode::TokenBindingMismatch)),
        &token,
    );
}

#[tokio::test]
async fn second_request_with_same_token_is_a_cache_hit_and_still_checks_the_route() {
    let f = fx();
    let token = f.idp.sign(&f.good().amr(&["pwd"]));
    assert!(run(&f.stage, &mut bearer(&f.routes[3], &token)).await.is_ok());
    // Cached as valid, but route a still demands MFA.
    f.deny(0, &token, ErrorCode::MfaRequired, Some("Bearer error=\"insufficient_user_authentication\", error_description=\"Multi-factor authentication is required.\"")).await;
}
