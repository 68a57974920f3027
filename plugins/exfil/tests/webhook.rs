//! Alerts POSTed to a webhook: a real HTTPS collector on a loopback port (TLS with a CA of the
//! test's own), real alerts from the detectors. Delivered as the file's lines, with the
//! `Authorization` value from the environment; retried in order while the collector fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{principal, read, Harness};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use phigate_exfil::WebhookConfig;
use tokio::sync::mpsc;

/// A POST the collector received: headers and body.
type Received = (HeaderMap, Bytes);

/// An HTTPS collector answering 503 to its first `fail_first` POSTs and 200 after.
struct Collector {
    addr: SocketAddr,
    ca_path: std::path::PathBuf,
    received: mpsc::UnboundedReceiver<Received>,
    _dir: tempfile::TempDir,
}

async fn collector(fail_first: usize) -> Collector {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, received) = mpsc::unbounded_channel();
    let failures = Arc::new(AtomicUsize::new(fail_first));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, tx, failures) = (acceptor.clone(), tx.clone(), failures.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (tx, failures) = (tx.clone(), failures.clone());
                    async move {
                        let headers = req.headers().clone();
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let fail = failures
                            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                            .is_ok();
                        let status = if fail { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
                        let _ = tx.send((headers, body));
                        Ok::<_, std::convert::Infallible>(
                            Response::builder().status(status).body(Full::new(Bytes::new())).unwrap(),
                        )
                    }
                });
                let io = hyper_util::rt::TokioIo::new(tls);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    Collector { addr, ca_path, received, _dir: dir }
}

fn webhook(c: &Collector) -> WebhookConfig {
    WebhookConfig {
        url: format!("https://{}/hooks/phigate", c.addr),
        ca_path: Some(c.ca_path.clone()),
        // Set by cargo for every test process: the header value comes from the environment.
        authorization_env: Some("CARGO_PKG_NAME".into()),
        timeout_ms: 5000,
        max_pending_bytes: 16 << 20,
    }
}

/// One alert from each of `principals` principals reading one patient too many.
async fn raise(h: &Harness, principals: usize, threshold: u64) {
    for p in 0..principals {
        let who = principal(&format!("user-{p}"));
        for id in 0..=threshold {
            h.run(read(&who, "Patient", &format!("p{id}"), 200)).await.unwrap();
        }
    }
}

async fn next(c: &mut Collector) -> Received {
    tokio::time::timeout(Duration::from_secs(20), c.received.recv())
        .await
        .expect("a POST within 20 s")
        .expect("open")
}

#[tokio::test]
async fn alerts_reach_the_collector_as_the_files_lines() {
    let mut c = collector(0).await;
    let hook = webhook(&c);
    let h = Harness::new(|cfg| {
        cfg.distinct_patients.enabled = true;
        cfg.distinct_patients.threshold = 2;
        cfg.webhook = Some(hook);
    });
    h.spawn_writer();
    raise(&h, 3, 2).await;
    let file: Vec<String> = h.alerts().await.iter().map(ToString::to_string).collect();
    assert_eq!(file.len(), 3);
    let mut got = Vec::new();
    while got.len() < 3 {
        let (headers, body) = next(&mut c).await;
        assert_eq!(headers.get("content-type").unwrap(), "application/x-ndjson");
        assert_eq!(headers.get("authorization").unwrap(), env!("CARGO_PKG_NAME"));
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.ends_with('\n'));
        got.extend(text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap().to_string()));
    }
    assert_eq!(got, file, "the file's alerts, in order");
}

#[tokio::test]
async fn a_failing_collector_gets_the_alerts_again_in_order() {
    let mut c = collector(2).await;
    let hook = webhook(&c);
    let h = Harness::new(|cfg| {
        cfg.distinct_patients.enabled = true;
        cfg.distinct_patients.threshold = 2;
        cfg.webhook = Some(hook);
    });
    h.spawn_writer();
    raise(&h, 1, 2).await;
    h.alerts().await;
    // 503, 503 (the task backs off 1 s, then 2 s), then accepted: the collector answers by count.
    let bodies: Vec<Bytes> =
        [next(&mut c).await, next(&mut c).await, next(&mut c).await].map(|(_, b)| b).into();
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(bodies[1], bodies[2], "the same lines, retried whole");
    assert!(String::from_utf8_lossy(&bodies[2]).contains("distinct_patients"));
}

#[test]
fn bad_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let routes = vec![common::route()];
    let ctx = phigate_plugin::StageBuildCtx { routes: &routes, config_dir: dir.path() };
    let mut cfg = phigate_exfil::ExfilConfig::new(dir.path().join("alerts.jsonl"));
    cfg.webhook = Some(WebhookConfig {
        url: "http://siem.example/hook".into(),
        ca_path: Some("missing-ca.pem".into()),
        authorization_env: Some("PHIGATE_TEST_SURELY_UNSET_VARIABLE".into()),
        timeout_ms: 10,
        max_pending_bytes: 16 << 20,
    });
    let issues = cfg.build(&ctx).unwrap_err();
    let keys: Vec<&str> = issues.iter().map(|i| i.key_path.as_str()).collect();
    assert_eq!(keys, ["webhook.url", "webhook.timeout_ms", "webhook.authorization_env", "webhook.ca_path"]);
    assert!(issues.iter().all(|i| !i.message.contains("siem.example")), "values are never echoed");
}
