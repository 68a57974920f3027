//! Decision latency of the shipped policies through the real stage (input build + regorus
//! evaluation + decision parsing), with the decision cache off and on; plus the evaluation
//! strategy: interpreter with a fresh clone of the prepared engine per evaluation, interpreter
//! reusing a warm engine, and bytecode (RVM) on a reused VM (what the stage serves with).
//!
//! `cargo bench -p phigate-policy --bench decide`. Besides criterion's estimates it prints
//! p50/p99 per scenario from a separate timed loop (criterion reports means, not tails).
//!
//! Measured 2026-12-07 on the shared 2-core dev machine: decision with cache off p50 23-26 µs,
//! p99 36-51 µs (the tail is this VM's noise as much as the policy's); a tenant-wide read with
//! 50,000 patients in the tenant p50 22-23 µs (it was 58 ms when the policies listed the
//! tenant); cache hit p50 2.6-3.4 µs, p99 4.8-6.6 µs. regorus' VM alone, outside the stage, takes
//! p50 ~21-23 µs of that (the `allow` rule alone ~17 µs: 17 `deny` bodies over many small rule
//! calls). See load-tests/results/microbench.md.
//! Strategies for one evaluation: interpreter cloning the prepared engine ~460 µs, interpreter
//! reusing a warm engine ~420-900 µs (noisy), bytecode on a reused VM ~50-90 µs; the stage serves
//! from a pool of VMs.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, Method};
use phigate_plugin::{
    FhirRequest, Interaction, PatientId, Principal, RequestCtx, RequestId, RequestInfo, RouteMeta,
    StageBuildCtx, Subject, TenantId,
};
use phigate_policy::{PolicyConfig, PolicyStage};

fn policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

fn stage(cache: bool) -> PolicyStage {
    stage_at(policies(), cache)
}

fn stage_at(dir: PathBuf, cache: bool) -> PolicyStage {
    let mut c = PolicyConfig::new(dir);
    c.watch = false;
    c.decision_cache.enabled = cache;
    // The time limit is not what this measures (the limit's check still runs on every call); CI
    // runs this bench once as a test, in a debug build on a busy 2-core machine, where a
    // preempted evaluation could pass the default limit and fail the run.
    c.max_eval_ms = 10_000;
    let routes = vec![route()];
    let ctx = StageBuildCtx { routes: &routes, config_dir: Path::new("/") };
    c.build(&ctx).expect("policies load")
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

fn clinician() -> Arc<Principal> {
    Arc::new(Principal {
        tenant: Some(TenantId::from("tenant-a")),
        roles: vec!["clinician".into()],
        scopes: vec!["user/*.rs".into()],
        fhir_user: Some("Practitioner/pr1".into()),
        session_id: Some("s1".into()),
        client_id: Some("ehr".into()),
        amr: vec!["pwd".into(), "otp".into()],
        auth_time: Some(1_700_000_000),
        expires_at: 1_900_000_000,
        ..Principal::new("https://issuer.test", Subject::from("clinician_a"))
    })
}

fn ctx(interaction: Interaction, rt: &'static str, id: Option<&str>, patients: &[&str]) -> RequestCtx {
    let info = RequestInfo {
        method: Method::GET,
        path: "/fhir/x".into(),
        query: Vec::new(),
        headers: HeaderMap::new(),
        body: None,
    };
    let mut c = RequestCtx::new(RequestId::new("bench"), route(), info);
    let mut f = FhirRequest::new(interaction);
    f.resource_type = Some(rt);
    f.id = id.map(str::to_owned);
    f.patients = patients.iter().map(|p| PatientId::from(*p)).collect();
    c.tenant = Some(TenantId::from("tenant-a"));
    c.principal = Some(clinician());
    c.fhir = Some(f);
    c
}

fn scenarios() -> Vec<(&'static str, RequestCtx)> {
    vec![
        ("read_care_team", ctx(Interaction::Read, "Patient", Some("a-p1"), &["a-p1"])),
        ("search_narrowed", ctx(Interaction::SearchType, "Observation", None, &[])),
        ("read_foreign_denied", ctx(Interaction::Read, "Patient", Some("a-p3"), &["a-p3"])),
    ]
}

fn percentiles(name: &str, mut f: impl FnMut()) {
    const N: usize = 20_000;
    for _ in 0..1_000 {
        f();
    }
    let mut samples: Vec<Duration> = (0..N)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    samples.sort_unstable();
    let p = |q: f64| samples[((N as f64 * q) as usize).min(N - 1)];
    println!("{name:<40} p50 {:>8.2?}  p99 {:>8.2?}  p99.9 {:>8.2?}", p(0.50), p(0.99), p(0.999));
}

/// The shipped policies (without their tests, which count the tenant) with `TENANT_PATIENTS`
/// more patients in tenant-a's data.
fn large_tenant() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(policies()).expect("policies") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name").to_string_lossy().to_string();
        if (name.ends_with(".rego") && !name.ends_with("_test.rego")) || name == "probes.json" {
            std::fs::copy(&path, dir.path().join(&name)).expect("copy");
        }
    }
    std::fs::create_dir(dir.path().join("data")).expect("data dir");
    for entry in std::fs::read_dir(policies().join("data")).expect("data") {
        let path = entry.expect("entry").path();
        let target = dir.path().join("data").join(path.file_name().expect("name"));
        if path.file_name().is_some_and(|n| n == "tenants.json") {
            let text = std::fs::read_to_string(&path).expect("read");
            let mut doc: serde_json::Value = serde_json::from_str(&text).expect("json");
            let patients = doc["patients"].as_object_mut().expect("patients");
            for i in 0..TENANT_PATIENTS {
                patients.insert(format!("a-x{i}"), serde_json::json!({"tenant": "tenant-a"}));
            }
            std::fs::write(target, doc.to_string()).expect("write");
        } else {
            std::fs::copy(&path, target).expect("copy");
        }
    }
    dir
}

/// Patients added to tenant-a for the tenant-wide scenario: a decision for a principal that
/// reaches the whole tenant must not grow with it.
const TENANT_PATIENTS: usize = 50_000;

fn service() -> Arc<Principal> {
    Arc::new(Principal {
        tenant: Some(TenantId::from("tenant-a")),
        scopes: vec!["system/*.read".into()],
        client_id: Some("svc".into()),
        expires_at: 1_900_000_000,
        ..Principal::new("https://issuer.test", Subject::from("svc"))
    })
}

fn decide(c: &mut Criterion) {
    {
        let dir = large_tenant();
        let stage = stage_at(dir.path().to_path_buf(), false);
        let mut rc = ctx(Interaction::Read, "Patient", Some("a-x777"), &["a-x777"]);
        rc.principal = Some(service());
        let name = "decide/cache_off/tenant_wide_read_50k_patients";
        c.bench_function(name, |b| b.iter(|| black_box(stage.decide(black_box(&rc)).expect("decides"))));
        percentiles(name, || {
            black_box(stage.decide(&rc).expect("decides"));
        });
    }
    for cache in [false, true] {
        let stage = stage(cache);
        let label = if cache { "cache_on" } else { "cache_off" };
        for (name, rc) in scenarios() {
            c.bench_function(&format!("decide/{label}/{name}"), |b| {
                b.iter(|| black_box(stage.decide(black_box(&rc)).expect("decides")))
            });
            percentiles(&format!("decide/{label}/{name}"), || {
                black_box(stage.decide(&rc).expect("decides"));
            });
        }
    }
}

/// The serving engine built by hand with regorus, to compare evaluation strategies.
fn engine() -> regorus::Engine {
    let mut e = regorus::Engine::new();
    for entry in std::fs::read_dir(policies().join("data")).expect("data") {
        let p = entry.expect("entry").path();
        let text = std::fs::read_to_string(&p).expect("read");
        let v: serde_json::Value = if p.extension().is_some_and(|x| x == "json") {
            serde_json::from_str(&text).expect("json")
        } else {
            serde_yaml::from_str(&text).expect("yaml")
        };
        e.add_data(regorus::Value::from(v)).expect("data");
    }
    e.add_data(
        regorus::Value::from_json_str(r#"{"gateway":{"break_glass_role":"break_glass"}}"#).expect("gw"),
    )
    .expect("gw");
    for entry in std::fs::read_dir(policies()).expect("dir") {
        let p = entry.expect("entry").path();
        let name = p.to_string_lossy().to_string();
        if name.ends_with(".rego") && !name.ends_with("_test.rego") {
            e.add_policy_from_file(&p).expect("policy");
        }
    }
    e
}

const INPUT: &str = r#"{"v":1,"principal":{"sub":"clinician_a","tenant":"tenant-a","roles":["clinician"],"scopes":["user/*.rs"],"amr":[],"cert_bound":false},
 "request":{"method":"GET","route":"fhir","path":"/fhir/Patient/a-p1","tenant":"tenant-a","patients":["a-p1"],"prefer":[],
 "fhir":{"interaction":"read","resource_type":"Patient","id":"a-p1","patients":["a-p1"],"unresolved":[],"entries":[]}},"client":{},"time":{"unix_secs":1}}"#;

fn strategies(c: &mut Criterion) {
    let rule = "data.phigate.authz.decision".to_string();
    let input = regorus::Value::from_json_str(INPUT).expect("input");
    let mut prepared = engine();
    prepared.set_input(input.clone());
    prepared.eval_rule(rule.clone()).expect("prepares");
    c.bench_function("engine/clone_per_eval", |b| {
        b.iter(|| {
            let mut e = prepared.clone();
            e.set_input(input.clone());
            black_box(e.eval_rule(rule.clone()).expect("eval"))
        })
    });
    let mut warm = prepared.clone();
    c.bench_function("engine/reuse_warm", |b| {
        b.iter(|| {
            warm.set_input(input.clone());
            black_box(warm.eval_rule(rule.clone()).expect("eval"))
        })
    });
    // What the stage serves with: bytecode on a reused VM.
    let compiled = prepared.clone().compile_with_entrypoint(&rule.as_str().into()).expect("compiles");
    let program =
        regorus::languages::rego::compiler::Compiler::compile_from_policy(&compiled, &[rule.as_str()])
            .expect("bytecode");
    let mut vm = regorus::rvm::vm::RegoVM::new();
    vm.load_program(program);
    vm.set_data(prepared.get_data()).expect("data");
    vm.set_max_instructions(5_000_000);
    c.bench_function("rvm/reuse_warm", |b| {
        b.iter(|| {
            vm.set_input(input.clone());
            black_box(vm.execute().expect("eval"))
        })
    });
}

criterion_group!(benches, decide, strategies);
criterion_main!(benches);
