//! Upstreams with several endpoints: round robin, retry on another endpoint when a connection
//! cannot be established, active health checks over the upstream mTLS, and a fast 502 when no
//! endpoint is healthy.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::writes::{send, FHIR_JSON};
use common::{admin_call, admin_get, error_code, yaml, FullEnv};
use http::Method;
use phigate_test_support::{
    free_port, start_upstream, upstream_builder, CertAuthority, RunningUpstream, SeenRequest, TestGateway,
    TestPki,
};

/// Gateway YAML whose upstream `fhir` has these endpoints, plus `extra` upstream keys (YAML
/// indented by four spaces).
fn pool_yaml(pki: &TestPki, endpoints: &[SocketAddr], extra: &str) -> String {
    let single = yaml(pki, endpoints[0], "none");
    let list: String = endpoints.iter().map(|e| format!("      - \"{e}\"\n")).collect();
    let address = format!("    address: \"{}\"\n", endpoints[0]);
    assert!(single.contains(&address));
    single.replace(&address, &format!("    endpoints:\n{list}{extra}"))
}

/// A loopback address nothing listens on (bound, read, released).
fn closed_port() -> SocketAddr {
    ([127, 0, 0, 1], free_port()).into()
}

/// Fast checks for tests: every 250 ms; one pass brings an endpoint back, two failures in a row
/// take it out (a refused connection or a 404 fails at once; two in a row keeps a slow handshake
/// on a busy machine from flapping a live endpoint).
fn health_check(path: Option<&str>) -> String {
    let path = path.map(|p| format!("      path: {p}\n")).unwrap_or_default();
    format!(
        "    health_check:\n{path}      interval_ms: 250\n      timeout_ms: 250\n      \
         healthy_threshold: 1\n      unhealthy_threshold: 2\n"
    )
}

/// Requests other than health checks.
fn traffic(upstream: &RunningUpstream) -> Vec<SeenRequest> {
    let is_check = |r: &SeenRequest| {
        r.headers.get("user-agent").is_some_and(|v| v.as_bytes() == b"phigate-health-check")
    };
    upstream.recorder.all().into_iter().filter(|r| !is_check(r)).collect()
}

/// Waits (bounded) until `/readyz` counts `want` healthy endpoints of the upstream; returns the
/// readiness status and the upstream's details.
async fn wait_healthy(gw: &TestGateway, want: u64) -> (u16, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = admin_call(gw.admin, "GET", "/readyz", None, None).await;
        let upstream = body["upstreams"][0].clone();
        if upstream["healthy_endpoints"] == want {
            return (status, upstream);
        }
        assert!(Instant::now() < deadline, "not {want} healthy endpoints after 20 s: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get_all(pki: &TestPki, gw: &TestGateway, n: usize) -> Vec<u16> {
    let client = pki.public_client();
    let mut statuses = Vec::with_capacity(n);
    for _ in 0..n {
        statuses.push(client.get(&gw.url("/fhir/Patient/a-p1")).send().await.unwrap().status.as_u16());
    }
    statuses
}

fn gauge_line(upstream: &str, endpoint: SocketAddr, value: u8) -> String {
    format!("phigate_upstream_endpoint_healthy{{endpoint=\"{endpoint}\",upstream=\"{upstream}\"}} {value}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_spread_over_every_endpoint() {
    let pki = TestPki::new();
    let (a, b) = (start_upstream(&pki).await, start_upstream(&pki).await);
    let gw = TestGateway::start_yaml(&pool_yaml(&pki, &[a.addr, b.addr], ""), pki.dir(), Vec::new());
    assert!(get_all(&pki, &gw, 10).await.iter().all(|s| *s == 200));
    let (seen_a, seen_b) = (traffic(&a).len(), traffic(&b).len());
    assert_eq!(seen_a + seen_b, 10);
    assert!(seen_a >= 3 && seen_b >= 3, "round robin: {seen_a} / {seen_b}");
    let (_, body) = admin_call(gw.admin, "GET", "/readyz", None, None).await;
    assert_eq!(
        body["upstreams"][0],
        serde_json::json!({"name": "fhir", "healthy_endpoints": 2, "endpoints": 2})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried_on_the_other_endpoint() {
    let pki = TestPki::new();
    let live = start_upstream(&pki).await;
    let dead = closed_port();
    let gw = TestGateway::start_yaml(&pool_yaml(&pki, &[dead, live.addr], ""), pki.dir(), Vec::new());
    let statuses = get_all(&pki, &gw, 10).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(traffic(&live).len(), 10);
    let metrics = admin_get(gw.admin, "/metrics").await;
    assert!(metrics.contains("phigate_upstream_connect_errors_total{kind=\"connect\",upstream=\"fhir\"}"));

    // A body the gateway buffered to inspect is sent whole to the endpoint finally reached (ten
    // first attempts took turns: the first of these starts on the dead endpoint again).
    for _ in 0..2 {
        let res = pki
            .public_client()
            .post(&gw.url("/fhir/Patient/_search"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("_id=a-p1")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status, 200, "{}", res.text());
        let seen = live.recorder.all().pop().unwrap();
        assert_eq!(seen.method, Method::POST);
        assert_eq!(seen.body.as_deref(), Some(&b"_id=a-p1"[..]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_tls_handshake_is_retried_on_the_other_endpoint() {
    let pki = TestPki::new();
    let good = start_upstream(&pki).await;
    let rogue_ca = CertAuthority::new("rogue").unwrap();
    let rogue_cert = rogue_ca.issue_server(&["fhir-upstream.internal", "127.0.0.1"]).unwrap();
    let rogue = upstream_builder(&pki).identity(&rogue_cert).bind("127.0.0.1:0").await.unwrap();
    let gw = TestGateway::start_yaml(&pool_yaml(&pki, &[rogue.addr, good.addr], ""), pki.dir(), Vec::new());
    assert!(get_all(&pki, &gw, 4).await.iter().all(|s| *s == 200));
    assert_eq!((rogue.recorder.count(), traffic(&good).len()), (0, 4));
    let metrics = admin_get(gw.admin, "/metrics").await;
    assert!(metrics.contains("phigate_upstream_connect_errors_total{kind=\"tls\",upstream=\"fhir\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retries_a_refused_connection_is_502_upstream_unavailable() {
    let pki = TestPki::new();
    let live = start_upstream(&pki).await;
    let cfg = pool_yaml(&pki, &[closed_port(), live.addr], "    max_connect_retries: 0\n");
    let gw = TestGateway::start_yaml(&cfg, pki.dir(), Vec::new());
    let statuses = get_all(&pki, &gw, 4).await;
    // Round robin from the first endpoint: the dead one gets every other request.
    assert_eq!(statuses, [502, 200, 502, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_a_dead_endpoint_out_and_bring_it_back() {
    let pki = TestPki::new();
    let live = start_upstream(&pki).await;
    let dead = closed_port();
    // No retries: a request sent to the dead endpoint would fail, so all-200 means avoided.
    let extra = format!("    max_connect_retries: 0\n{}", health_check(Some("/fhir/metadata")));
    let gw = TestGateway::start_yaml(&pool_yaml(&pki, &[live.addr, dead], &extra), pki.dir(), Vec::new());

    let (status, details) = wait_healthy(&gw, 1).await;
    assert_eq!(status, 200);
    assert_eq!(details["endpoints"], 2);
    let metrics = admin_get(gw.admin, "/metrics").await;
    assert!(metrics.contains(&gauge_line("fhir", dead, 0)), "{metrics}");
    assert!(metrics.contains(&gauge_line("fhir", live.addr, 1)), "{metrics}");
    assert!(get_all(&pki, &gw, 6).await.iter().all(|s| *s == 200));
    assert_eq!(traffic(&live).len(), 6);

    let revived = upstream_builder(&pki).bind(dead).await.unwrap();
    wait_healthy(&gw, 2).await;
    assert!(get_all(&pki, &gw, 6).await.iter().all(|s| *s == 200));
    assert!(!traffic(&revived).is_empty(), "the revived endpoint takes traffic again");
    assert!(admin_get(gw.admin, "/metrics").await.contains(&gauge_line("fhir", dead, 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_in_a_row_take_an_endpoint_out_before_the_next_check() {
    let pki = TestPki::new();
    let live = start_upstream(&pki).await;
    // A broken endpoint that counts the connections it gets: it accepts and hangs up, so every
    // TLS handshake with it fails.
    let broken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = broken.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = broken.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(socket);
        }
    });
    // One check at start (the broken endpoint fails it once: not enough), the next in five
    // minutes: whatever takes the endpoint out during this test is traffic.
    let extra = "    health_check:\n      interval_ms: 300000\n      timeout_ms: 250\n      \
                 healthy_threshold: 1\n      unhealthy_threshold: 2\n";
    let gw = TestGateway::start_yaml(&pool_yaml(&pki, &[dead, live.addr], extra), pki.dir(), Vec::new());
    let checks_done = Instant::now() + Duration::from_secs(20);
    while accepted.load(std::sync::atomic::Ordering::SeqCst) < 1 {
        assert!(Instant::now() < checks_done, "the start-up check never came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Round robin sends every other request to the broken endpoint first; each is retried on
    // the live one. The second failed connection in a row takes the broken endpoint out.
    assert!(get_all(&pki, &gw, 4).await.iter().all(|s| *s == 200));
    let metrics = admin_get(gw.admin, "/metrics").await;
    assert!(metrics.contains(&gauge_line("fhir", dead, 0)), "{metrics}");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3, "one check and two requests");
    // Out of rotation: no request tries it any more.
    assert!(get_all(&pki, &gw, 10).await.iter().all(|s| *s == 200));
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    let (_, details) = wait_healthy(&gw, 1).await;
    assert_eq!(details["endpoints"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_healthy_endpoint_is_502_upstream_unavailable_without_trying_any() {
    let pki = TestPki::new();
    let (a, b) = (start_upstream(&pki).await, start_upstream(&pki).await);
    // Both answer, but not on the health check path: reachable, and still never tried.
    let cfg = pool_yaml(&pki, &[a.addr, b.addr], &health_check(Some("/elsewhere/health")));
    let gw = TestGateway::start_yaml(&cfg, pki.dir(), Vec::new());
    let (status, _) = wait_healthy(&gw, 0).await;
    assert_eq!(status, 200, "zero healthy endpoints does not fail readiness");
    for path in ["/fhir/Patient/a-p1", "/api/Patient/a-p1"] {
        let res = pki.public_client().get(&gw.url(path)).send().await.unwrap();
        assert_eq!(res.status, 502);
        assert_eq!(error_code(&res.body), "upstream_unavailable");
        assert!(res.header("x-request-id").is_some());
    }
    assert!(traffic(&a).is_empty() && traffic(&b).is_empty(), "no request reached an endpoint");
    let metrics = admin_get(gw.admin, "/metrics").await;
    let line = "phigate_upstream_connect_errors_total{kind=\"no_healthy_endpoint\",upstream=\"fhir\"}";
    assert!(metrics.contains(line), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_with_a_certificate_from_another_ca_fails_its_health_checks() {
    let pki = TestPki::new();
    let good = start_upstream(&pki).await;
    let rogue_ca = CertAuthority::new("rogue").unwrap();
    let rogue_cert = rogue_ca.issue_server(&["fhir-upstream.internal", "127.0.0.1"]).unwrap();
    let rogue = upstream_builder(&pki).identity(&rogue_cert).bind("127.0.0.1:0").await.unwrap();
    // Handshake-only checks: the rogue endpoint answers TCP, but not with a trusted certificate.
    let extra = format!("    max_connect_retries: 0\n{}", health_check(None));
    let gw =
        TestGateway::start_yaml(&pool_yaml(&pki, &[rogue.addr, good.addr], &extra), pki.dir(), Vec::new());
    wait_healthy(&gw, 1).await;
    let metrics = admin_get(gw.admin, "/metrics").await;
    assert!(metrics.contains(&gauge_line("fhir", rogue.addr, 0)), "{metrics}");
    assert!(metrics.contains(&gauge_line("fhir", good.addr, 1)), "{metrics}");
    assert!(get_all(&pki, &gw, 4).await.iter().all(|s| *s == 200));
    assert_eq!(rogue.recorder.count(), 0, "nothing reached the rogue endpoint");
    let good_seen = good.recorder.all();
    assert!(good_seen.iter().all(|r| r.client_cert_thumbprint.is_some()), "checks present the client cert");
}

/// The full pipeline with the sample upstream behind a dead endpoint (`dead` first, so round
/// robin tries it first), plus `extra` upstream keys.
async fn full_env_with(dead: SocketAddr, extra: &str) -> FullEnv {
    let extra = extra.to_owned();
    FullEnv::start_edited(
        |_| {},
        "",
        "",
        move |yaml, live| {
            let address = format!("    address: \"{live}\"\n");
            let endpoints = format!("    endpoints:\n      - \"{dead}\"\n      - \"{live}\"\n{extra}");
            yaml.replace(&address, &endpoints)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_fetches_and_pre_reads_retry_on_another_endpoint_too() {
    let env = full_env_with(closed_port(), "").await;
    for _ in 0..2 {
        // Verified reads: the gateway fetches the record itself before answering.
        assert_eq!(env.get_as("clinician_a", "/fhir/Observation/a-p1-obs-01").await.0, 200);
        let (s, code, _) = env.get_as("clinician_a", "/fhir/Observation/a-p3-obs-01").await;
        assert_eq!((s, code.as_str()), (403, "patient_not_permitted"));
        // A write by id is pre-read (GET), then forwarded to the read-only upstream (405).
        let path = "/fhir/Observation/a-p1-obs-01";
        let res = send(&env, "writer_a", Method::DELETE, path, FHIR_JSON, Vec::new()).await;
        assert_eq!(res.status, 405, "{}", res.text());
    }
    let methods: Vec<_> = env.upstream.recorder.all().into_iter().map(|r| r.method).collect();
    assert_eq!(methods.iter().filter(|m| **m == Method::GET).count(), 6, "{methods:?}");
    assert_eq!(methods.iter().filter(|m| **m == Method::DELETE).count(), 2, "{methods:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_fetch_with_no_healthy_endpoint_is_502_upstream_unavailable() {
    let env = full_env_with(closed_port(), &health_check(Some("/elsewhere/health"))).await;
    wait_healthy(&env.gw, 0).await;
    let (s, code, _) = env.get_as("clinician_a", "/fhir/Observation/a-p1-obs-01").await;
    assert_eq!((s, code.as_str()), (502, "upstream_unavailable"));
    assert!(traffic(&env.upstream).is_empty(), "no request reached an endpoint");
}

/// `addresses_per_name`: a name's every address is an endpoint of its own, an address slot the
/// lookup leaves empty takes no traffic, is not checked and is not counted. `localhost` answers
/// 127.0.0.1 (and ::1 where the hosts file says so: then a second upstream listens there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_with_address_slots_sends_to_every_address_it_resolves_to() {
    use std::net::ToSocketAddrs;
    let pki = TestPki::new();
    let v4 = start_upstream(&pki).await;
    let port = v4.addr.port();
    let mut local: Vec<SocketAddr> = ("localhost", port).to_socket_addrs().unwrap().collect();
    local.sort_unstable();
    local.dedup();
    // Where ::1 is in the hosts file but cannot be bound (IPv6 off), its slot fails its checks.
    let v6 = match local.iter().find(|a| a.is_ipv6()) {
        Some(a) => upstream_builder(&pki).bind(*a).await.ok(),
        None => None,
    };
    let live = 1 + u64::from(v6.is_some());
    let single = yaml(&pki, v4.addr, "none");
    let address = format!("    address: \"{}\"\n", v4.addr);
    let extra = format!(
        "    endpoints: [\"localhost:{port}\"]\n    addresses_per_name: 3\n    max_connect_retries: 0\n{}",
        health_check(Some("/fhir/metadata"))
    );
    let gw = TestGateway::start_yaml(&single.replace(&address, &extra), pki.dir(), Vec::new());

    let (status, details) = wait_healthy(&gw, live).await;
    assert_eq!((status, details["endpoints"].as_u64()), (200, Some(local.len() as u64)), "{details}");
    // No retries: a request sent to an empty slot would fail, so all-200 means none was.
    assert!(get_all(&pki, &gw, 8).await.iter().all(|s| *s == 200));
    let metrics = admin_get(gw.admin, "/metrics").await;
    let gauge = |slot: usize, v: u8| {
        format!(
            "phigate_upstream_endpoint_healthy{{endpoint=\"localhost:{port}#{slot}\",upstream=\"fhir\"}} {v}"
        )
    };
    assert!(metrics.contains(&gauge(1, 1)), "{metrics}");
    assert!(metrics.contains(&gauge(3, 0)), "the empty slot: {metrics}");
    match &v6 {
        Some(v6) => {
            assert!(metrics.contains(&gauge(2, 1)), "{metrics}");
            let (a, b) = (traffic(&v4).len(), traffic(v6).len());
            assert!(a + b == 8 && a >= 2 && b >= 2, "round robin over both addresses: {a} / {b}");
        }
        None => {
            assert!(metrics.contains(&gauge(2, 0)), "an empty or unreachable slot: {metrics}");
            assert_eq!(traffic(&v4).len(), 8);
        }
    }
}
