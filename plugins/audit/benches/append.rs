//! Durable appends per second and the wait a request sees in `on_request`, at 1, 64 and 512
//! concurrent writers, on the disk under `$TMPDIR` (default `/tmp`). Each measured call builds the
//! record from a full `RequestCtx`, queues it, and waits for its group commit (`fdatasync`).
//!
//! `cargo bench -p phigate-audit --bench append [-- SECONDS]` (default 3 s per level).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use phigate_audit::{generate_hmac_key, generate_signing_key, AuditConfig, AuditStage};
use phigate_plugin::{
    Decision, FhirRequest, Interaction, PatientId, Principal, QueryParam, RequestCtx, RequestId, RequestInfo,
    RouteMeta, Stage, StageBuildCtx, Subject, TenantId,
};

fn ctx(id: String) -> RequestCtx {
    let route = Arc::new(RouteMeta {
        name: "fhir".into(),
        index: 0,
        prefix: "/fhir".into(),
        fhir: true,
        upstream: "ehr".into(),
    });
    let request = RequestInfo {
        method: Method::GET,
        path: "/fhir/Observation".into(),
        query: vec![
            QueryParam { name: "patient".into(), value: "Patient/p1".into() },
            QueryParam { name: "code".into(), value: "8867-4".into() },
        ],
        headers: Default::default(),
        body: None,
    };
    let mut c = RequestCtx::new(RequestId::new(id), route, request);
    c.client.ip = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut f = FhirRequest::new(Interaction::SearchType);
    f.resource_type = Some("Observation");
    f.patients = vec![PatientId::new("p1")];
    c.fhir = Some(f);
    c.principal = Some(Arc::new(Principal {
        tenant: Some(TenantId::new("tenant-a")),
        session_id: Some("sid".into()),
        client_id: Some("app".into()),
        ..Principal::new("https://idp.example", Subject::new("dr-alice"))
    }));
    c.decision = Some(Decision {
        allow: true,
        reasons: vec!["care_team".into()],
        revision: "r1".into(),
        obligations: Default::default(),
        shadow: None,
    });
    c
}

fn stage(dir: &std::path::Path) -> AuditStage {
    generate_signing_key(&dir.join("k.pem")).expect("key");
    generate_hmac_key(&dir.join("h.key")).expect("hmac key");
    let mut cfg = AuditConfig::new(dir.join("audit"), dir.join("k.pem"));
    cfg.hmac_key_path = Some(dir.join("h.key"));
    cfg.max_wait_ms = std::num::NonZeroU32::new(10_000).expect("nonzero");
    cfg.build(&StageBuildCtx { routes: &[], config_dir: dir }).expect("build")
}

/// (batches, seconds spent in write + fdatasync) so far, from the stage's own metrics.
fn sync_totals() -> (u64, f64) {
    let mut out = (0, 0.0);
    for f in prometheus::gather() {
        for m in f.get_metric() {
            match f.name() {
                "phigate_audit_batches_total" => out.0 += m.get_counter().get_value() as u64,
                "phigate_audit_fsync_seconds" => out.1 += m.get_histogram().get_sample_sum(),
                _ => {}
            }
        }
    }
    out
}

async fn level(writers: usize, run_for: Duration) {
    let (batches0, sync0) = sync_totals();
    let tmp = tempfile::tempdir().expect("tempdir");
    let stage = Arc::new(stage(tmp.path()));
    let start = Instant::now();
    let stop = start + run_for;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let stage = stage.clone();
        tasks.push(tokio::spawn(async move {
            let mut waits = Vec::with_capacity(1 << 16);
            let mut c = ctx(format!("bench-{w}"));
            while Instant::now() < stop {
                let t0 = Instant::now();
                stage.on_request(&mut c).await.expect("durable append");
                waits.push(t0.elapsed());
            }
            waits
        }));
    }
    let mut waits = Vec::new();
    for t in tasks {
        waits.extend(t.await.expect("task"));
    }
    let elapsed = start.elapsed();
    waits.sort();
    let pct = |p: f64| waits[((waits.len() as f64 * p) as usize).min(waits.len() - 1)];
    println!(
        "writers {writers:>4}: {:>8.0} durable records/s ({} in {:.2}s)  wait p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms",
        waits.len() as f64 / elapsed.as_secs_f64(),
        waits.len(),
        elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        waits.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    let (batches, sync) = sync_totals();
    let (batches, sync) = (batches - batches0, sync - sync0);
    println!(
        "              {batches} group commits, {:.0} records each, write+fdatasync {:.3} ms each, writer busy {:.0}%",
        waits.len() as f64 / batches.max(1) as f64,
        sync * 1e3 / batches.max(1) as f64,
        sync * 100.0 / elapsed.as_secs_f64(),
    );
}

fn main() {
    let secs = std::env::args().skip(1).find_map(|a| a.parse::<u64>().ok()).unwrap_or(3);
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    for writers in [1, 64, 512] {
        rt.block_on(level(writers, Duration::from_secs(secs)));
    }
}
