//! The bench upstream and the open-loop client against each other over real mTLS (certificates
//! made with rcgen), on 127.0.0.1:0.

#![allow(clippy::unwrap_used)] // the PKI and server helpers below are test code too

use std::{sync::Arc, time::Duration};

use http::{header::AUTHORIZATION, HeaderValue};
use phigate_bench_upstream::{
    fhir::Payloads,
    rate::{self, RatePlan, RateReport},
    server, tls,
};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

type Chain = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

struct Pki {
    ca: CertificateDer<'static>,
    server: Chain,
    client: Chain,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |name: &str, purpose| {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.extended_key_usages.push(purpose);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone()], der)
    };
    Pki {
        server: leaf("fhir-upstream.internal", ExtendedKeyUsagePurpose::ServerAuth),
        client: leaf("bench-client", ExtendedKeyUsagePurpose::ClientAuth),
        ca: ca.der().clone(),
    }
}

/// Starts the upstream on an ephemeral loopback port (bound before serving) and returns it.
async fn start_upstream(pki: &Pki) -> std::net::SocketAddr {
    let config =
        tls::server_config(pki.server.0.clone(), pki.server.1.clone_key(), std::slice::from_ref(&pki.ca))
            .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(listener, config, Arc::new(Payloads::new(["pat-1", "pat-2"]))));
    addr
}

async fn send(pki: &Pki, addr: std::net::SocketAddr, paths: &[&str], h2: bool, cert: bool) -> RateReport {
    let client = cert.then(|| (pki.client.0.clone(), pki.client.1.clone_key()));
    let plan = RatePlan {
        addr,
        server_name: ServerName::try_from("fhir-upstream.internal").unwrap(),
        authority: "fhir-upstream.internal".to_owned(),
        paths: Arc::new(paths.iter().map(|p| (*p).to_owned()).collect()),
        headers: vec![(AUTHORIZATION, HeaderValue::from_static("Bearer test"))],
        rate_per_sec: 200.0,
        h2_streams: 16,
        duration: Duration::from_millis(500),
        warmup: Duration::ZERO,
        connections: 2,
        h2,
        tls: tls::client_config(std::slice::from_ref(&pki.ca), client, h2).unwrap(),
    };
    rate::run(plan).await.unwrap()
}

const MIXED: &[&str] = &["/fhir/Patient/pat-1", "/fhir/Observation?patient=pat-2&_count=50"];

#[tokio::test]
async fn reads_and_searches_succeed_over_mtls_http1() {
    let pki = pki();
    let addr = start_upstream(&pki).await;
    let report = send(&pki, addr, MIXED, false, true).await;
    assert!(report.requests > 0, "{report:?}");
    assert_eq!(report.errors_status + report.errors_socket, 0, "{report:?}");
}

#[tokio::test]
async fn reads_and_searches_succeed_over_mtls_http2() {
    let pki = pki();
    let addr = start_upstream(&pki).await;
    let report = send(&pki, addr, MIXED, true, true).await;
    assert!(report.requests > 0, "{report:?}");
    assert_eq!(report.errors_status + report.errors_socket, 0, "{report:?}");
}

#[tokio::test]
async fn client_without_certificate_gets_no_answer() {
    let pki = pki();
    let addr = start_upstream(&pki).await;
    let report = send(&pki, addr, MIXED, false, false).await;
    assert!(report.requests > 0, "{report:?}");
    assert_eq!(report.errors_socket, report.requests, "{report:?}");
}

#[tokio::test]
async fn unknown_patient_and_unknown_path_are_404_counted_as_errors() {
    let pki = pki();
    let addr = start_upstream(&pki).await;
    let report = send(&pki, addr, &["/fhir/Patient/nobody", "/other"], false, true).await;
    assert!(report.requests > 0, "{report:?}");
    assert_eq!(report.errors_status, report.requests, "{report:?}");
}
