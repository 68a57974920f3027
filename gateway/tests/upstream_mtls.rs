//! Upstreams: mTLS with the gateway's client certificate, the upstream's certificate verified
//! against the configured CA and name, and stable codes when that or the connection fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod common;

use common::{error_code, yaml, yaml_sni, Env};
use phigate_test_support::{free_port, upstream_builder, CertAuthority, TestGateway, TestPki};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_sees_the_gateway_client_certificate() {
    let env = Env::start().await;
    let res = env.pki.public_client().get(&env.gw.url("/fhir/Patient/a-p1")).send().await.unwrap();
    assert_eq!(res.status, 200);
    let seen = env.upstream.recorder.next().await;
    assert_eq!(seen.client_cert_thumbprint.as_deref(), Some(env.pki.gateway_client.thumbprint().as_str()));
    assert_eq!(seen.sni.as_deref(), Some(phigate::demo::pki::UPSTREAM_SERVER_NAME));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_cert_from_another_ca_is_502_upstream_tls_error() {
    let pki = TestPki::new();
    let rogue = CertAuthority::new("rogue").unwrap();
    let rogue_server = rogue.issue_server(&["fhir-upstream.internal", "127.0.0.1"]).unwrap();
    let upstream = upstream_builder(&pki).identity(&rogue_server).bind("127.0.0.1:0").await.unwrap();
    let gw = TestGateway::start_yaml(&yaml(&pki, upstream.addr, "none"), pki.dir(), Vec::new());
    for (path, fhir) in [("/api/Patient/a-p1", false), ("/fhir/Patient/a-p1", true)] {
        let res = pki.public_client().get(&gw.url(path)).send().await.unwrap();
        assert_eq!(res.status, 502);
        assert_eq!(error_code(&res.body), "upstream_tls_error");
        let ct = res.header("content-type").unwrap_or_default();
        assert_eq!(ct, if fhir { "application/fhir+json" } else { "application/json" });
    }
    assert_eq!(upstream.recorder.count(), 0, "nothing reached the rogue upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_cert_for_another_name_is_502_upstream_tls_error() {
    let pki = TestPki::new();
    let upstream = upstream_builder(&pki).bind("127.0.0.1:0").await.unwrap();
    let cfg = yaml_sni(&pki, upstream.addr, "none", "billing.internal");
    let gw = TestGateway::start_yaml(&cfg, pki.dir(), Vec::new());
    let res = pki.public_client().get(&gw.url("/api/Patient/a-p1")).send().await.unwrap();
    assert_eq!(res.status, 502);
    assert_eq!(error_code(&res.body), "upstream_tls_error");
    let text = common::admin_get(gw.admin, "/metrics").await;
    assert!(text.contains("phigate_upstream_connect_errors_total{kind=\"tls\",upstream=\"fhir\"}"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_upstream_is_502_upstream_unavailable() {
    let pki = TestPki::new();
    let nothing: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let gw = TestGateway::start_yaml(&yaml(&pki, nothing, "none"), pki.dir(), Vec::new());
    let res = pki.public_client().get(&gw.url("/api/Patient/a-p1")).send().await.unwrap();
    assert_eq!(res.status, 502);
    assert_eq!(error_code(&res.body), "upstream_unavailable");
    assert!(res.header("x-request-id").is_some());
}
