//! Shared builders: a real stage on a temp alerts file with a manual clock, principals, and
//! request contexts as the gateway fills them on the response path.
#![allow(dead_code, unreachable_pub, unused_imports)] // each test crate uses a subset
#![allow(clippy::unwrap_used)]

pub mod redis_server;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method};
use phigate_exfil::{ExfilConfig, ExfilStage, ManualClock};
use phigate_plugin::{
    Decision, ErrorCode, FhirRequest, Flow, Interaction, PatientId, Principal, RequestCtx, RequestId,
    RequestInfo, RouteMeta, Stage, StageBuildCtx, Subject, TenantId,
};

pub const ISSUER: &str = "https://idp.test";

/// A stage under test: its temp dir, clock and alerts file.
pub struct Harness {
    pub tmp: tempfile::TempDir,
    pub clock: ManualClock,
    pub stage: ExfilStage,
}

/// Every detector off, so each test turns on exactly the one it exercises.
pub fn quiet_config(path: &Path) -> ExfilConfig {
    let mut c = ExfilConfig::new(path);
    c.distinct_patients.enabled = false;
    c.bulk_paging.enabled = false;
    c.id_enumeration.enabled = false;
    c.rate_denials.enabled = false;
    c.policy_alerts.enabled = false;
    c
}

impl Harness {
    /// A stage built from `edit(quiet_config)`, alerts in `<tmp>/alerts.jsonl`.
    pub fn new(edit: impl FnOnce(&mut ExfilConfig)) -> Self {
        Self::with_clock(ManualClock::new(), edit)
    }

    /// [`Harness::new`] on a given clock (time-of-day rules).
    pub fn with_clock(clock: ManualClock, edit: impl FnOnce(&mut ExfilConfig)) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = quiet_config(Path::new("alerts.jsonl"));
        edit(&mut cfg);
        let routes = vec![route()];
        let ctx = StageBuildCtx { routes: &routes, config_dir: tmp.path() };
        let stage = cfg.build_with_clock(&ctx, Arc::new(clock.clone())).unwrap();
        Harness { tmp, clock, stage }
    }

    pub fn alerts_path(&self) -> PathBuf {
        self.tmp.path().join("alerts.jsonl")
    }

    /// Spawns the writer task on the test runtime.
    pub fn spawn_writer(&self) {
        for t in self.stage.background_tasks() {
            tokio::spawn(t);
        }
    }

    /// Runs one request through both phases, as the gateway does after policy allowed it.
    pub async fn run(&self, mut ctx: RequestCtx) -> Result<(), ErrorCode> {
        let res = match self.stage.on_request(&mut ctx).await {
            Ok(Flow::Continue) => Ok(()),
            Ok(Flow::Respond(_)) => panic!("exfil never answers locally"),
            Err(d) => {
                ctx.error = Some(d.code);
                Err(d.code)
            }
        };
        self.stage.on_complete(&ctx).await;
        res
    }

    /// Flushes and reads every alert line back.
    pub async fn alerts(&self) -> Vec<serde_json::Value> {
        self.stage.flush().await.unwrap();
        let text = std::fs::read_to_string(self.alerts_path()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    pub fn advance_secs(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }
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

pub fn principal(sub: &str) -> Arc<Principal> {
    principal_of(ISSUER, sub)
}

pub fn principal_of(iss: &str, sub: &str) -> Arc<Principal> {
    Arc::new(Principal {
        tenant: Some(TenantId::from("tenant-a")),
        roles: vec!["clinician".into()],
        scopes: vec!["user/*.rs".into()],
        fhir_user: Some("Practitioner/pr1".into()),
        session_id: Some("sess-1".into()),
        client_id: Some("ehr-app".into()),
        amr: vec!["pwd".into(), "mfa".into()],
        expires_at: i64::MAX,
        ..Principal::new(iss, Subject::from(sub))
    })
}

fn base(p: &Arc<Principal>, fhir: FhirRequest, status: u16) -> RequestCtx {
    let info = RequestInfo {
        method: Method::GET,
        path: "/fhir/x".into(),
        query: Vec::new(),
        headers: HeaderMap::new(),
        body: None,
    };
    let mut ctx =
        RequestCtx::new(RequestId::new(format!("req-{}", fhir.id.as_deref().unwrap_or("s"))), route(), info);
    ctx.client.ip = Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
    ctx.tenant = Some(TenantId::from("tenant-a"));
    ctx.principal = Some(p.clone());
    ctx.decision = Some(Decision { allow: true, ..Decision::default() });
    ctx.fhir = Some(fhir);
    ctx.response.status = Some(status);
    ctx.response.forwarded = true;
    ctx
}

/// `GET Resource/id` answered with `status`; a `Patient` read names that patient.
pub fn read(p: &Arc<Principal>, resource_type: &'static str, id: &str, status: u16) -> RequestCtx {
    let mut f = FhirRequest::new(Interaction::Read);
    f.resource_type = Some(resource_type);
    f.id = Some(id.into());
    if resource_type == "Patient" {
        f.patients = vec![PatientId::from(id)];
    }
    base(p, f, status)
}

/// A search naming `patients`, returning `entries` Bundle entries with `status`.
pub fn search(p: &Arc<Principal>, patients: &[&str], entries: Option<u32>, status: u16) -> RequestCtx {
    let mut f = FhirRequest::new(Interaction::SearchType);
    f.resource_type = Some("Observation");
    f.patients = patients.iter().map(|s| PatientId::from(*s)).collect();
    let mut ctx = base(p, f, status);
    ctx.response.entries = entries;
    ctx
}

/// Rule names of the alerts, in file order.
pub fn rules(alerts: &[serde_json::Value]) -> Vec<String> {
    alerts.iter().map(|a| a["rule"].as_str().unwrap().to_owned()).collect()
}
