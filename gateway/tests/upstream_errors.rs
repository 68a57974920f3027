//! An upstream's error answers to requests whose responses are verified: the status reaches the
//! client (a 503 is retried, a 403 is not), the body only when it is FHIR JSON naming nothing
//! the caller may not see; a load balancer's HTML page or a body naming another patient is
//! replaced with an OperationOutcome saying so.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use common::FullEnv;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// A plain-HTTP upstream answering every request with `status`, `content_type` and `body`.
fn failing_upstream(status: u16, content_type: &'static str, body: &'static str) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(move |_req| async move {
                    let mut resp = hyper::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                    resp.headers_mut().insert("content-type", http::HeaderValue::from_static(content_type));
                    Ok::<_, Infallible>(resp)
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
            });
        }
    });
    addr
}

/// The full pipeline forwarding to `upstream` over plain HTTP (what is tested here is the
/// answer, not the transport).
async fn env_with(upstream: SocketAddr) -> FullEnv {
    FullEnv::start_edited(
        |_| {},
        "",
        "",
        move |cfg, sample| {
            let tls = cfg.lines().find(|l| l.trim_start().starts_with("tls: { ca_path:")).unwrap().to_owned();
            cfg.replace(&format!("\"{sample}\""), &format!("\"{upstream}\""))
                .replace(&tls, "    insecure_plaintext: true")
        },
    )
    .await
}

/// `GET path` as `clinician_a`, whose responses are verified (her care team's patients).
async fn read_as_clinician(env: &FullEnv, path: &str) -> phigate_test_support::TestResponse {
    env.pki.public_client().get(&env.gw.url(path)).bearer(&env.token("clinician_a")).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_error_page_keeps_its_status_not_its_body() {
    let page = "<html><body>503 Service Unavailable<pre>at PatientDao.read(a-p3)</pre></body></html>";
    let env = env_with(failing_upstream(503, "text/html", page)).await;
    let res = read_as_clinician(&env, "/fhir/Patient/a-p1").await;
    assert_eq!(res.status, 503, "the upstream's status, not 403 policy_error: {}", res.text());
    assert_eq!(res.header("content-type"), Some("application/fhir+json"));
    let outcome = res.json();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert!(!res.text().contains("a-p3") && !res.text().contains("html"), "{}", res.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_outcome_naming_another_patient_is_withheld_and_a_plain_one_passes() {
    // Some servers answer a version conflict with the record as it now stands.
    let naming =
        r#"{"resourceType":"Observation","id":"o9","status":"final","subject":{"reference":"Patient/a-p3"}}"#;
    let env = env_with(failing_upstream(409, "application/fhir+json", naming)).await;
    let res = read_as_clinician(&env, "/fhir/Observation/o9").await;
    assert_eq!(res.status, 409);
    assert!(!res.text().contains("a-p3"), "{}", res.text());

    let plain = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found","diagnostics":"Observation/o9 is not known"}]}"#;
    let env = env_with(failing_upstream(404, "application/fhir+json", plain)).await;
    let res = read_as_clinician(&env, "/fhir/Observation/o9").await;
    assert_eq!((res.status.as_u16(), res.text()), (404, plain.to_owned()), "passed as the server wrote it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_answer_naming_her_patient_passes_and_is_audited_as_disclosed() {
    let record =
        r#"{"resourceType":"Observation","id":"o9","status":"final","subject":{"reference":"Patient/a-p1"}}"#;
    let env = env_with(failing_upstream(409, "application/fhir+json", record)).await;
    let res = read_as_clinician(&env, "/fhir/Observation/o9").await;
    assert_eq!((res.status.as_u16(), res.text()), (409, record.to_owned()));
    let rid = res.header("x-request-id").unwrap().to_owned();
    let audited = env.wait_record(|r| r["request_id"] == rid.as_str() && r["phase"] == "outcome").await;
    assert_eq!(audited["disclosed"], serde_json::json!(["a-p1"]), "{audited}");
}
