//! Per-request cost of CORS: a preflight judged and its answer head built, and the decoration of
//! an ordinary response from an allowed origin (upstream `Access-Control-*` removed).

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use phigate::cors::{decorate, inspect, preflight_response, CorsConfig, CorsPolicy, CorsRequest};
use pingora::http::ResponseHeader;

fn policy() -> Arc<CorsPolicy> {
    let cfg: CorsConfig = serde_yaml::from_str(
        "allowed_origins: [https://portal.example.org, https://app.example, 'http://localhost:3000', \
         'https://*.apps.example.org']",
    )
    .expect("config");
    Arc::new(CorsPolicy::build(&cfg).expect("policy"))
}

fn bench(c: &mut Criterion) {
    let policy = policy();
    let mut g = c.benchmark_group("cors");
    let mut pre = HeaderMap::new();
    pre.insert("origin", HeaderValue::from_static("http://localhost:3000"));
    pre.insert("access-control-request-method", HeaderValue::from_static("GET"));
    pre.insert("access-control-request-headers", HeaderValue::from_static("authorization, dpop, prefer"));
    g.bench_function("preflight_allowed", |b| {
        b.iter(|| match inspect(&policy, &Method::OPTIONS, black_box(&pre)) {
            CorsRequest::Preflight(Ok(origin)) => preflight_response(&policy, &origin).expect("head"),
            other => panic!("{other:?}"),
        })
    });
    let mut get = HeaderMap::new();
    get.insert("origin", HeaderValue::from_static("https://app.example"));
    let mut upstream = ResponseHeader::build(200, Some(8)).expect("head");
    for (n, v) in [("content-type", "application/fhir+json"), ("etag", "W/\"1\""), ("content-length", "512")]
    {
        upstream.insert_header(n, v).expect("header");
    }
    g.bench_function("decorate_allowed_origin", |b| {
        b.iter(|| {
            let CorsRequest::Actual(state) = inspect(&policy, &Method::GET, black_box(&get)) else {
                panic!("not a preflight")
            };
            let mut resp = upstream.clone();
            decorate(&mut resp, &state).expect("decorated");
            resp
        })
    });
    // The last entry, a subdomain wildcard: every exact origin is compared first.
    let mut sub = HeaderMap::new();
    sub.insert("origin", HeaderValue::from_static("https://chart.west.apps.example.org"));
    g.bench_function("decorate_wildcard_origin", |b| {
        b.iter(|| {
            let CorsRequest::Actual(state) = inspect(&policy, &Method::GET, black_box(&sub)) else {
                panic!("not a preflight")
            };
            assert!(state.origin.is_some());
            let mut resp = upstream.clone();
            decorate(&mut resp, &state).expect("decorated");
            resp
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
