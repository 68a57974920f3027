//! The test client's own options: PEM inputs, bad inputs, timeouts.

use std::time::Duration;

use http::StatusCode;
use phigate_test_support::{start_upstream, ClientError, TestClient, TestPki};

#[tokio::test]
async fn client_built_from_pem_files_talks_mtls_to_the_upstream() {
    let pki = TestPki::new();
    let up = start_upstream(&pki).await;
    let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("pem file");
    let client = TestClient::builder()
        .root_ca_pem(&read(&pki.paths.internal_ca_cert))
        .expect("root")
        .client_cert_pem(&read(&pki.paths.gateway_client_cert), &read(&pki.paths.gateway_client_key))
        .expect("identity")
        .server_name("localhost")
        .build()
        .expect("client");
    let res = client.get(&format!("{}/Patient/a-p1", up.base_url())).send().await.expect("response");
    assert_eq!(res.status, StatusCode::OK);
}

#[test]
fn unusable_pem_is_a_config_error() {
    assert!(matches!(TestClient::builder().root_ca_pem("not pem"), Err(ClientError::Config(_))));
    assert!(matches!(TestClient::builder().client_cert_pem("", "no key here"), Err(ClientError::Config(_))));
}

#[tokio::test]
async fn bad_url_and_bad_header_fail_without_connecting() {
    let client = TestClient::builder().build().expect("client");
    assert!(matches!(client.get("ftp://x/").send().await, Err(ClientError::BadUrl)));
    assert!(matches!(
        client.get("http://127.0.0.1:1/").header("bad header", "v").send().await,
        Err(ClientError::Config(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_server_that_never_answers_times_out() {
    // A listener that accepts (the kernel completes the TCP handshake) but never speaks TLS.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = TestClient::builder().timeout(Duration::from_secs(2)).build().expect("client");
    let err = client.get(&format!("https://{addr}/")).send().await.expect_err("must time out");
    assert!(matches!(err, ClientError::Timeout), "{err}");
    drop(listener);
}
