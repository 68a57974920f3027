//! Builders for request contexts and stages over the shipped policies (real Rego, real stage).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method};
use phigate_plugin::{
    FhirRequest, Interaction, PatientId, Principal, QueryParam, RequestCtx, RequestId, RequestInfo,
    RouteMeta, StageBuildCtx, Subject, TenantId, UnresolvedParam,
};
use phigate_policy::{PolicyConfig, PolicyStage};

/// The repository's `policies/` directory.
pub fn shipped_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

/// Copies the shipped policies into a fresh temporary directory (for reload tests).
pub fn policies_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&shipped_policies(), tmp.path());
    tmp
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

pub fn build(config: PolicyConfig) -> PolicyStage {
    let routes = vec![route()];
    let ctx = StageBuildCtx { routes: &routes, config_dir: Path::new("/") };
    config.build(&ctx).unwrap()
}

/// A stage over `dir` with the watcher off (tests drive reloads themselves).
pub fn stage_at(dir: &Path) -> PolicyStage {
    let mut c = PolicyConfig::new(dir);
    c.watch = false;
    // Debug builds of regorus on a shared 2-core machine are slow; speed is the bench's business.
    c.max_eval_ms = 10_000;
    build(c)
}

/// One stage over the shipped policies, shared by the tests of a binary (building one runs the
/// policy tests, which is slow in debug builds).
pub fn stage() -> &'static PolicyStage {
    static STAGE: std::sync::OnceLock<PolicyStage> = std::sync::OnceLock::new();
    STAGE.get_or_init(|| stage_at(&shipped_policies()))
}

pub fn route() -> Arc<RouteMeta> {
    Arc::new(RouteMeta {
        name: "fhir".into(),
        index: 0,
        prefix: "/fhir".into(),
        fhir: true,
        upstream: "fhir".into(),
    })
}

pub fn principal(sub: &str, tenant: &str, roles: &[&str], scopes: &[&str]) -> Arc<Principal> {
    Arc::new(Principal {
        tenant: Some(TenantId::from(tenant)),
        roles: roles.iter().map(|s| s.to_string()).collect(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        amr: vec!["mfa".into()],
        auth_time: Some(1_700_000_000),
        expires_at: 1_900_000_000,
        ..Principal::new("https://issuer.test", Subject::from(sub))
    })
}

pub fn clinician_a() -> Arc<Principal> {
    principal("clinician_a", "tenant-a", &["clinician"], &["user/*.rs"])
}
pub fn clinician_b() -> Arc<Principal> {
    principal("clinician_b", "tenant-b", &["clinician"], &["user/*.rs"])
}
pub fn er_doctor_a() -> Arc<Principal> {
    principal("er_doctor_a", "tenant-a", &["clinician", "break_glass"], &["user/*.rs"])
}

pub fn fhir(interaction: Interaction, rt: &str, id: Option<&str>, patients: &[&str]) -> FhirRequest {
    let mut f = FhirRequest::new(interaction);
    f.resource_type = phigate_static(rt);
    f.id = id.map(str::to_owned);
    f.patients = patients.iter().map(|p| PatientId::from(*p)).collect();
    f
}

/// `FhirRequest::resource_type` is `&'static str` (the gateway validates against the R4 list).
fn phigate_static(rt: &str) -> Option<&'static str> {
    const TYPES: &[&str] =
        &["Patient", "Observation", "Encounter", "Practitioner", "Organization", "Group", "Device"];
    TYPES.iter().copied().find(|t| *t == rt)
}

pub fn unresolved(mut f: FhirRequest, name: &str) -> FhirRequest {
    f.unresolved.push(UnresolvedParam { name: name.into() });
    f
}

/// A context as the gateway hands it to the policy stage.
pub fn ctx(method: Method, path: &str, principal: Arc<Principal>, f: FhirRequest) -> RequestCtx {
    let info =
        RequestInfo { method, path: path.into(), query: Vec::new(), headers: HeaderMap::new(), body: None };
    let mut c = RequestCtx::new(RequestId::new("req-1"), route(), info);
    c.tenant = principal.tenant.clone();
    c.principal = Some(principal);
    c.fhir = Some(f);
    c
}

pub fn get(path: &str, principal: Arc<Principal>, f: FhirRequest) -> RequestCtx {
    ctx(Method::GET, path, principal, f)
}

pub fn with_header(mut c: RequestCtx, name: &'static str, value: &str) -> RequestCtx {
    c.request.headers.append(name, HeaderValue::from_str(value).unwrap());
    c
}

pub fn query(c: &RequestCtx, name: &str) -> Option<String> {
    c.request.query.iter().find(|p: &&QueryParam| p.name == name).map(|p| p.value.clone())
}

/// The value of counter `name` summed over the series whose `label` is `value` (process-wide:
/// a test reading one is alone in its binary).
pub fn counter(name: &str, label: &str, value: &str) -> u64 {
    prometheus::gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| m.get_label().iter().any(|l| l.name() == label && l.value() == value))
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}
