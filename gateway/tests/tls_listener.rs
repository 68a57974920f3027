//! The public listener: TLS 1.3 only (h1 and h2 by ALPN), client certificate modes, and
//! certificate hot reload without dropping established connections.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod common;

use std::sync::Arc;

use common::Env;
use phigate_test_support::{TlsProbe, TlsVersions};

fn probe_config(
    env: &Env,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(env.pki.ca.root_store())
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls13_handshake_succeeds_with_h2_and_http11() {
    let env = Env::start().await;
    let info =
        TlsProbe::handshake(env.gw.addr, probe_config(&env, &[&rustls::version::TLS13])).await.unwrap();
    assert_eq!(info.version, rustls::ProtocolVersion::TLSv1_3);
    assert_eq!(info.alpn.as_deref(), Some(&b"h2"[..]));

    for client in [env.pki.public_client_builder().http2_only(), env.pki.public_client_builder().http1_only()]
    {
        let client = client.build().unwrap();
        let res = client.get(&env.gw.url("/fhir/Patient/a-p1")).send().await.unwrap();
        assert_eq!(res.status, 200, "{}", res.text());
        assert!(res.header("x-request-id").is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_only_client_fails_the_handshake() {
    let env = Env::start().await;
    let err = TlsProbe::handshake(env.gw.addr, probe_config(&env, &[&rustls::version::TLS12])).await;
    assert!(err.is_err(), "a TLS 1.2-only client must not connect");
    let client = env.pki.public_client_builder().tls_versions(TlsVersions::Tls12).build().unwrap();
    assert!(client.get(&env.gw.url("/fhir/metadata")).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_cert_refuses_no_cert_and_untrusted_cert() {
    let env = Env::with_client_cert("required").await;
    let url = env.gw.url("/fhir/Patient/a-p1");
    // In TLS 1.3 the client finishes first; the server's refusal surfaces on the first request.
    let no_cert = env.pki.public_client();
    assert!(no_cert.get(&url).send().await.is_err(), "no client certificate must fail");

    let rogue = phigate_test_support::CertAuthority::new("rogue").unwrap();
    let rogue_cert = rogue.issue_client("mallory").unwrap();
    let untrusted = env.pki.public_client_builder().client_cert(&rogue_cert).build().unwrap();
    assert!(untrusted.get(&url).send().await.is_err(), "an untrusted client certificate must fail");

    let trusted = env.pki.end_user_client();
    assert_eq!(trusted.get(&url).send().await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_cert_accepts_both_but_not_an_untrusted_one() {
    let env = Env::with_client_cert("optional").await;
    let url = env.gw.url("/fhir/Patient/a-p1");
    assert_eq!(env.pki.public_client().get(&url).send().await.unwrap().status, 200);
    assert_eq!(env.pki.end_user_client().get(&url).send().await.unwrap().status, 200);
    let rogue = phigate_test_support::CertAuthority::new("rogue").unwrap();
    let untrusted =
        env.pki.public_client_builder().client_cert(&rogue.issue_client("m").unwrap()).build().unwrap();
    assert!(untrusted.get(&url).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_serves_the_new_cert_and_keeps_open_connections() {
    let env = Env::start().await;
    let url = env.gw.url("/fhir/Patient/a-p1");
    // One keep-alive connection opened before the reload, used again after it.
    let mut kept = KeptConnection::open(&env).await;
    assert_eq!(kept.get("/fhir/Patient/a-p1").await, 200);
    let before =
        TlsProbe::handshake(env.gw.addr, probe_config(&env, &[&rustls::version::TLS13])).await.unwrap();

    let fresh =
        env.pki.issue_server(phigate_test_support::WhichCa::Public, &["localhost", "127.0.0.1"]).unwrap();
    std::fs::write(&env.pki.paths.gateway_cert, fresh.cert_pem()).unwrap();
    std::fs::write(&env.pki.paths.gateway_key, fresh.key_pem()).unwrap();
    assert_eq!(env.gw.reloader.reload_certs(), 1, "the listener picked up the new pair");

    let after =
        TlsProbe::handshake(env.gw.addr, probe_config(&env, &[&rustls::version::TLS13])).await.unwrap();
    assert_ne!(before.peer_certificates[0], after.peer_certificates[0]);
    assert_eq!(after.peer_certificates[0].as_ref(), fresh.cert_der().as_ref());
    assert_eq!(kept.get("/fhir/Patient/a-p2").await, 200, "the established connection still works");
    assert_eq!(env.pki.public_client().get(&url).send().await.unwrap().status, 200);

    // A broken pair is refused and the current one keeps serving.
    std::fs::write(&env.pki.paths.gateway_key, "not a key").unwrap();
    assert_eq!(env.gw.reloader.reload_certs(), 0);
    let still =
        TlsProbe::handshake(env.gw.addr, probe_config(&env, &[&rustls::version::TLS13])).await.unwrap();
    assert_eq!(still.peer_certificates[0].as_ref(), fresh.cert_der().as_ref());
}

/// One HTTP/1.1 connection over TLS that stays open between requests.
struct KeptConnection {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
}

impl KeptConnection {
    async fn open(env: &Env) -> Self {
        let mut cfg = (*probe_config(env, &[&rustls::version::TLS13])).clone();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpStream::connect(env.gw.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        KeptConnection { sender }
    }

    async fn get(&mut self, path: &str) -> u16 {
        use http_body_util::BodyExt;
        let req =
            http::Request::get(path).header("host", "localhost").body(http_body_util::Empty::new()).unwrap();
        let res = self.sender.send_request(req).await.unwrap();
        let status = res.status().as_u16();
        res.into_body().collect().await.unwrap();
        status
    }
}
