//! Request hygiene end to end: what the upstream receives is rebuilt from the normalized request,
//! with no hop-by-hop, `Connection`-nominated or spoofable identity headers; ambiguous requests
//! never reach it; every response carries `x-request-id`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod common;

use common::{error_code, parse_raw, Env};
use phigate_test_support::RawOptions;

async fn raw(env: &Env, request: &str) -> (u16, String, Vec<u8>) {
    let client = env.pki.public_client();
    let bytes = client.raw_with(env.gw.addr, request.as_bytes(), RawOptions::default()).await;
    parse_raw(&bytes.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_nominated_and_spoofed_headers_never_reach_the_upstream() {
    let env = Env::start().await;
    let request = "GET /fhir/Patient/a-p1 HTTP/1.1\r\nHost: localhost\r\n\
        Connection: close, X-Secret-Hop\r\nX-Secret-Hop: s\r\nKeep-Alive: timeout=5\r\n\
        Proxy-Authorization: Basic eDp5\r\nTE: trailers\r\nTrailer: X-T\r\n\
        X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: http\r\n\
        Forwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Phigate-Subject: admin\r\n\
        X-Phigate-Tenant: tenant-b\r\nX-Auth-User: root\r\nX-Client-Cert: forged\r\n\
        X-Keep-Me: yes\r\n\r\n";
    let (status, head, _) = raw(&env, request).await;
    assert_eq!(status, 200, "{head}");
    let seen = env.upstream.recorder.next().await;
    let names: Vec<String> = seen.headers.keys().map(|k| k.as_str().to_owned()).collect();
    for banned in [
        "x-secret-hop",
        "keep-alive",
        "proxy-authorization",
        "te",
        "trailer",
        "x-forwarded-host",
        "forwarded",
        "x-real-ip",
        "x-phigate-subject",
        "x-phigate-tenant",
        "x-auth-user",
        "x-client-cert",
    ] {
        assert!(!names.iter().any(|n| n == banned), "{banned} reached the upstream: {names:?}");
    }
    let h = |n: &str| seen.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(h("x-forwarded-for").as_deref(), Some("127.0.0.1"), "set from the socket, not the client");
    assert_eq!(h("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(h("x-keep-me").as_deref(), Some("yes"), "end-to-end headers pass");
    let rid = head.lines().find_map(|l| l.strip_prefix("x-request-id: ")).map(str::to_owned);
    assert_eq!(h("x-request-id"), rid, "the upstream sees the id the client gets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_target_is_rebuilt_from_the_normalized_form() {
    let env = Env::start().await;
    let res = env
        .pki
        .public_client()
        .get(&env.gw.url("/fhir/Observation?patient=%61-p1&_count=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    let seen = env.upstream.recorder.next().await;
    assert_eq!(seen.path_and_query, "/fhir/Observation?patient=a-p1&_count=2");

    // A prefix rewrite: /api/... is served from the upstream's /fhir/... base.
    let res = env.pki.public_client().get(&env.gw.url("/api/Patient/a-p2")).send().await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(env.upstream.recorder.next().await.path_and_query, "/fhir/Patient/a-p2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_requests_are_400_and_never_forwarded() {
    let env = Env::start().await;
    let cases = [
        ("GET /fhir/Patient/a-p1%2F..%2Fb-p1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", true),
        ("GET /fhir/Patient/../Patient/b-p1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", true),
        ("GET /fhir/Patient;x=1/a-p1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", true),
        ("GET /api/Patient/%252e%252e HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", false),
        (
            "GET /fhir/Observation?_count=1&_count=500 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            true,
        ),
    ];
    for (request, fhir) in cases {
        let (status, head, body) = raw(&env, request).await;
        assert_eq!(status, 400, "{request:?} → {head}");
        assert_eq!(error_code(&body), "ambiguous_request", "{request:?}");
        assert!(head.contains("x-request-id: "));
        let ct = if fhir { "application/fhir+json" } else { "application/json" };
        assert!(head.to_ascii_lowercase().contains(&format!("content-type: {ct}")), "{head}");
    }
    assert_eq!(env.upstream.recorder.count(), 0, "nothing ambiguous reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_reframed_and_the_connection_closed() {
    // Pingora resolves this before any filter runs, per RFC 9112 §6.1: Transfer-Encoding wins,
    // Content-Length is dropped and the connection is closed after the response. So no request
    // can hide behind the other framing: the upstream gets one chunked request, and nothing
    // else is read from that client connection.
    let env = Env::start().await;
    let smuggle = "POST /api/Patient/_search HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n\
                   Transfer-Encoding: chunked\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n\
                   0\r\n\r\nGET /api/Patient/b-p1 HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let (_, head, _) = raw(&env, smuggle).await;
    assert!(head.to_ascii_lowercase().contains("connection: close"), "{head}");
    let all = env.upstream.recorder.all();
    assert_eq!(
        all.len(),
        1,
        "exactly one request reached the upstream: {:?}",
        all.iter().map(|r| &r.path_and_query).collect::<Vec<_>>()
    );
    assert!(all[0].headers.get("content-length").is_none());
    assert_eq!(all[0].path_and_query, "/fhir/Patient/_search");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_path_is_404_route_not_found_with_a_request_id() {
    let env = Env::start().await;
    let res = env.pki.public_client().get(&env.gw.url("/nowhere")).send().await.unwrap();
    assert_eq!(res.status, 404);
    assert_eq!(error_code(&res.body), "route_not_found");
    let rid = res.header("x-request-id").unwrap().to_owned();
    let v: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    assert_eq!(v["error"]["request_id"], rid.as_str());
    assert_eq!(env.upstream.recorder.count(), 0);
}
