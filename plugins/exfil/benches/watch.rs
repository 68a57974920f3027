//! Per-request cost of the exfiltration watch: `on_request` (block lookup) + `on_complete`
//! (window update) through the real stage, every detector on with default thresholds, over 10k
//! principals visited round-robin.
//!
//! `cargo bench -p phigate-exfil --bench watch`. Scenarios: `steady` (each principal re-reads the
//! same few patients: no alert), `churn` (a new patient every request: each principal goes over
//! `distinct_patients` once, later requests are de-duplicated), `blocked` (every principal is
//! blocked: `on_request` refuses), `steady_shared` (`steady` with `shared:` configured: no block
//! from another replica in force), and, for reference, `moka_lookup_only` (the principal-state
//! cache lookup alone) and `hmac_name_only` (the keyed hash naming a principal in Redis, which
//! `on_request` computes only while a block from another replica is in force).
//!
//! The phases never await anything, so they are polled once with a no-op waker instead of
//! through a runtime, so the runtime's own cost does not count.
//!
//! Measured numbers are in the crate README.

#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::hint::black_box;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, Method};
use phigate_exfil::{Action, ExfilConfig, ExfilStage, ManualClock, SharedConfig};
use phigate_plugin::{
    Decision, FhirRequest, Interaction, PatientId, Principal, RequestCtx, RequestId, RequestInfo, RouteMeta,
    Stage, StageBuildCtx, Subject, TenantId,
};

const PRINCIPALS: usize = 10_000;

fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the exfil stage never waits"),
    }
}

fn route() -> Arc<RouteMeta> {
    Arc::new(RouteMeta {
        name: "fhir".into(),
        index: 0,
        prefix: "/fhir".into(),
        fhir: true,
        upstream: "fhir".into(),
    })
}

fn principal(i: usize) -> Arc<Principal> {
    Arc::new(Principal {
        tenant: Some(TenantId::from("tenant-a")),
        roles: vec!["clinician".into()],
        session_id: Some(format!("s-{i}")),
        expires_at: i64::MAX,
        ..Principal::new("https://idp.test", Subject::from(format!("user-{i}").as_str()))
    })
}

/// A search of `Observation?patient=<patient>` returning 10 entries.
fn ctx(route: &Arc<RouteMeta>, p: &Arc<Principal>, patient: &str) -> RequestCtx {
    let info = RequestInfo {
        method: Method::GET,
        path: "/fhir/Observation".into(),
        query: Vec::new(),
        headers: HeaderMap::new(),
        body: None,
    };
    let mut ctx = RequestCtx::new(RequestId::new("bench"), route.clone(), info);
    let mut f = FhirRequest::new(Interaction::SearchType);
    f.resource_type = Some("Observation");
    f.patients = vec![PatientId::from(patient)];
    ctx.fhir = Some(f);
    ctx.principal = Some(p.clone());
    ctx.decision = Some(Decision { allow: true, ..Decision::default() });
    ctx.response.status = Some(200);
    ctx.response.entries = Some(10);
    ctx.response.forwarded = true;
    ctx
}

fn stage(dir: &Path, block: bool, shared: bool) -> ExfilStage {
    stage_with(dir, block, shared, false)
}

fn stage_with(dir: &Path, block: bool, shared: bool, off_hours: bool) -> ExfilStage {
    let mut c = ExfilConfig::new(dir.join("alerts.jsonl"));
    if off_hours {
        // Every request judged against working hours in a zone with daylight saving.
        c.off_hours.enabled = true;
        c.off_hours.time_zone = "America/Chicago".into();
    }
    if shared {
        // Never spawned, so never connected: this measures the request path alone.
        std::fs::write(dir.join("exfil.key"), [7u8; 32]).unwrap();
        c.shared = Some(SharedConfig::new("redis://127.0.0.1:1/0", dir.join("exfil.key")));
    }
    if block {
        c.distinct_patients.threshold = 1;
        c.distinct_patients.action = Action::Block;
    }
    let routes = vec![route()];
    let ctx = StageBuildCtx { routes: &routes, config_dir: dir };
    c.build_with_clock(&ctx, Arc::new(ManualClock::new())).unwrap()
}

fn once(stage: &ExfilStage, ctx: &mut RequestCtx) {
    let res = ready(stage.on_request(ctx));
    if let Err(d) = res {
        ctx.error = Some(d.code);
    }
    ready(stage.on_complete(ctx));
    ctx.error = None;
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let route = route();
    let principals: Vec<_> = (0..PRINCIPALS).map(principal).collect();
    let mut g = c.benchmark_group("exfil_request_10k_principals");

    let mut steady: Vec<RequestCtx> =
        principals.iter().enumerate().map(|(i, p)| ctx(&route, p, &format!("p{}", i % 7))).collect();
    for (name, shared, off_hours) in
        [("steady", false, false), ("steady_shared", true, false), ("steady_off_hours", false, true)]
    {
        let s = stage_with(tmp.path(), false, shared, off_hours);
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                once(&s, black_box(&mut steady[i % PRINCIPALS]));
                i += 1;
            })
        });
    }

    let s = stage(tmp.path(), false, false);
    let mut n = 0u64;
    g.bench_function("churn", |b| {
        b.iter(|| {
            n += 1;
            let p = &principals[n as usize % PRINCIPALS];
            let mut cx = ctx(&route, p, &format!("q{n}"));
            once(&s, black_box(&mut cx));
        })
    });

    let s = stage(tmp.path(), true, false);
    let mut blocked: Vec<RequestCtx> = principals.iter().map(|p| ctx(&route, p, "b1")).collect();
    for (k, cx) in blocked.iter_mut().enumerate() {
        once(&s, cx);
        let mut second = ctx(&route, &principals[k], "b2");
        once(&s, &mut second);
    }
    let mut probe = ctx(&route, &principals[0], "b3");
    assert!(ready(s.on_request(&mut probe)).is_err(), "the blocked scenario must refuse");
    let mut j = 0;
    g.bench_function("blocked", |b| {
        b.iter(|| {
            once(&s, black_box(&mut blocked[j % PRINCIPALS]));
            j += 1;
        })
    });

    // Reference: the principal-state lookup alone (same cache settings as the stage).
    let cache: moka::sync::Cache<(Arc<str>, Subject), Arc<std::sync::Mutex<u64>>> =
        moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_idle(std::time::Duration::from_secs(3601))
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .build();
    let keys: Vec<_> = principals.iter().map(|p| (p.issuer.clone(), p.subject.clone())).collect();
    let mut k = 0;
    g.bench_function("moka_lookup_only", |b| {
        b.iter(|| {
            let v = cache
                .get_with_by_ref(black_box(&keys[k % PRINCIPALS]), || Arc::new(std::sync::Mutex::new(0)));
            k += 1;
            black_box(v);
        })
    });

    // Reference: the keyed hash that names a principal in Redis (as the stage computes it).
    use hmac::{Hmac, Mac};
    let mac = Hmac::<sha2::Sha256>::new_from_slice(&[7u8; 32]).unwrap();
    let mut h = 0;
    g.bench_function("hmac_name_only", |b| {
        b.iter(|| {
            let p = &principals[h % PRINCIPALS];
            let mut m = mac.clone();
            for field in [p.issuer.as_bytes(), p.subject.as_str().as_bytes()] {
                m.update(&(field.len() as u64).to_be_bytes());
                m.update(field);
            }
            h += 1;
            black_box(m.finalize().into_bytes());
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
