//! IdP presets: tokens shaped like each provider's access tokens map to the right principal.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use phigate_identity::dev::{DevClaims, DevIssuer};
use phigate_identity::IdentityStage;
use phigate_plugin::{ErrorCode, Principal, RouteMeta};
use serde_json::json;
use support::*;

const COGNITO: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example";
const ENTRA: &str = "https://login.microsoftonline.com/9f0c1b6e-2b0e-4e57-8f9a-3c1d2e4f5a6b/v2.0";
const AUTH0: &str = "https://health-example.us.auth0.com/";
const OKTA: &str = "https://example.okta.com/oauth2/default";
const KEYCLOAK: &str = "https://sso.example.org/realms/health";

struct Fx {
    idps: Vec<DevIssuer>,
    stage: IdentityStage,
    routes: Vec<Arc<RouteMeta>>,
}

fn fx() -> Fx {
    let idps = vec![
        rsa_issuer(COGNITO, jsonwebtoken::Algorithm::RS256),
        rsa_issuer(ENTRA, jsonwebtoken::Algorithm::RS256),
        DevIssuer::es256(AUTH0).unwrap(),
        DevIssuer::es256(OKTA).unwrap(),
        DevIssuer::es256(KEYCLOAK).unwrap(),
        DevIssuer::es256("https://sso.example.org/realms/override").unwrap(),
    ];
    let dir = temp_dir("presets");
    let j: Vec<String> =
        idps.iter().enumerate().map(|(n, i)| file_issuer(&dir, &format!("p{n}"), &[i])).collect();
    let yaml = format!(
        r#"
issuers:
  - {{ issuer: "{COGNITO}", preset: cognito, audiences: ["6example0client0id"], tenant: tenant-a, jwks_path: {} }}
  - {{ issuer: "{ENTRA}", preset: entra, audiences: ["api://phigate"], jwks_path: {} }}
  - {{ issuer: "{AUTH0}", preset: auth0, audiences: ["https://fhir.example.org"], jwks_path: {} }}
  - {{ issuer: "{OKTA}", preset: okta, audiences: ["api://default"], tenant: tenant-okta, jwks_path: {} }}
  - {{ issuer: "{KEYCLOAK}", preset: keycloak, audiences: ["phigate"], claims: {{ tenant: organization }}, jwks_path: {} }}
  - issuer: "https://sso.example.org/realms/override"
    preset: keycloak
    audiences: ["phigate"]
    jwks_path: {}
    claims: {{ roles: {{ path: [resource_access, phigate, roles] }} }}
defaults: {{ require_mfa: false }}
routes:
  mfa: {{ require_mfa: true, mfa_acr: [c1] }}
"#,
        j[0], j[1], j[2], j[3], j[4], j[5]
    );
    let routes = routes(&["open", "mfa"]);
    let stage = build(&yaml, &routes, &dir);
    Fx { idps, stage, routes }
}

fn base(i: &DevIssuer) -> DevClaims {
    let n = now();
    DevClaims::default().set("iss", i.issuer()).set("iat", n).set("exp", n + 3600)
}

async fn principal(f: &Fx, route: usize, token: &str) -> Result<Arc<Principal>, ErrorCode> {
    let mut ctx = bearer(&f.routes[route], token);
    run(&f.stage, &mut ctx).await.map_err(|d| d.code)?;
    Ok(ctx.principal.unwrap())
}

fn cognito_access(f: &Fx, token_use: &str) -> String {
    // Shape from the Cognito developer guide: no `aud`, `client_id`, `token_use`, groups.
    f.idps[0].sign(
        &base(&f.idps[0])
            .set("sub", "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
            .set("cognito:groups", json!(["clinicians", "tenant-a"]))
            .set("token_use", token_use)
            .set("scope", "openid phigate/patient.read")
            .set("auth_time", now() - 60)
            .set("client_id", "6example0client0id")
            .set("origin_jti", "origin-1")
            .set("event_id", "ev-1")
            .set("jti", "j-1")
            .set("username", "alice"),
    )
}

#[tokio::test]
async fn cognito_access_token_maps_groups_client_and_origin_session() {
    let f = fx();
    let p = principal(&f, 0, &cognito_access(&f, "access")).await.unwrap();
    assert_eq!(p.subject.as_str(), "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee");
    assert_eq!(p.roles, vec!["clinicians", "tenant-a"]);
    assert_eq!(p.scopes, vec!["openid", "phigate/patient.read"]);
    assert_eq!(p.client_id.as_deref(), Some("6example0client0id"));
    assert_eq!(p.session_id.as_deref(), Some("origin-1"));
    assert_eq!(p.tenant.as_ref().unwrap().as_str(), "tenant-a");
}

#[tokio::test]
async fn cognito_id_token_is_refused_as_an_access_token() {
    let f = fx();
    assert_eq!(principal(&f, 0, &cognito_access(&f, "id")).await.unwrap_err(), ErrorCode::TokenMalformed);
}

#[tokio::test]
async fn entra_v2_token_maps_oid_tid_roles_scp_and_acrs() {
    let f = fx();
    let t = f.idps[1].sign(
        &base(&f.idps[1])
            .set("aud", "api://phigate")
            .set("sub", "pairwise-sub")
            .set("oid", "00000000-0000-0000-0000-000000000abc")
            .set("tid", "9f0c1b6e-2b0e-4e57-8f9a-3c1d2e4f5a6b")
            .set("roles", json!(["Clinician"]))
            .set("scp", "Patient.Read Observation.Read")
            .set("azp", "client-guid")
            .set("acrs", json!(["c1"]))
            .set("ver", "2.0"),
    );
    let p = principal(&f, 1, &t).await.unwrap();
    assert_eq!(p.subject.as_str(), "00000000-0000-0000-0000-000000000abc");
    assert_eq!(p.tenant.as_ref().unwrap().as_str(), "9f0c1b6e-2b0e-4e57-8f9a-3c1d2e4f5a6b");
    assert_eq!(p.roles, vec!["Clinician"]);
    assert_eq!(p.scopes, vec!["Patient.Read", "Observation.Read"]);
    assert_eq!(p.client_id.as_deref(), Some("client-guid"));
    // `acrs: [c1]` proves the route's authentication context.
    assert_eq!(p.acr.as_deref(), Some("c1"));
}

#[tokio::test]
async fn auth0_token_maps_org_permissions_and_array_audience() {
    let f = fx();
    let t = f.idps[2].sign(
        &base(&f.idps[2])
            .set("sub", "auth0|123456")
            .set("aud", json!(["https://fhir.example.org", "https://health-example.us.auth0.com/userinfo"]))
            .set("azp", "my_client_id")
            .set("scope", "openid read:patients")
            .set("permissions", json!(["read:patients"]))
            .set("org_id", "org_tenantA"),
    );
    let p = principal(&f, 0, &t).await.unwrap();
    assert_eq!(p.subject.as_str(), "auth0|123456");
    assert_eq!(p.tenant.as_ref().unwrap().as_str(), "org_tenantA");
    assert_eq!(p.roles, vec!["read:patients"]);
    assert_eq!(p.client_id.as_deref(), Some("my_client_id"));
    // RFC 9068 profile carries `client_id` instead of `azp`.
    let t = f.idps[2].sign(
        &base(&f.idps[2])
            .set("sub", "auth0|1")
            .set("aud", "https://fhir.example.org")
            .set("client_id", "c9068"),
    );
    assert_eq!(principal(&f, 0, &t).await.unwrap().client_id.as_deref(), Some("c9068"));
}

#[tokio::test]
async fn okta_token_maps_uid_cid_scp_array_and_groups() {
    let f = fx();
    let t = f.idps[3].sign(
        &base(&f.idps[3])
            .set("ver", 1)
            .set("aud", "api://default")
            .set("sub", "alice@example.org")
            .set("uid", "00u1abcd")
            .set("cid", "0oa1client")
            .set("scp", json!(["openid", "patient.read"]))
            .set("groups", json!(["Clinicians"]))
            .set("auth_time", now() - 100),
    );
    let p = principal(&f, 0, &t).await.unwrap();
    assert_eq!(p.subject.as_str(), "00u1abcd");
    assert_eq!(p.client_id.as_deref(), Some("0oa1client"));
    assert_eq!(p.scopes, vec!["openid", "patient.read"]);
    assert_eq!(p.roles, vec!["Clinicians"]);
    assert_eq!(p.tenant.as_ref().unwrap().as_str(), "tenant-okta");
    assert!(p.auth_time.is_some());
}

fn keycloak_claims(i: &DevIssuer) -> DevClaims {
    base(i)
        .set("sub", "f1c4f64e")
        .set("aud", json!(["phigate", "account"]))
        .set("azp", "phigate-web")
        .set("realm_access", json!({"roles": ["clinician", "offline_access"]}))
        .set("resource_access", json!({"phigate": {"roles": ["reader"]}}))
        .set("scope", "openid profile")
        .set("sid", "kc-session-1")
        .set("acr", "1")
        .set("organization", "tenant-kc")
}

#[tokio::test]
async fn keycloak_token_maps_nested_realm_roles_sid_and_azp() {
    let f = fx();
    let p = principal(&f, 0, &f.idps[4].sign(&keycloak_claims(&f.idps[4]))).await.unwrap();
    assert_eq!(p.roles, vec!["clinician", "offline_access"]);
    assert_eq!(p.session_id.as_deref(), Some("kc-session-1"));
    assert_eq!(p.client_id.as_deref(), Some("phigate-web"));
    assert_eq!(p.acr.as_deref(), Some("1"));
    assert_eq!(p.tenant.as_ref().unwrap().as_str(), "tenant-kc");
}

#[tokio::test]
async fn explicit_claim_mapping_overrides_one_preset_field() {
    let f = fx();
    let p = principal(&f, 0, &f.idps[5].sign(&keycloak_claims(&f.idps[5]).set("iss", f.idps[5].issuer())))
        .await
        .unwrap();
    assert_eq!(p.roles, vec!["reader"]);
    assert_eq!(p.session_id.as_deref(), Some("kc-session-1"), "other preset fields kept");
}

#[tokio::test]
async fn entra_token_without_the_route_auth_context_is_mfa_required() {
    let f = fx();
    let t = f.idps[1].sign(
        &base(&f.idps[1])
            .set("aud", "api://phigate")
            .set("oid", "o")
            .set("sub", "s")
            .set("acrs", json!(["c2"])),
    );
    assert_eq!(principal(&f, 1, &t).await.unwrap_err(), ErrorCode::MfaRequired);
}
