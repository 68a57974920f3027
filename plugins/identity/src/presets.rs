//! Claim layouts of the IdPs our users run. Each mapping names the provider documentation it
//! follows; an explicit `claims:` entry in the config overrides any single field.

use std::collections::BTreeMap;

use crate::config::{ClaimMappingConfig, ClaimPath, Preset};

fn name(s: &str) -> Option<ClaimPath> {
    Some(ClaimPath::Name(s.to_owned()))
}

/// The preset's mapping and required claim values.
pub(crate) fn preset(p: Preset) -> (ClaimMappingConfig, BTreeMap<String, String>) {
    let mut required = BTreeMap::new();
    let m = match p {
        // AWS, Amazon Cognito Developer Guide, "Understanding the access token": access tokens
        // carry `client_id` and no `aud`, groups in `cognito:groups`, space-separated `scope`,
        // `token_use: access` (ID tokens say `id`), and `origin_jti`, shared by every token of one
        // sign-in (refresh included): our session key. No tenant or amr claim unless a
        // pre-token-generation trigger adds one, so those stay explicit.
        Preset::Cognito => {
            required.insert("token_use".to_owned(), "access".to_owned());
            ClaimMappingConfig {
                audience: name("client_id"),
                roles: name("cognito:groups"),
                scopes: name("scope"),
                client_id: name("client_id"),
                session_id: name("origin_jti"),
                ..Default::default()
            }
        }
        // Microsoft identity platform, "Access token claims reference" (v2.0): `tid` is the
        // tenant, `oid` the stable user id (`sub` is pairwise per application), app roles in
        // `roles`, delegated scopes space-separated in `scp`, client in `azp`, and Conditional
        // Access authentication contexts in `acrs` (array: our acr evidence for step-up).
        Preset::Entra => ClaimMappingConfig {
            subject: name("oid"),
            tenant: name("tid"),
            roles: name("roles"),
            scopes: name("scp"),
            client_id: name("azp"),
            acr: name("acrs"),
            ..Default::default()
        },
        // Auth0 docs, "Access Token Profiles": `aud` may be an array, client in `azp` (Auth0
        // profile) or `client_id` (RFC 9068 profile; the generic default tries both),
        // space-separated `scope`, RBAC `permissions` (the `_authz` dialects) as roles, and
        // `org_id` when Auth0 Organizations is used.
        Preset::Auth0 => ClaimMappingConfig {
            tenant: name("org_id"),
            roles: name("permissions"),
            scopes: name("scope"),
            ..Default::default()
        },
        // Okta developer docs, custom authorization server access tokens: client in `cid`,
        // stable user id in `uid` (`sub` is the login), scopes as an array in `scp`, `auth_time`,
        // and the conventional `groups` claim added by a Groups claim rule.
        Preset::Okta => ClaimMappingConfig {
            subject: name("uid"),
            client_id: name("cid"),
            scopes: name("scp"),
            roles: name("groups"),
            ..Default::default()
        },
        // Keycloak server admin guide, OIDC token mappers: realm roles under
        // `realm_access.roles`, space-separated `scope`, client in `azp`, session in `sid`,
        // level of authentication in `acr`, and `auth_time`.
        Preset::Keycloak => ClaimMappingConfig {
            roles: Some(ClaimPath::Nested { path: vec!["realm_access".to_owned(), "roles".to_owned()] }),
            scopes: name("scope"),
            client_id: name("azp"),
            session_id: name("sid"),
            ..Default::default()
        },
    };
    (m, required)
}

/// Field-wise `explicit` over `base`.
pub(crate) fn overlay(base: ClaimMappingConfig, explicit: &ClaimMappingConfig) -> ClaimMappingConfig {
    let e = explicit.clone();
    ClaimMappingConfig {
        subject: e.subject.or(base.subject),
        audience: e.audience.or(base.audience),
        tenant: e.tenant.or(base.tenant),
        roles: e.roles.or(base.roles),
        scopes: e.scopes.or(base.scopes),
        fhir_user: e.fhir_user.or(base.fhir_user),
        patient: e.patient.or(base.patient),
        session_id: e.session_id.or(base.session_id),
        client_id: e.client_id.or(base.client_id),
        amr: e.amr.or(base.amr),
        acr: e.acr.or(base.acr),
        auth_time: e.auth_time.or(base.auth_time),
    }
}
