//! Helpers for the end-to-end write tests: send as a persona, observe what the upstream got.

use std::time::Duration;

use http::Method;
use phigate::demo::upstream::SeenRequest;
use phigate_test_support::TestResponse;

use super::FullEnv;

/// The FHIR JSON media type.
pub const FHIR_JSON: &str = "application/fhir+json";

/// Sends `method path` as `persona` with a body of the given content type.
pub async fn send(
    env: &FullEnv,
    persona: &str,
    method: Method,
    path: &str,
    ct: &str,
    body: Vec<u8>,
) -> TestResponse {
    env.pki
        .public_client()
        .request(method, &env.gw.url(path))
        .bearer(&env.token(persona))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// An Observation about `patient`, as a client would write it.
pub fn observation(patient: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "valueQuantity": {"value": 72, "unit": "/min"}
    }))
    .unwrap()
}

/// (status, stable error code) of a gateway refusal.
pub fn refusal(res: &TestResponse) -> (u16, String) {
    (res.status.as_u16(), super::error_code(&res.body))
}

/// The next request the upstream received (fails rather than hangs when there is none).
pub async fn forwarded(env: &FullEnv) -> SeenRequest {
    tokio::time::timeout(Duration::from_secs(10), env.upstream.recorder.next()).await.expect("forwarded")
}

/// Proves the refusals before it reached nothing: a permitted read sent now is the very next
/// request the upstream sees.
pub async fn assert_nothing_forwarded_since_last(env: &FullEnv) {
    assert!(env.upstream.recorder.try_next().is_none(), "a refused request reached the upstream");
    assert_eq!(env.get_as("clinician_a", "/fhir/Patient/a-p1").await.0, 200);
    assert_eq!(forwarded(env).await.path_and_query, "/fhir/Patient/a-p1");
}

/// Takes the next request the upstream received and checks it is the gateway's pre-read of
/// `path`: a bare `GET` asking for FHIR JSON, none of the write's body or content headers.
pub async fn assert_pre_read(env: &FullEnv, path: &str) {
    let seen = forwarded(env).await;
    assert_eq!((seen.method, seen.path_and_query.as_str()), (Method::GET, path), "the pre-read");
    assert_eq!(seen.headers.get("accept").unwrap(), FHIR_JSON);
    assert!(seen.headers.get("content-type").is_none(), "the write's headers stay with the write");
    assert!(seen.headers.get("x-request-id").is_some());
    assert_eq!(seen.body_len, 0);
}

/// Replaces `from` (which must be there) with `to` in a policy file.
pub fn edit_policy(file: &std::path::Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{} no longer contains {from:?}", file.display());
    std::fs::write(file, text.replace(from, to)).unwrap();
}
