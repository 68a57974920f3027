//! Shared builders for the audit stage's tests: real key files, a real stage on a temp dir, and
//! request contexts as the gateway builds them.
#![allow(dead_code, unreachable_pub)] // each test crate uses a subset
#![allow(clippy::unwrap_used)] // test helpers: a failure here is a test failure

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method};
use phigate_audit::{generate_signing_key, write_public_key, AuditConfig, AuditStage};
use phigate_plugin::{
    Decision, ErrorCode, FhirRequest, Interaction, PatientId, Principal, QueryParam, RequestCtx, RequestId,
    RequestInfo, RouteMeta, StageBuildCtx, Subject, TenantId,
};

pub const TOKEN: &str = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJkci1hbGljZSJ9.c2VjcmV0LXNpZ25hdHVyZQ";
pub const SEARCHED_NAME: &str = "Zanzibar-Smithereen";

/// A temp dir with a signing key, its public key, and an audit dir path inside.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub audit_dir: PathBuf,
    pub key: PathBuf,
    pub public_key: PathBuf,
}

impl Env {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("audit-signing.pem");
        let public_key = tmp.path().join("audit-signing.pub.pem");
        let vk = generate_signing_key(&key).unwrap();
        write_public_key(&public_key, &vk).unwrap();
        let hmac = tmp.path().join("query-hmac.key");
        phigate_audit::generate_hmac_key(&hmac).unwrap();
        Env { audit_dir: tmp.path().join("audit"), tmp, key, public_key }
    }

    pub fn config(&self) -> AuditConfig {
        config_at(self.tmp.path())
    }

    pub fn stage(&self) -> AuditStage {
        build(self.config(), self.tmp.path())
    }

    pub fn segments(&self) -> Vec<PathBuf> {
        segments(&self.audit_dir)
    }

    pub fn lines(&self) -> Vec<serde_json::Value> {
        lines(&self.audit_dir)
    }
}

/// The config of an [`Env`] rooted at `tmp` (also used by re-executed child processes).
pub fn config_at(tmp: &Path) -> AuditConfig {
    let mut c = AuditConfig::new(tmp.join("audit"), tmp.join("audit-signing.pem"));
    c.hmac_key_path = Some(tmp.join("query-hmac.key"));
    c.max_wait_ms = std::num::NonZeroU32::new(5_000).unwrap();
    c
}

pub fn build(config: AuditConfig, config_dir: &Path) -> AuditStage {
    let ctx = StageBuildCtx { routes: &[], config_dir };
    config.build(&ctx).unwrap()
}

pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.starts_with("seg-") && n.ends_with(".jsonl")
        })
        .collect();
    v.sort();
    v
}

/// Every complete line of every segment, parsed.
pub fn lines(dir: &Path) -> Vec<serde_json::Value> {
    segments(dir)
        .iter()
        .flat_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect::<Vec<serde_json::Value>>()
        })
        .collect()
}

pub fn access(dir: &Path, request_id: &str) -> Vec<serde_json::Value> {
    lines(dir).into_iter().filter(|l| l["kind"] == "access" && l["request_id"] == request_id).collect()
}

pub fn route() -> Arc<RouteMeta> {
    Arc::new(RouteMeta {
        name: "fhir".into(),
        index: 0,
        prefix: "/fhir".into(),
        fhir: true,
        upstream: "ehr".into(),
    })
}

pub fn principal() -> Arc<Principal> {
    Arc::new(Principal {
        tenant: Some(TenantId::new("tenant-a")),
        roles: vec!["clinician".into()],
        scopes: vec!["user/Observation.read".into()],
        fhir_user: Some("Practitioner/77".into()),
        session_id: Some("sid-123".into()),
        client_id: Some("ehr-app".into()),
        amr: vec!["pwd".into(), "otp".into()],
        auth_time: Some(1_700_000_000),
        expires_at: 1_900_000_000,
        ..Principal::new("https://idp.example", Subject::new("dr-alice"))
    })
}

/// `GET /fhir/Observation?patient=Patient/p1&name=<name>&_count=10` as the gateway hands it to
/// the last stage: identified, allowed by policy, with a bearer token in the headers.
pub fn read_ctx(id: &str) -> RequestCtx {
    let mut headers = HeaderMap::new();
    headers.insert("authorization", HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap());
    let request = RequestInfo {
        method: Method::GET,
        path: "/fhir/Observation".into(),
        query: vec![
            QueryParam { name: "patient".into(), value: "Patient/p1".into() },
            QueryParam { name: "name".into(), value: SEARCHED_NAME.into() },
            QueryParam { name: "_count".into(), value: "10".into() },
        ],
        headers,
        body: None,
    };
    let mut ctx = RequestCtx::new(RequestId::new(id), route(), request);
    ctx.client.ip = Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
    ctx.client.cert_thumbprint = Some("x5t-thumb".into());
    let mut fhir = FhirRequest::new(Interaction::SearchType);
    fhir.resource_type = Some("Observation");
    fhir.patients = vec![PatientId::new("p1")];
    fhir.count = Some(10);
    ctx.fhir = Some(fhir);
    ctx.tenant = Some(TenantId::new("tenant-a"));
    ctx.principal = Some(principal());
    ctx.decision = Some(Decision {
        allow: true,
        reasons: vec!["care_team".into()],
        revision: "rev-abc".into(),
        obligations: Default::default(),
        shadow: None,
    });
    ctx
}

/// Marks `ctx` as forwarded and answered by the upstream.
pub fn answered(ctx: &mut RequestCtx, status: u16) {
    ctx.response.forwarded = true;
    ctx.response.status = Some(status);
    ctx.response.bytes_out = 1234;
    ctx.response.entries = Some(3);
    ctx.response.upstream_latency = Some(Duration::from_micros(850));
}

/// Marks `ctx` as refused before forwarding with `code`.
pub fn refused(ctx: &mut RequestCtx, code: ErrorCode) {
    ctx.error = Some(code);
    ctx.response.status = Some(code.status().as_u16());
    ctx.response.forwarded = false;
}
