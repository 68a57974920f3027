//! Per-request cost of the request model: normalize + classify for typical FHIR requests.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::Method;
use phigate::request::{classify, normalize_target, preload, TargetLimits};

fn batch_body() -> String {
    let mut entries = Vec::new();
    for i in 0..10 {
        entries.push(match i % 4 {
            0 => format!(r#"{{"request":{{"method":"GET","url":"Patient/p{i}"}}}}"#),
            1 => format!(r#"{{"request":{{"method":"GET","url":"Observation?patient=p{i}&_count=20"}}}}"#),
            2 => format!(
                r#"{{"resource":{{"resourceType":"Observation","status":"final",
                "code":{{"coding":[{{"system":"http://loinc.org","code":"8867-4"}}]}},
                "subject":{{"reference":"Patient/p{i}"}},"valueQuantity":{{"value":72}}}},
                "request":{{"method":"POST","url":"Observation"}}}}"#
            ),
            _ => format!(r#"{{"request":{{"method":"GET","url":"Patient/p{i}/Condition"}}}}"#),
        });
    }
    format!(r#"{{"resourceType":"Bundle","type":"batch","entry":[{}]}}"#, entries.join(","))
}

fn bench(c: &mut Criterion) {
    let limits = TargetLimits::default();
    preload().expect("compartment definition");
    let mut g = c.benchmark_group("normalize_classify");
    let cases: [(&str, &[u8]); 3] = [
        ("read_by_id", b"/Patient/123"),
        ("search_patient_count", b"/Observation?patient=Patient%2F123&code=8867-4&_count=50"),
        ("compartment_search", b"/Patient/123/Observation?category=vital-signs&_count=20"),
    ];
    for (name, raw) in cases {
        g.bench_function(name, |b| {
            b.iter(|| {
                let t = normalize_target(black_box(raw), &limits).expect("normalizes");
                classify(&Method::GET, &t.path, &t.query, None, None).expect("classifies")
            })
        });
    }
    let body = batch_body();
    let ct = Some("application/fhir+json");
    g.bench_function("batch_10_entries", |b| {
        b.iter(|| {
            let t = normalize_target(black_box(b"/"), &limits).expect("normalizes");
            classify(&Method::POST, &t.path, &t.query, Some(black_box(body.as_bytes())), ct)
                .expect("classifies")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
