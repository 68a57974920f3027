//! The per-request cost of an identity assertion, per algorithm: a cache hit (the common case:
//! the same caller within half an assertion's lifetime) and a miss (a new signature).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // bench code

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use phigate_assertion::{AssertionConfig, AssertionStage, ManualClock};
use phigate_plugin::{PatientId, Principal, RouteMeta, StageBuildCtx};

fn stage(dir: &std::path::Path, alg: &'static rcgen::SignatureAlgorithm, now: i64) -> AssertionStage {
    let pem = rcgen::KeyPair::generate_for(alg).unwrap().serialize_pem();
    std::fs::write(dir.join("assertion.key"), pem).unwrap();
    let route = Arc::new(RouteMeta {
        name: "fhir".into(),
        index: 0,
        prefix: "/fhir".into(),
        fhir: true,
        upstream: "ehr".into(),
    });
    let routes = [route];
    let cfg = AssertionConfig::new("assertion.key", "https://phigate.example");
    cfg.build_with_clock(&StageBuildCtx { routes: &routes, config_dir: dir }, Arc::new(ManualClock::at(now)))
        .unwrap()
}

fn principal(now: i64) -> Principal {
    Principal {
        tenant: Some("acme".into()),
        roles: vec!["clinician".into()],
        fhir_user: Some("Practitioner/7".into()),
        patient: Some(PatientId::from("p-42")),
        session_id: Some("sess-1".into()),
        client_id: Some("ehr-app".into()),
        amr: vec!["pwd".into(), "otp".into()],
        auth_time: Some(now - 60),
        expires_at: now + 3600,
        ..Principal::new("https://idp.example", "alice")
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let now = 1_800_000_000;
    for (name, alg) in [("ed25519", &rcgen::PKCS_ED25519), ("es256", &rcgen::PKCS_ECDSA_P256_SHA256)] {
        let stage = stage(dir.path(), alg, now);
        let p = Arc::new(principal(now));
        stage.assertion(&p, 0).unwrap();
        c.bench_function(&format!("assertion/{name}/cache_hit"), |b| {
            b.iter(|| stage.assertion(std::hint::black_box(&p), 0).unwrap())
        });
        c.bench_function(&format!("assertion/{name}/sign_miss"), |b| {
            b.iter(|| stage.sign_uncached(std::hint::black_box(&p), "ehr").unwrap())
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
