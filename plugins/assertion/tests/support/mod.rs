//! Shared test fixtures: keys generated in the test (rcgen on ring), routes, principals, a stage
//! built from YAML, and verification of assertions through the stage's own JWKS with
//! jsonwebtoken.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // each test binary uses a subset

use std::path::Path;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use phigate_assertion::{AssertionConfig, AssertionStage, Clock, ManualClock, SystemClock};
use phigate_plugin::{
    ConfigIssue, PatientId, Principal, RequestCtx, RequestId, RequestInfo, RouteMeta, Stage, StageBuildCtx,
};
use serde_json::Value;

pub const ISSUER: &str = "https://phigate.example";

/// Which algorithm a generated key has.
#[derive(Debug, Clone, Copy)]
pub enum Alg {
    Ed25519,
    P256,
}

/// A fresh key pair: (PKCS#8 private PEM, SPKI public PEM).
pub fn key_pems(alg: Alg) -> (String, String) {
    let kp = match alg {
        Alg::Ed25519 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519),
        Alg::P256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
    }
    .unwrap();
    (kp.serialize_pem(), kp.public_key_pem())
}

/// Writes a fresh private key to `dir/name`; returns its public PEM.
pub fn write_key(dir: &Path, name: &str, alg: Alg) -> String {
    let (private, public) = key_pems(alg);
    std::fs::write(dir.join(name), private).unwrap();
    public
}

/// Routes `fhir` (upstream `ehr`), `api` (upstream `ehr`) and `admin` (upstream `ops`).
pub fn routes() -> Vec<Arc<RouteMeta>> {
    [("fhir", "ehr"), ("api", "ehr"), ("admin", "ops")]
        .iter()
        .enumerate()
        .map(|(index, (name, upstream))| {
            Arc::new(RouteMeta {
                name: (*name).into(),
                index,
                prefix: format!("/{name}").into(),
                fhir: *name == "fhir",
                upstream: (*upstream).into(),
            })
        })
        .collect()
}

/// The current time in seconds.
pub fn now() -> i64 {
    SystemClock.unix_now()
}

/// Builds the stage from a YAML section (paths relative to `dir`).
pub fn try_build(yaml: &str, dir: &Path, clock: Arc<dyn Clock>) -> Result<AssertionStage, Vec<ConfigIssue>> {
    let cfg: AssertionConfig = serde_yaml::from_str(yaml).unwrap();
    let routes = routes();
    cfg.build_with_clock(&StageBuildCtx { routes: &routes, config_dir: dir }, clock)
}

/// A stage over a fresh key of `alg` with `extra` YAML, and its clock (at the real time).
pub fn stage(dir: &Path, alg: Alg, extra: &str) -> (AssertionStage, ManualClock) {
    write_key(dir, "assertion.key", alg);
    let clock = ManualClock::at(now());
    let yaml = format!("key_path: assertion.key\nissuer: {ISSUER}\n{extra}");
    let stage = try_build(&yaml, dir, Arc::new(clock.clone())).unwrap();
    (stage, clock)
}

/// A principal with every optional claim set, whose token expires in an hour.
pub fn full_principal() -> Principal {
    Principal {
        tenant: Some("acme".into()),
        roles: vec!["clinician".into(), "nurse".into()],
        scopes: vec!["patient/*.read".into()],
        fhir_user: Some("Practitioner/7".into()),
        patient: Some(PatientId::from("p-42")),
        session_id: Some("sess-1".into()),
        client_id: Some("ehr-app".into()),
        amr: vec!["pwd".into(), "otp".into()],
        acr: Some("urn:mace:incommon:iap:silver".into()),
        auth_time: Some(now() - 120),
        expires_at: now() + 3600,
        cert_thumbprint: Some("x5t-thumb".into()),
        dpop_jkt: None,
        ..Principal::new("https://idp.example", "alice")
    }
}

/// A request context on route `route_index` with these client headers.
pub fn ctx(route_index: usize, principal: Option<Principal>, headers: &[(&str, &str)]) -> RequestCtx {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    let info = RequestInfo {
        method: Method::GET,
        path: "/fhir/Patient".into(),
        query: Vec::new(),
        headers: map,
        body: None,
    };
    let mut ctx = RequestCtx::new(RequestId::new("req-1"), routes()[route_index].clone(), info);
    ctx.principal = principal.map(Arc::new);
    ctx
}

/// Runs the stage's `on_request`; returns the assertion it set (if any).
pub async fn run(stage: &AssertionStage, ctx: &mut RequestCtx) -> Option<String> {
    stage.on_request(ctx).await.unwrap();
    let header = stage.header();
    assert!(ctx.upstream.remove_headers.contains(header), "the client's header is always removed");
    assert!(ctx.request.headers.get(header).is_none(), "the client's header is gone from the request");
    let set: Vec<_> = ctx.upstream.set_headers.iter().filter(|(n, _)| n == header).collect();
    assert!(set.len() <= 1);
    set.first().map(|(_, v)| v.to_str().unwrap().to_owned())
}

/// Verifies `jws` against `jwks` (a JWKS document) for `aud`; returns the claims.
pub fn verify(jws: &str, jwks: &[u8], aud: &str) -> Value {
    let set: JwkSet = serde_json::from_slice(jwks).unwrap();
    let header = jsonwebtoken::decode_header(jws).unwrap();
    let jwk = set.find(header.kid.as_deref().unwrap()).expect("kid in the JWKS");
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut v = Validation::new(header.alg);
    v.set_audience(&[aud]);
    v.set_issuer(&[ISSUER]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<Value>(jws, &key, &v).unwrap().claims
}

/// The claims of `jws` without verifying it (for times the real clock would reject).
pub fn claims(jws: &str) -> Value {
    use base64::Engine as _;
    let payload = jws.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap())
        .unwrap()
}

/// The JWKS as JSON.
pub fn jwks(stage: &AssertionStage) -> Value {
    serde_json::from_slice(&stage.jwks_json()).unwrap()
}
