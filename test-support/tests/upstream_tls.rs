//! The sample FHIR upstream end to end over real mutual TLS on 127.0.0.1, driven by the test
//! client: FHIR behaviour, protocol negotiation, and who may connect.

use std::time::Duration;

use http::{StatusCode, Version};
use phigate_test_support::{
    start_plaintext_upstream, start_upstream, upstream_builder, TestClient, TestPki, TlsProbe, TlsVersions,
};
use rustls::AlertDescription;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn read_over_mtls_returns_the_resource_as_fhir_json_on_h2() {
    let pki = TestPki::new();
    let up = start_upstream(&pki).await;
    let res =
        pki.upstream_client().get(&format!("{}/Patient/a-p1", up.base_url())).send().await.expect("response");
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.version, Version::HTTP_2);
    assert_eq!(res.header("content-type"), Some("application/fhir+json"));
    let v = res.json();
    assert_eq!((v["resourceType"].as_str(), v["id"].as_str()), (Some("Patient"), Some("a-p1")));
    let missing = pki
        .upstream_client()
        .get(&format!("{}/Patient/zz-p9", up.base_url()))
        .send()
        .await
        .expect("response");
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["resourceType"], "OperationOutcome");
}

#[tokio::test]
async fn search_pages_can_be_walked_through_next_links() {
    let pki = TestPki::new();
    let up = start_upstream(&pki).await;
    let client = pki.upstream_client();
    let mut url = Some(format!("{}/Observation?_count=50", up.base_url()));
    let mut sizes = Vec::new();
    while let Some(u) = url.take() {
        let v = client.get(&u).send().await.expect("page").json();
        assert_eq!(v["total"], 108);
        sizes.push(v["entry"].as_array().map_or(0, Vec::len));
        url = v["link"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["relation"] == "next"))
            .and_then(|l| l["url"].as_str().map(str::to_owned));
        assert!(sizes.len() <= 3, "paging does not terminate");
    }
    assert_eq!(sizes, [50, 50, 8]);
}

#[tokio::test]
async fn compartment_search_and_everything_are_scoped_to_the_patient() {
    let pki = TestPki::new();
    let up = start_upstream(&pki).await;
    let client = pki.upstream_client();
    let v = client
        .get(&format!("{}/Patient/b-p2/Condition", up.base_url()))
        .send()
        .await
        .expect("compartment")
        .json();
    assert_eq!(v["total"], 2);
    let v = client
        .get(&format!("{}/Patient/b-p2/$everything?_count=100", up.base_url()))
        .send()
        .await
        .expect("everything")
        .json();
    assert_eq!(v["total"], 18);
    let entries = v["entry"].as_array().expect("entries");
    assert!(entries.iter().skip(1).all(|e| e["resource"]["subject"]["reference"] == "Patient/b-p2"));
}

#[tokio::test]
async fn batch_and_form_search_are_answered_over_tls() {
    let pki = TestPki::new();
    let up = start_upstream(&pki).await;
    let client = pki.upstream_client();
    let bundle = r#"{"resourceType":"Bundle","type":"batch","entry":[
        {"request":{"method":"GET","url":"Observation/a-p1-obs-02"}},
        {"request":{"method":"GET","url":"Encounter/nope"}}]}"#;
    let res = client
        .post(up.base_url())
        .header("content-type", "application/fhir+json")
        .body(bundle)
        .send()
        .await
        .expect("batch");
    let v = res.json();
    assert_eq!(v["type"], "batch-response");
    assert_eq!(v["entry"][0]["response"]["status"], "200 OK");
    assert_eq!(v["entry"][1]["response"]["status"], "404 Not Found");
    let seen = up.recorder.try_next().expect("recorded");
    assert_eq!((seen.method.as_str(), seen.body_len), ("POST", bundle.len()));
    assert_eq!(seen.body.as_deref(), Some(bundle.as_bytes()));
    let res = client
        .post(&format!("{}/Observation/_search", up.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("patient=a-p4&_count=4")
        .send()
        .await
        .expect("form search");
    assert_eq!(res.json()["entry"].as_array().map(Vec::len), Some(4));
}

#[tokio::test]
async fn metadata_is_served() {
    let pki = TestPki::new();
    let up = start_upstream(&pki).await;
    let res =
        pki.upstream_client().get(&format!("{}/metadata", up.base_url())).send().await.expect("metadata");
    assert_eq!(res.json()["resourceType"], "CapabilityStatement");
}

#[tokio::test]
async fn alpn_picks_h2_or_http1_and_the_recorder_sees_the_version() {
    let pki = TestPki::new();
    let up = start_upstream(&pki).await;
    let url = format!("{}/metadata", up.base_url());
    let h1 = pki.upstream_client_builder().http1_only().build().expect("client");
    let res = h1.get(&url).send().await.expect("h1");
    assert_eq!(res.version, Version::HTTP_11);
    let seen = tokio::time::timeout(WAIT, up.recorder.next()).await.expect("recorded");
    assert_eq!(seen.version, Version::HTTP_11);
    let h2 = pki.upstream_client_builder().http2_only().build().expect("client");
    let res = h2.get(&url).send().await.expect("h2");
    assert_eq!(res.version, Version::HTTP_2);
    let seen = tokio::time::timeout(WAIT, up.recorder.next()).await.expect("recorded");
    assert_eq!(seen.version, Version::HTTP_2);
}

#[tokio::test]
async fn client_without_certificate_is_refused_at_the_handshake() {
    let pki = TestPki::new();
    let up = start_upstream(&pki).await;
    let client = TestClient::builder()
        .root_ca(&pki.internal_ca)
        .server_name("fhir-upstream.internal")
        .build()
        .expect("client");
    let err = client
        .get(&format!("{}/metadata", up.base_url()))
        .send()
        .await
        .expect_err("no client cert must fail");
    assert_eq!(
        err.tls_error(),
        Some(rustls::Error::AlertReceived(AlertDescription::CertificateRequired)),
        "{err}"
    );
    assert_eq!(up.recorder.count(), 0, "no request reached the upstream");
}

#[tokio::test]
async fn end_user_certificate_from_public_ca_is_refused_by_the_upstream() {
    let pki = TestPki::new();
    let up = start_upstream(&pki).await;
    // A user holding a valid *public* client cert must not reach the internal network directly.
    let client = TestClient::builder()
        .root_ca(&pki.internal_ca)
        .client_cert(&pki.client)
        .server_name("fhir-upstream.internal")
        .build()
        .expect("client");
    let err = client
        .get(&format!("{}/metadata", up.base_url()))
        .send()
        .await
        .expect_err("public CA cert must fail");
    assert!(matches!(err.tls_error(), Some(rustls::Error::AlertReceived(_))), "{err}");
    assert_eq!(up.recorder.count(), 0);
}

#[tokio::test]
async fn client_that_trusts_only_the_public_ca_rejects_the_upstream_certificate() {
    let pki = TestPki::new();
    let up = start_upstream(&pki).await;
    let client = TestClient::builder()
        .root_ca(&pki.ca)
        .client_cert(&pki.gateway_client)
        .server_name("fhir-upstream.internal")
        .build()
        .expect("client");
    let err = client.get(&format!("{}/metadata", up.base_url())).send().await.expect_err("untrusted server");
    assert!(matches!(err.tls_error(), Some(rustls::Error::InvalidCertificate(_))), "{err}");
}

#[tokio::test]
async fn recorder_sees_client_cert_thumbprint_sni_and_target_as_sent() {
    let pki = TestPki::new();
    let up = start_upstream(&pki).await;
    let target = "/fhir/Observation?patient=a-p1&code=http%3A%2F%2Floinc.org%7C8867-4";
    pki.upstream_client()
        .get(&format!("https://{}{target}", up.addr))
        .header("x-probe", "1")
        .send()
        .await
        .expect("response");
    let seen = tokio::time::timeout(WAIT, up.recorder.next()).await.expect("recorded");
    assert_eq!(seen.path_and_query, target);
    assert_eq!(seen.client_cert_thumbprint.as_deref(), Some(&*pki.gateway_client.thumbprint()));
    assert_eq!(seen.sni.as_deref(), Some("fhir-upstream.internal"));
    assert_eq!(seen.headers.get("x-probe").map(|v| v.as_bytes()), Some(&b"1"[..]));
    assert_eq!(up.recorder.all().len(), 1);
}

#[tokio::test]
async fn tls12_only_client_cannot_connect_and_tls13_negotiates_h2() {
    let pki = TestPki::new();
    let up = start_upstream(&pki).await;
    let tls12 = pki.upstream_client_builder().tls_versions(TlsVersions::Tls12).build().expect("client");
    let err = TlsProbe::handshake(up.addr, tls12.tls_config()).await.expect_err("TLS 1.2 must be refused");
    assert!(matches!(err.tls_error(), Some(rustls::Error::AlertReceived(_))), "{err}");
    let info = TlsProbe::handshake(up.addr, pki.upstream_client().tls_config()).await.expect("TLS 1.3");
    assert_eq!(info.version, rustls::ProtocolVersion::TLSv1_3);
    assert_eq!(info.alpn.as_deref(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn raw_bytes_over_tls_get_the_raw_http1_response() {
    let pki = TestPki::new();
    let up = start_upstream(&pki).await;
    // Two pipelined requests, the last asking to close: both answers arrive, in order.
    let req = b"GET /fhir/Patient/b-p1 HTTP/1.1\r\nHost: fhir-upstream.internal\r\n\r\n\
                GET /fhir/metadata HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let raw = pki.upstream_client().raw(up.addr, req).await.expect("raw");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("\"id\":\"b-p1\""), "{text}");
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{text}");
    assert!(up.recorder.try_next().is_some_and(|s| s.path_and_query == "/fhir/Patient/b-p1"));
}

#[tokio::test]
async fn plaintext_upstream_serves_http_for_the_plaintext_option() {
    let up = start_plaintext_upstream().await;
    assert!(up.base_url().starts_with("http://127.0.0.1:"));
    let client = TestClient::builder().build().expect("client");
    let res = client.get(&format!("{}/Patient/a-p2", up.base_url())).send().await.expect("plaintext");
    assert_eq!((res.status, res.version), (StatusCode::OK, Version::HTTP_11));
    let seen = up.recorder.try_next().expect("recorded");
    assert_eq!(seen.client_cert_thumbprint, None);
}

#[tokio::test]
async fn public_base_url_is_used_for_full_urls_and_links() {
    let pki = TestPki::new();
    let up = upstream_builder(&pki)
        .public_base_url("https://gateway.example")
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let v = pki
        .upstream_client()
        .get(&format!("{}/Patient?_count=1", up.base_url()))
        .send()
        .await
        .expect("search")
        .json();
    assert_eq!(v["entry"][0]["fullUrl"], "https://gateway.example/fhir/Patient/a-p1");
}

#[tokio::test]
async fn shutdown_stops_accepting_connections() {
    let pki = TestPki::new();
    let up = start_upstream(&pki).await;
    let addr = up.addr;
    up.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[test]
fn upstream_on_its_own_runtime_serves_callers_outside_tokio() {
    let pki = TestPki::new();
    let dedicated =
        upstream_builder(&pki).bind_on_own_runtime("127.0.0.1:0".parse().expect("addr"), 1).expect("start");
    let url = format!("{}/Patient/a-p3", dedicated.upstream().base_url());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let res = rt.block_on(pki.upstream_client().get(&url).send()).expect("response");
    assert_eq!(res.status, StatusCode::OK);
    let addr = dedicated.upstream().addr;
    // The client's connection lives on `rt`; closing it first lets the graceful drain finish
    // at once instead of waiting out the grace period.
    drop(rt);
    drop(dedicated);
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[tokio::test]
async fn missing_tls_material_is_a_start_error_not_a_plaintext_server() {
    use phigate::demo::upstream::{SampleUpstream, UpstreamError};
    let err = SampleUpstream::builder().bind("127.0.0.1:0").await.expect_err("no TLS material");
    assert!(matches!(err, UpstreamError::Missing("cert")), "{err}");
    let pki = TestPki::new();
    let err = SampleUpstream::builder()
        .identity(&pki.upstream)
        .bind("127.0.0.1:0")
        .await
        .expect_err("no client CA");
    assert!(matches!(err, UpstreamError::Missing("client_ca")), "{err}");
}

#[tokio::test]
async fn upstream_starts_from_the_written_pem_files() {
    let pki = TestPki::new();
    let up = phigate::demo::upstream::SampleUpstream::builder()
        .cert(&pki.paths.upstream_cert)
        .key(&pki.paths.upstream_key)
        .client_ca(&pki.paths.internal_ca_cert)
        .bind("127.0.0.1:0")
        .await
        .expect("bind from files");
    let res =
        pki.upstream_client().get(&format!("{}/metadata", up.base_url())).send().await.expect("response");
    assert_eq!(res.status, StatusCode::OK);
}

#[tokio::test]
async fn oversized_body_is_413_and_recorded_without_body() {
    let pki = TestPki::new();
    let up = start_upstream(&pki).await;
    let res = pki
        .upstream_client()
        .post(up.base_url())
        .body(vec![b' '; 1024 * 1024 + 1])
        .send()
        .await
        .expect("response");
    assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE);
    let seen = up.recorder.try_next().expect("recorded");
    assert_eq!((seen.body_len, seen.body), (0, None));
}

#[tokio::test]
async fn hostile_host_header_does_not_steer_links() {
    let pki = TestPki::new();
    let up = start_upstream(&pki).await;
    let req = b"GET /fhir/Patient?_count=1 HTTP/1.1\r\nHost: evil.example/\"x\r\nConnection: close\r\n\r\n";
    let raw = pki.upstream_client().raw(up.addr, req).await.expect("raw");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(!text.contains("evil.example"), "{text}");
    assert!(text.contains(&format!("\"fullUrl\":\"https://{}/fhir/Patient/a-p1\"", up.addr)), "{text}");
}

#[tokio::test]
async fn bulk_export_sends_its_status_and_file_headers_over_tls() {
    let pki = TestPki::new();
    let up = start_upstream(&pki).await;
    let client = pki.upstream_client();
    let kick_off = client
        .get(&format!("{}/$export?_type=Patient,Condition", up.base_url()))
        .header("prefer", "respond-async")
        .header("x-phigate-tenant", "tenant-b")
        .send()
        .await
        .expect("kick-off");
    assert_eq!(kick_off.status, StatusCode::ACCEPTED);
    assert_eq!(kick_off.header("content-type"), Some("application/fhir+json"));
    let status_url = kick_off.header("content-location").expect("Content-Location").to_owned();
    assert_eq!(status_url, format!("{}/$export-poll-status?_jobId=job-1", up.base_url()));
    let first = client.get(&status_url).send().await.expect("first poll");
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!((first.header("x-progress"), first.header("retry-after")), (Some("in-progress"), Some("1")));
    assert!(first.body.is_empty());
    let done = client.get(&status_url).send().await.expect("second poll");
    assert_eq!((done.status, done.header("content-type")), (StatusCode::OK, Some("application/json")));
    let manifest = done.json();
    assert_eq!(manifest["output"][1]["type"], "Patient");
    let file_url = manifest["output"][1]["url"].as_str().expect("file URL");
    assert_eq!(file_url, format!("{}/Binary/job-1-Patient", up.base_url()));
    let file = client.get(file_url).send().await.expect("file");
    assert_eq!((file.status, file.header("content-type")), (StatusCode::OK, Some("application/fhir+ndjson")));
    // The tenant header crossed the wire: only tenant-b's four patients.
    let ids: Vec<_> = file
        .text()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("NDJSON line")["id"].clone())
        .collect();
    assert_eq!(ids, ["b-p1", "b-p2", "b-p3", "b-p4"]);
    let cancel = client.request(http::Method::DELETE, &status_url).send().await.expect("cancel");
    assert_eq!(cancel.status, StatusCode::ACCEPTED);
    assert_eq!(client.get(&status_url).send().await.expect("poll").status, StatusCode::NOT_FOUND);
}
