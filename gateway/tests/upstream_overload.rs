//! `max_requests_in_flight`: with the upstream holding the only allowed request, the next one
//! is refused at once with 503 `upstream_overloaded` and `Retry-After`, nothing of it reaches
//! the upstream, and the place is given back when the held request ends; with
//! `max_pending_requests`, a request waits for the place instead.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::{admin_get, error_code, yaml};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use phigate_test_support::{TestGateway, TestPki};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio_rustls::TlsAcceptor;

/// An upstream (the dev PKI's upstream certificate) that holds every request until released.
struct HoldingUpstream {
    addr: SocketAddr,
    arrived: Arc<Notify>,
    release: watch::Sender<bool>,
    received: Arc<AtomicUsize>,
}

async fn holding_upstream(pki: &TestPki) -> HoldingUpstream {
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![pki.upstream.cert_der().clone()], pki.upstream.key_der())
            .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (arrived, received) = (Arc::new(Notify::new()), Arc::new(AtomicUsize::new(0)));
    let release = watch::Sender::new(false);
    let (a, r, rel) = (arrived.clone(), received.clone(), release.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, a, r, rel) = (acceptor.clone(), a.clone(), r.clone(), rel.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = service_fn(move |_req| {
                    let (a, r, mut released) = (a.clone(), r.clone(), rel.subscribe());
                    async move {
                        r.fetch_add(1, Ordering::SeqCst);
                        a.notify_one();
                        let _ = released.wait_for(|go| *go).await;
                        let body = Bytes::from_static(br#"{"resourceType":"Patient","id":"a-p1"}"#);
                        let mut resp = hyper::Response::new(Full::new(body));
                        resp.headers_mut()
                            .insert("content-type", http::HeaderValue::from_static("application/fhir+json"));
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
            });
        }
    });
    HoldingUpstream { addr, arrived, release, received }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_beyond_max_requests_in_flight_is_503_at_once_and_the_place_comes_back() {
    let pki = TestPki::new();
    let upstream = holding_upstream(&pki).await;
    let cfg = yaml(&pki, upstream.addr, "none");
    let address = format!("    address: \"{}\"\n", upstream.addr);
    assert!(cfg.contains(&address));
    let cfg = cfg.replace(&address, &format!("{address}    max_requests_in_flight: 1\n"));
    let gw = TestGateway::start_yaml(&cfg, pki.dir(), Vec::new());
    let url = gw.url("/fhir/Patient/a-p1");

    let held = {
        let (client, url) = (pki.public_client(), url.clone());
        tokio::spawn(async move { client.get(&url).send().await.unwrap() })
    };
    upstream.arrived.notified().await; // the first request holds the only place

    let refused = pki.public_client().get(&url).send().await.unwrap();
    assert_eq!((refused.status.as_u16(), error_code(&refused.body).as_str()), (503, "upstream_overloaded"));
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(upstream.received.load(Ordering::SeqCst), 1, "nothing of the refused request was sent");

    upstream.release.send_replace(true);
    assert_eq!(held.await.unwrap().status, 200);
    let after = pki.public_client().get(&url).send().await.unwrap();
    assert_eq!(after.status, 200, "the held request gave its place back");
    assert_eq!(upstream.received.load(Ordering::SeqCst), 2);

    let metrics = admin_get(gw.admin, "/metrics").await;
    assert!(metrics.contains("phigate_upstream_overloaded_total{upstream=\"fhir\"} 1"), "{metrics}");
}

/// `max_pending_requests`: with the only place held, one request waits (and is counted in
/// `phigate_upstream_pending_requests`), the next finds the waiting room full and is refused at
/// once, and the waiting one is sent as soon as the place comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waits_for_a_place_within_max_pending_requests() {
    let pki = TestPki::new();
    let upstream = holding_upstream(&pki).await;
    let cfg = yaml(&pki, upstream.addr, "none");
    let address = format!("    address: \"{}\"\n", upstream.addr);
    let cfg = cfg.replace(
        &address,
        &format!("{address}    max_requests_in_flight: 1\n    max_pending_requests: 1\n    pending_timeout_ms: 20000\n"),
    );
    // Its own upstream name: the other test in this binary counts refusals of `fhir`.
    assert!(cfg.contains("- name: fhir\n") && cfg.contains("upstream: fhir"));
    let cfg = cfg.replace("- name: fhir\n", "- name: queued\n").replace("upstream: fhir", "upstream: queued");
    let gw = TestGateway::start_yaml(&cfg, pki.dir(), Vec::new());
    let url = gw.url("/fhir/Patient/a-p1");
    let send = || {
        let (client, url) = (pki.public_client(), url.clone());
        tokio::spawn(async move { client.get(&url).send().await.unwrap() })
    };

    let held = send();
    upstream.arrived.notified().await;
    let waiting = send();
    // Bounded: the gauge says the second request is waiting (not sent: the upstream has one).
    let gauge = "phigate_upstream_pending_requests{upstream=\"queued\"} 1";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !admin_get(gw.admin, "/metrics").await.contains(gauge) {
        assert!(std::time::Instant::now() < deadline, "the second request never waited");
        tokio::task::yield_now().await;
    }
    let refused = pki.public_client().get(&url).send().await.unwrap();
    assert_eq!((refused.status.as_u16(), error_code(&refused.body).as_str()), (503, "upstream_overloaded"));
    assert_eq!(upstream.received.load(Ordering::SeqCst), 1);

    upstream.release.send_replace(true);
    assert_eq!(held.await.unwrap().status, 200);
    assert_eq!(waiting.await.unwrap().status, 200, "sent once the place came back");
    assert_eq!(upstream.received.load(Ordering::SeqCst), 2);
    let metrics = admin_get(gw.admin, "/metrics").await;
    assert!(metrics.contains("phigate_upstream_pending_requests{upstream=\"queued\"} 0"), "{metrics}");
    assert!(metrics.contains("phigate_upstream_overloaded_total{upstream=\"queued\"} 1"), "{metrics}");
}
