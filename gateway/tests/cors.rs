//! CORS for browser apps, end to end through the whole pipeline (identity, policy, audit) in
//! front of the sample upstream over mTLS: the gateway answers preflights itself (never
//! forwarded, no token), puts its own policy on every response of a CORS route (the upstream's
//! `Access-Control-*` headers are replaced) including its own 401/403 errors, and leaves routes
//! without `cors:` exactly as they were.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod common;

use std::path::Path;

use common::{admin_get, error_code, FullEnv};
use phigate::config::{load_from_str, validate, ValidateOptions};
use phigate_test_support::{TestClient, TestResponse};

const APP: &str = "https://app.example";
const DEFAULT_ALLOW_HEADERS: &str = "accept, authorization, content-type, dpop, if-match, \
     if-modified-since, if-none-exist, if-none-match, prefer, traceparent, tracestate, x-break-glass-reason";
const PREFLIGHT_VARY: &str = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// The full pipeline; route `fhir` with a CORS policy for [`APP`], route `cred` (same upstream)
/// allowing credentials for another origin, route `api` without CORS.
async fn start() -> FullEnv {
    FullEnv::start_edited(
        |_| {},
        "",
        "",
        |cfg, _| {
            common::replace_fhir_route(
            &cfg,
            "  - name: fhir\n    path_prefix: /fhir\n    upstream: fhir\n    fhir: true\n    cors:\n      \
             allowed_origins: [https://app.example, 'http://localhost:3000']\n      \
             allowed_methods: [GET, HEAD, POST, PUT]\n      max_age_secs: 300\n  \
             - name: cred\n    path_prefix: /cred\n    upstream: fhir\n    upstream_path_prefix: /fhir\n    \
             fhir: true\n    cors: { allowed_origins: [https://portal.example, 'https://*.apps.example'], \
             allow_credentials: true }\n",
        )
        },
    )
    .await
}

async fn preflight(
    client: &TestClient,
    url: &str,
    origin: &str,
    method: &str,
    headers: &str,
) -> TestResponse {
    let mut req = client
        .request(http::Method::OPTIONS, url)
        .header("origin", origin)
        .header("access-control-request-method", method);
    if !headers.is_empty() {
        req = req.header("access-control-request-headers", headers);
    }
    req.send().await.unwrap()
}

/// Every `access-control-*` header of a response, as `name: value` lines.
fn cors_headers(res: &TestResponse) -> Vec<String> {
    res.headers
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("access-control-"))
        .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
        .collect()
}

fn vary(res: &TestResponse) -> Vec<&str> {
    res.headers.get_all("vary").iter().flat_map(|v| v.to_str().unwrap().split(", ")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_from_an_allowed_origin_is_204_answered_by_the_gateway_without_a_token() {
    let env = start().await;
    let client = env.pki.public_client_builder().http1_only().build().unwrap();
    let url = env.gw.url("/fhir/Patient/a-p1");
    let res = preflight(&client, &url, APP, "PUT", "Authorization, content-type, DPoP, if-match").await;
    assert_eq!(res.status, 204, "{}", res.text());
    assert_eq!(res.version, http::Version::HTTP_11);
    assert_eq!(
        cors_headers(&res),
        [
            "access-control-allow-origin: https://app.example".to_owned(),
            "access-control-allow-methods: GET, HEAD, POST, PUT".to_owned(),
            format!("access-control-allow-headers: {DEFAULT_ALLOW_HEADERS}"),
            "access-control-max-age: 300".to_owned(),
        ]
    );
    assert_eq!(res.header("vary"), Some(PREFLIGHT_VARY));
    assert!(res.body.is_empty());
    // RFC 9110 §8.6, §6.4.1: a 204 has no body and no framing headers.
    assert_eq!((res.header("content-length"), res.header("transfer-encoding")), (None, None));
    let rid = res.header("x-request-id").unwrap().to_owned();

    // A loopback development origin, and the credentials route.
    let local = preflight(&client, &url, "http://localhost:3000", "GET", "").await;
    assert_eq!(local.header("access-control-allow-origin"), Some("http://localhost:3000"));
    let cred =
        preflight(&client, &env.gw.url("/cred/Patient/a-p1"), "https://portal.example", "GET", "").await;
    assert_eq!(cred.status, 204);
    assert_eq!(cred.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(cred.header("access-control-allow-methods"), Some("GET, HEAD, POST, PUT, PATCH, DELETE"));
    // A subdomain wildcard: the subdomain's own origin is answered; the bare domain is not listed.
    let cred_url = env.gw.url("/cred/Patient/a-p1");
    let sub = preflight(&client, &cred_url, "https://chart.apps.example", "GET", "").await;
    assert_eq!(sub.status, 204);
    assert_eq!(sub.header("access-control-allow-origin"), Some("https://chart.apps.example"));
    assert_eq!(sub.header("access-control-allow-credentials"), Some("true"));
    let bare = preflight(&client, &cred_url, "https://apps.example", "GET", "").await;
    assert_eq!(bare.status, 403);
    assert_eq!(bare.header("access-control-allow-origin"), None);
    let read = client.get(&cred_url).header("origin", "https://chart.apps.example").send().await.unwrap();
    assert_eq!(read.header("access-control-allow-origin"), Some("https://chart.apps.example"));

    assert_eq!(env.upstream.recorder.count(), 0, "a preflight is never forwarded");
    // Not PHI access, so no audit record, like every request refused before the stages. Proven
    // against a later request that is audited (its record is on disk first).
    let later = client.get(&url).send().await.unwrap();
    let later_rid = later.header("x-request-id").unwrap().to_owned();
    env.wait_audited(&later_rid).await;
    assert!(env.audit_records().iter().all(|r| r["request_id"] != rid.as_str()), "preflight audited");

    let metrics = admin_get(env.gw.admin, "/metrics").await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("phigate_cors_preflights_total{outcome=\"allowed\",route=\"fhir\"}"))
        .expect("preflight counter");
    assert!(line.rsplit(' ').next().unwrap().parse::<u64>().unwrap() >= 2, "{line}");
    assert!(!metrics.contains("app.example"), "origins are never a label");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_for_a_disallowed_origin_method_or_header_is_403_cors_not_allowed() {
    let env = start().await;
    let client = env.pki.public_client();
    let url = env.gw.url("/fhir/Patient/a-p1");
    for (origin, method, headers, why) in [
        ("https://evil.example", "GET", "", "origin"),
        ("https://app.example.evil.example", "GET", "", "suffix origin"),
        ("null", "GET", "", "null origin"),
        ("https://APP.example", "GET", "", "origin not as a browser sends it"),
        (APP, "DELETE", "", "method"),
        (APP, "get", "", "method case"),
        (APP, "GET", "authorization, x-evil", "header"),
    ] {
        let res = preflight(&client, &url, origin, method, headers).await;
        assert_eq!((res.status.as_u16(), error_code(&res.body).as_str()), (403, "cors_not_allowed"), "{why}");
        assert!(cors_headers(&res).is_empty(), "{why}: {:?}", cors_headers(&res));
        assert_eq!(res.header("vary"), Some(PREFLIGHT_VARY), "{why}");
        assert!(!res.text().contains("evil"), "{why}: nothing of the request is echoed");
    }
    assert_eq!(env.upstream.recorder.count(), 0, "no refused preflight was forwarded");
    let metrics = admin_get(env.gw.admin, "/metrics").await;
    for outcome in ["origin_not_allowed", "method_not_allowed", "header_not_allowed"] {
        let label = format!("phigate_cors_preflights_total{{outcome=\"{outcome}\",route=\"fhir\"}}");
        assert!(metrics.contains(&label), "{outcome}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_to_an_allowed_origin_carry_the_gateway_policy_not_the_upstreams() {
    let env = start().await;
    let token = env.token("clinician_a");
    // A read streamed through, and a care-team read whose response is verified before it is
    // sent (two paths that write the response head).
    for (persona, path) in
        [("clinician_a", "/fhir/metadata"), ("clinician_a", "/fhir/Observation/a-p1-obs-01")]
    {
        let res = env
            .pki
            .public_client()
            .get(&env.gw.url(path))
            .header("origin", APP)
            .bearer(&env.token(persona))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status, 200, "{path}: {}", res.text());
        assert_eq!(
            res.header("access-control-allow-origin"),
            Some(APP),
            "{path}: the upstream's `*` is replaced"
        );
        let exposed = res.header("access-control-expose-headers").unwrap();
        for name in ["www-authenticate", "location", "etag", "dpop-nonce", "x-request-id", "retry-after"] {
            assert!(exposed.split(", ").any(|n| n == name), "{path}: {name} in {exposed}");
        }
        assert!(!exposed.contains("x-upstream-internal"), "{path}: the upstream's list is gone");
        assert_eq!(res.header("access-control-allow-credentials"), None, "{path}");
        assert!(vary(&res).contains(&"Origin"), "{path}");
        let seen = env.upstream.recorder.next().await;
        assert_eq!(seen.headers.get("origin").unwrap(), APP, "{path}: the upstream saw the origin");
    }

    // The response verification refusing a read: the gateway's 403 is readable by the app.
    let res = env
        .pki
        .public_client()
        .get(&env.gw.url("/fhir/Observation/a-p3-obs-01"))
        .header("origin", APP)
        .bearer(&token)
        .send()
        .await
        .unwrap();
    assert_eq!((res.status.as_u16(), error_code(&res.body).as_str()), (403, "patient_not_permitted"));
    assert_eq!(res.header("access-control-allow-origin"), Some(APP));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disallowed_origin_is_served_without_any_cors_header() {
    let env = start().await;
    // Streamed, and verified before it is sent.
    for path in ["/fhir/metadata", "/fhir/Patient/a-p1"] {
        let res = env
            .pki
            .public_client()
            .get(&env.gw.url(path))
            .header("origin", "https://evil.example")
            .bearer(&env.token("clinician_a"))
            .send()
            .await
            .unwrap();
        // Not refused (CORS is not an access control: the token is), but unreadable to a page
        // of that origin: not even the upstream's `*` survives.
        assert_eq!(res.status, 200, "{path}");
        assert!(cors_headers(&res).is_empty(), "{path}: {:?}", cors_headers(&res));
        assert!(vary(&res).contains(&"Origin"), "{path}");
    }
    assert_eq!(env.upstream.recorder.count(), 2, "both were forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_token_from_an_allowed_origin_gets_a_readable_401() {
    let env = start().await;
    let res = env
        .pki
        .public_client()
        .get(&env.gw.url("/fhir/Patient/a-p1"))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!((res.status.as_u16(), error_code(&res.body).as_str()), (401, "token_missing"));
    assert_eq!(res.header("www-authenticate"), Some("Bearer"));
    assert_eq!(res.header("access-control-allow-origin"), Some(APP));
    let exposed = res.header("access-control-expose-headers").unwrap();
    assert!(exposed.split(", ").any(|n| n == "www-authenticate"), "{exposed}");
    assert!(vary(&res).contains(&"Origin"));

    let cred = env
        .pki
        .public_client()
        .get(&env.gw.url("/cred/Patient/a-p1"))
        .header("origin", "https://portal.example")
        .send()
        .await
        .unwrap();
    assert_eq!(cred.status, 401);
    assert_eq!(cred.header("access-control-allow-origin"), Some("https://portal.example"));
    assert_eq!(cred.header("access-control-allow-credentials"), Some("true"));

    // Refusals of the core itself, before identity: an ambiguous path, an oversized body.
    let client = env.pki.public_client();
    let ambiguous =
        client.get(&env.gw.url("/fhir/Patient/a%2Fp1")).header("origin", APP).send().await.unwrap();
    assert_eq!((ambiguous.status.as_u16(), error_code(&ambiguous.body).as_str()), (400, "ambiguous_request"));
    assert_eq!(ambiguous.header("access-control-allow-origin"), Some(APP));
    let big = client
        .post(&env.gw.url("/fhir/Patient"))
        .header("origin", APP)
        .header("content-type", "application/fhir+json")
        .body(vec![b' '; 70_000])
        .send()
        .await
        .unwrap();
    assert_eq!((big.status.as_u16(), error_code(&big.body).as_str()), (413, "body_too_large"));
    assert_eq!(big.header("access-control-allow-origin"), Some(APP));
    assert_eq!(env.upstream.recorder.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_without_cors_sends_preflights_through_identity_as_before() {
    let env = start().await;
    let res =
        preflight(&env.pki.public_client(), &env.gw.url("/api/Patient/a-p1"), APP, "GET", "authorization")
            .await;
    assert_eq!((res.status.as_u16(), error_code(&res.body).as_str()), (401, "token_missing"));
    assert!(cors_headers(&res).is_empty(), "{:?}", cors_headers(&res));
    assert!(!vary(&res).contains(&"Origin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_over_http2_is_answered_the_same() {
    let env = start().await;
    let h2 = env.pki.public_client_builder().http2_only().build().unwrap();
    let url = env.gw.url("/fhir/Patient/a-p1");
    let res = preflight(&h2, &url, APP, "GET", "authorization, dpop").await;
    assert_eq!(res.version, http::Version::HTTP_2);
    assert_eq!(res.status, 204);
    assert_eq!(res.header("access-control-allow-origin"), Some(APP));
    assert_eq!(res.header("access-control-allow-headers"), Some(DEFAULT_ALLOW_HEADERS));
    let refused = preflight(&h2, &url, "https://evil.example", "GET", "").await;
    assert_eq!((refused.status.as_u16(), error_code(&refused.body).as_str()), (403, "cors_not_allowed"));
    let res = h2.get(&url).header("origin", APP).send().await.unwrap();
    assert_eq!((res.status.as_u16(), res.header("access-control-allow-origin")), (401, Some(APP)));
    assert_eq!(env.upstream.recorder.count(), 0);
}

const BAD_CONFIG: &str = r#"listeners:
  - name: public
    address: 127.0.0.1:0
    tls: { cert_path: gw.pem, key_path: gw.key }
upstreams:
  - { name: fhir, address: "127.0.0.1:9", sni: fhir.internal, tls: { ca_path: ca.pem, client_cert_path: c.pem, client_key_path: c.key } }
routes:
  - name: fhir
    path_prefix: /fhir
    upstream: fhir
    cors:
      allowed_origins:
        - https://a.example/path
        - ftp://x
        - http://app.example
        - https://*.example
  - name: any
    path_prefix: /any
    upstream: fhir
    cors:
      allowed_origins: ["*"]
      allow_credentials: true
      max_age_secs: 999999
"#;

#[test]
fn bad_cors_blocks_are_config_errors_naming_file_line_and_key() {
    let loaded = load_from_str(BAD_CONFIG, Path::new("gw.yaml")).unwrap();
    let errors = validate(&loaded, ValidateOptions { check_files: false }).unwrap_err().0;
    let got: Vec<(Option<usize>, &str)> = errors.iter().map(|e| (e.line, e.key_path.as_str())).collect();
    assert_eq!(
        got,
        [
            (Some(13), "routes[0].cors.allowed_origins[0]"),
            (Some(14), "routes[0].cors.allowed_origins[1]"),
            (Some(15), "routes[0].cors.allowed_origins[2]"),
            (Some(16), "routes[0].cors.allowed_origins[3]"),
            (Some(22), "routes[1].cors.allow_credentials"),
            (Some(23), "routes[1].cors.max_age_secs"),
        ]
    );
    for e in &errors {
        let text = e.to_string();
        assert!(text.starts_with("gw.yaml:"), "{text}");
        assert!(!text.contains("a.example") && !text.contains("app.example"), "value echoed: {text}");
    }
    assert!(errors[3].message.contains("two labels"), "{}", errors[3].message);
    assert!(errors[4].message.contains("`*`"), "{}", errors[4].message);

    // A misspelt key is refused, not ignored.
    let typo = BAD_CONFIG.replace("      allow_credentials: true", "      allow_credential: true");
    let err = load_from_str(&typo, Path::new("gw.yaml")).unwrap_err().0;
    assert_eq!(err[0].key_path, "routes[1].cors.allow_credential", "{}", err[0]);
}
