//! The admin service: health, readiness and Prometheus metrics on their own port.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod common;

use common::{admin_get, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_readyz_and_metrics_answer() {
    let env = Env::start().await;
    let client = env.pki.public_client();
    assert_eq!(client.get(&env.gw.url("/fhir/Patient/a-p1")).send().await.unwrap().status, 200);
    assert_eq!(client.get(&env.gw.url("/nowhere")).send().await.unwrap().status, 404);

    assert!(admin_get(env.gw.admin, "/healthz").await.starts_with("HTTP/1.1 200"));
    let ready = admin_get(env.gw.admin, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(ready.contains("\"ready\":true"));
    let metrics = admin_get(env.gw.admin, "/metrics").await;
    assert!(
        metrics.contains("phigate_requests_total{code=\"ok\",route=\"fhir\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("phigate_requests_total{code=\"route_not_found\",route=\"-\",status=\"404\"}"));
    assert!(metrics.contains("phigate_request_duration_seconds_bucket"));
    assert!(metrics.contains("phigate_tls_handshakes_completed_total{listener=\"public\"}"));
    assert!(!metrics.contains("a-p1"), "no patient ids in metrics");
}
