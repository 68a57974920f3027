//! Compressed upstream responses. FHIR servers (HAPI among them) gzip responses for clients that
//! accept it, and most HTTP clients send `Accept-Encoding: gzip`. The gateway must read what it
//! verifies, so it asks upstreams for identity (the client's `Accept-Encoding` is not forwarded),
//! and a body an upstream compresses anyway is decompressed before any stage sees it: verified,
//! cut and counted like any other, never passed through unread.

#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod common;

use common::{error_code, FullEnv};
use phigate::demo::upstream::Gzip;

/// GET as `persona`, accepting gzip like curl `--compressed` or Python requests.
async fn get_accepting_gzip(env: &FullEnv, persona: &str, path: &str) -> phigate_test_support::TestResponse {
    env.pki
        .public_client()
        .get(&env.gw.url(path))
        .bearer(&env.token(persona))
        .header("accept-encoding", "gzip, deflate, br")
        .send()
        .await
        .unwrap()
}

fn json(res: &phigate_test_support::TestResponse) -> serde_json::Value {
    assert_eq!(res.header("content-encoding"), None, "the client gets what the gateway read");
    serde_json::from_slice(&res.body)
        .unwrap_or_else(|e| panic!("{e}: {:?}", &res.body[..16.min(res.body.len())]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_accepting_gzip_is_served_verified_json_and_the_upstream_is_asked_for_identity() {
    let env = FullEnv::start().await;
    let res = get_accepting_gzip(&env, "clinician_a", "/fhir/Observation?patient=a-p1").await;
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    let bundle = json(&res);
    assert!(bundle["entry"].as_array().is_some_and(|e| !e.is_empty()));
    let seen = env.upstream.recorder.next().await;
    assert!(seen.headers.get("accept-encoding").is_none(), "{:?}", seen.headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_the_upstream_compresses_anyway_is_read_and_verified() {
    let env = FullEnv::start_custom(|b| b.gzip(Gzip::Always), |_| {}, "", "", |cfg, _| cfg).await;
    // A search and a read by id of the clinician's patient: verified, sent as JSON.
    for path in ["/fhir/Observation?patient=a-p1", "/fhir/Observation/a-p1-obs-01"] {
        let res = get_accepting_gzip(&env, "clinician_a", path).await;
        assert_eq!(res.status, 200, "{path}: {}", String::from_utf8_lossy(&res.body));
        json(&res);
    }
    // A read by id of another patient's record: refused on what the body says, so it was read.
    let res = get_accepting_gzip(&env, "clinician_a", "/fhir/Observation/a-p3-obs-01").await;
    assert_eq!((res.status.as_u16(), error_code(&res.body).as_str()), (403, "patient_not_permitted"));
}

/// An export file the upstream gzips anyway streams decompressed through the line check: the
/// labelled resource is left out of what the client reads, as from an upstream that does not
/// compress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_file_the_upstream_compresses_is_checked_line_by_line() {
    let identity = "  routes:\n    fhir: { forward_tenant_header: true }\n";
    let extra = "bulk_export: { ttl_secs: 600 }\n";
    let env = FullEnv::start_custom(|b| b.gzip(Gzip::Always), |_| {}, identity, extra, |cfg, _| cfg).await;
    let get = |path: String, prefer: bool| {
        let mut req = env.pki.public_client().get(&env.gw.url(&path)).bearer(&env.token("bulk_a"));
        if prefer {
            req = req.header("prefer", "respond-async");
        }
        req.header("accept-encoding", "gzip").send()
    };
    let issued = |url: &str| url[url.find("/fhir/").unwrap()..].to_owned();
    let res = get("/fhir/Patient/$export?_type=Condition".into(), true).await.unwrap();
    assert_eq!(res.status, 202, "{}", res.text());
    let status = issued(res.header("content-location").unwrap());
    let mut manifest = None;
    for _ in 0..5 {
        let res = get(status.clone(), false).await.unwrap();
        if res.status == 200 {
            manifest = Some(json(&res));
            break;
        }
        assert_eq!(res.status, 202, "{}", res.text());
    }
    let manifest = manifest.expect("the export completes in 5 polls");
    let url = manifest["output"][0]["url"].as_str().unwrap();
    let res = get(issued(url), false).await.unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("content-encoding"), None);
    let text = res.text();
    assert!(text.lines().count() > 1 && text.lines().all(|l| l.starts_with('{')), "{text}");
    assert!(text.contains("a-p1-cond-1") && !text.contains("a-p1-cond-psy"), "{text}");
}

/// A FHIR write, batch or `_search` form whose body is compressed: the gateway reads bodies as
/// sent, so it is refused (415) before anything is forwarded, with a stable code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_request_body_is_refused_with_415_and_nothing_is_forwarded() {
    use std::io::Write as _;
    let env = FullEnv::start().await;
    let body = br#"{"resourceType":"Bundle","type":"batch","entry":[]}"#;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(body).unwrap();
    let gz = enc.finish().unwrap();
    let res = env
        .pki
        .public_client()
        .post(&env.gw.url("/fhir"))
        .bearer(&env.token("clinician_a"))
        .header("content-type", "application/fhir+json")
        .header("content-encoding", "gzip")
        .body(gz)
        .send()
        .await
        .unwrap();
    assert_eq!((res.status.as_u16(), error_code(&res.body).as_str()), (415, "content_encoding_unsupported"));
    // `identity` is no coding: read as sent.
    let res = env
        .pki
        .public_client()
        .post(&env.gw.url("/fhir/Observation/_search"))
        .bearer(&env.token("clinician_a"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-encoding", "identity")
        .body(b"patient=a-p1".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    let seen = env.upstream.recorder.next().await;
    assert!(
        seen.path_and_query.starts_with("/fhir/Observation/_search"),
        "the refused batch was never forwarded"
    );
}

/// `server.response_compression_level`: the gateway compresses what it verified for a client
/// that accepts it (the upstream was still asked for identity); other clients get it as is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_response_compression_a_client_accepting_gzip_gets_the_verified_body_gzipped() {
    use std::io::Read as _;
    let extra = "server:\n  response_compression_level: 1\n";
    let env = FullEnv::start_custom(|b| b, |_| {}, "", extra, |cfg, _| cfg).await;
    let path = "/fhir/Observation?patient=a-p1";
    let res = env
        .pki
        .public_client()
        .get(&env.gw.url(path))
        .bearer(&env.token("clinician_a"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-encoding"), Some("gzip"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(&res.body[..]).read_to_string(&mut text).unwrap();
    let bundle: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(bundle["entry"].as_array().is_some_and(|e| !e.is_empty()));
    assert!(res.body.len() < text.len() / 2, "{} of {}", res.body.len(), text.len());
    let seen = env.upstream.recorder.next().await;
    assert!(seen.headers.get("accept-encoding").is_none());

    let (s, _, plain) = env.get_as("clinician_a", path).await;
    assert_eq!(s, 200);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&plain).unwrap(), bundle, "the same, uncompressed");
}
