//! Policy building, origin matching and preflight judgement.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method};

use super::*;

fn cfg(yaml: &str) -> CorsConfig {
    serde_yaml::from_str(yaml).unwrap()
}

fn policy(yaml: &str) -> Arc<CorsPolicy> {
    Arc::new(CorsPolicy::build(&cfg(yaml)).unwrap())
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap()
}

fn keys(problems: Vec<(String, String)>) -> Vec<String> {
    problems.into_iter().map(|(k, _)| k).collect()
}

#[test]
fn origins_match_exactly_as_browsers_send_them() {
    let p = policy("allowed_origins: ['HTTPS://App.Example:443', 'https://other.example:8443']");
    assert!(p.allows_origin(&hv("https://app.example")));
    assert!(p.allows_origin(&hv("https://other.example:8443")));
    for no in [
        "https://app.example:443",
        "https://app.example.evil",
        "https://evil.app.example",
        "http://app.example",
        "https://other.example",
        "null",
        "",
    ] {
        assert!(!p.allows_origin(&hv(no)), "{no} allowed");
    }
    assert!(policy("allowed_origins: ['*']").allows_origin(&hv("https://anything.example")));
}

#[test]
fn preflight_checks_origin_then_method_then_every_requested_header() {
    let p = policy("allowed_origins: [https://app.example]\nallowed_methods: [GET, POST]");
    let ok = hv("https://app.example");
    let asked = [hv("Authorization, content-type"), hv("DPoP")];
    assert_eq!(p.check_preflight(&ok, &hv("POST"), asked.iter()), Ok(()));
    assert_eq!(p.check_preflight(&ok, &hv("GET"), [].iter()), Ok(()));
    assert_eq!(p.check_preflight(&ok, &hv("GET"), [hv(" , ")].iter()), Ok(()));
    let evil = hv("https://evil.example");
    assert_eq!(p.check_preflight(&evil, &hv("GET"), [].iter()), Err(PreflightRefusal::Origin));
    assert_eq!(p.check_preflight(&ok, &hv("DELETE"), [].iter()), Err(PreflightRefusal::Method));
    assert_eq!(p.check_preflight(&ok, &hv("get"), [].iter()), Err(PreflightRefusal::Method));
    let extra = [hv("authorization, x-evil")];
    assert_eq!(p.check_preflight(&ok, &hv("GET"), extra.iter()), Err(PreflightRefusal::Header));
}

#[test]
fn inspect_tells_preflights_from_actual_requests() {
    let p = policy("allowed_origins: [https://app.example]");
    let mut h = HeaderMap::new();
    h.insert(http::header::ORIGIN, hv("https://app.example"));
    // An OPTIONS without Access-Control-Request-Method is an ordinary request.
    match inspect(&p, &Method::OPTIONS, &h) {
        CorsRequest::Actual(state) => assert_eq!(state.origin, Some(hv("https://app.example"))),
        other => panic!("{other:?}"),
    }
    h.insert(http::header::ACCESS_CONTROL_REQUEST_METHOD, hv("PUT"));
    assert!(matches!(inspect(&p, &Method::OPTIONS, &h), CorsRequest::Preflight(Ok(_))));
    assert!(matches!(inspect(&p, &Method::GET, &h), CorsRequest::Actual(_)));
    // Two Origin lines: no origin, so no preflight and no CORS headers.
    h.append(http::header::ORIGIN, hv("https://app.example"));
    match inspect(&p, &Method::OPTIONS, &h) {
        CorsRequest::Actual(state) => assert_eq!(state.origin, None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn header_values_are_joined_once_at_build() {
    let p = policy(
        "allowed_origins: [https://app.example]\nallowed_methods: [GET, PUT]\n\
         allowed_headers: [Authorization, dpop]\nexpose_headers: []\nmax_age_secs: 60",
    );
    assert_eq!(p.allow_methods, "GET, PUT");
    assert_eq!(p.allow_headers, Some(hv("authorization, dpop")));
    assert_eq!(p.expose_headers, None);
    assert_eq!(p.max_age, "60");
    let d = policy("allowed_origins: [https://app.example]");
    assert_eq!(d.allow_methods, "GET, HEAD, POST, PUT, PATCH, DELETE");
    let expose = d.expose_headers.clone().unwrap();
    for name in ["www-authenticate", "location", "etag", "dpop-nonce", "x-request-id", "ratelimit"] {
        assert!(expose.to_str().unwrap().split(", ").any(|n| n == name), "{name}");
    }
    assert!(!d.credentials);
}

#[test]
fn bad_blocks_are_refused_with_the_key() {
    assert_eq!(keys(cfg("allowed_origins: []").problems()), ["allowed_origins"]);
    assert_eq!(
        keys(cfg("allowed_origins: ['*']\nallow_credentials: true").problems()),
        ["allow_credentials"]
    );
    assert_eq!(keys(cfg("allowed_origins: ['*', 'https://a.example']").problems()), ["allowed_origins"]);
    assert_eq!(
        keys(cfg("allowed_origins: [https://a.example, https://b.example/x, 'ftp://c']").problems()),
        ["allowed_origins[1]", "allowed_origins[2]"]
    );
    assert_eq!(
        keys(
            cfg("allowed_origins: [https://a.example]\nallowed_methods: [GET, get, TRACE]\n\
                 allowed_headers: ['*', 'bad header']\nexpose_headers: ['x(']\nmax_age_secs: 86401")
            .problems()
        ),
        [
            "allowed_methods[1]",
            "allowed_methods[2]",
            "allowed_headers[0]",
            "allowed_headers[1]",
            "expose_headers[0]",
            "max_age_secs"
        ]
    );
    assert_eq!(
        keys(cfg("allowed_origins: [https://a.example]\nallowed_methods: []").problems()),
        ["allowed_methods"]
    );
    assert!(CorsPolicy::build(&cfg("allowed_origins: ['http://app.example']")).is_err());
    assert!(serde_yaml::from_str::<CorsConfig>("allowed_origins: []\nallow_origin: x").is_err());
}
