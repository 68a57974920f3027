//! Patient-level authorization of what a request *carries* (issue 4), end to end through the
//! gateway with the demo's personas, policies and care teams: writes judged by the patient their
//! body names and, for writes by id, by the stored record they change (its pre-read is covered in
//! `pre_read.rs`), `POST _search` judged by its form body, the body inspection cap, and a policy
//! that fails at evaluation time. Every refusal is checked at the upstream too: a denied request
//! must never reach it (HIPAA minimum necessary, 45 CFR 164.502(b)).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod common;

use common::writes::*;
use common::FullEnv;
use http::Method;

const FORM: &str = "application/x-www-form-urlencoded";

/// Sum of every `phigate_policy_errors_total` series in the admin `/metrics` text.
async fn policy_errors(env: &FullEnv) -> f64 {
    common::admin_get(env.gw.admin, "/metrics")
        .await
        .lines()
        .filter(|l| l.starts_with("phigate_policy_errors_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_that_throws_is_403_policy_error_unforwarded_and_counted() {
    // Defined for the load-time probe (no principal); two conflicting values of one complete
    // rule once a principal is present, which is an evaluation error.
    let env = FullEnv::start_with_policies(|dir| {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rego") {
                std::fs::remove_file(path).unwrap();
            }
        }
        std::fs::write(
            dir.join("authz.rego"),
            "package phigate.authz\n\n\
             decision := {\"allow\": false, \"reasons\": [\"unauthenticated\"]} if not input.principal\n\n\
             decision := {\"allow\": true, \"reasons\": [\"fhir\"]} if input.principal\n\n\
             decision := {\"allow\": false, \"reasons\": [\"no_grant\"]} if input.principal\n",
        )
        .unwrap();
    })
    .await;
    let before = policy_errors(&env).await;
    let (s, code, _) = env.get_as("clinician_a", "/fhir/Patient/a-p1").await;
    assert_eq!((s, code.as_str()), (403, "policy_error"));
    // Only this test makes the policy throw; the counter is process-wide.
    assert_eq!(policy_errors(&env).await, before + 1.0);
    assert_eq!(env.upstream.recorder.count(), 0, "a failed evaluation forwards nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_for_a_care_team_patient_is_forwarded_with_its_body_unchanged() {
    let env = FullEnv::start().await;
    let body = observation("a-p1");
    let res = send(&env, "writer_a", Method::POST, "/fhir/Observation", FHIR_JSON, body.clone()).await;
    // The sample upstream is read-only: its 405 proves the write got through the gateway.
    assert_eq!(res.status, 405, "{}", res.text());
    let seen = forwarded(&env).await;
    assert_eq!((seen.method, seen.path_and_query.as_str()), (Method::POST, "/fhir/Observation"));
    assert_eq!(seen.body.as_deref(), Some(&body[..]), "the upstream gets the body that was judged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_for_a_foreign_patient_is_403_patient_not_permitted_and_not_forwarded() {
    let env = FullEnv::start().await;
    let res = send(&env, "writer_a", Method::POST, "/fhir/Observation", FHIR_JSON, observation("a-p3")).await;
    assert_eq!(refusal(&res), (403, "patient_not_permitted".into()));
    assert!(!res.text().contains("a-p3"), "the refusal does not echo the patient");
    assert_nothing_forwarded_since_last(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_for_another_tenants_patient_is_403_tenant_mismatch_and_not_forwarded() {
    let env = FullEnv::start().await;
    let res = send(&env, "writer_a", Method::POST, "/fhir/Observation", FHIR_JSON, observation("b-p1")).await;
    assert_eq!(refusal(&res), (403, "tenant_mismatch".into()));
    assert_nothing_forwarded_since_last(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_patient_anywhere_in_a_written_resource_is_403_and_not_forwarded() {
    let env = FullEnv::start().await;
    // The subject is on the care team, but the performer puts the record in a-p3's compartment.
    let obs = serde_json::json!({
        "resourceType": "Observation", "status": "final", "code": {"text": "pulse"},
        "subject": {"reference": "Patient/a-p1"},
        "performer": [{"reference": "Patient/a-p3"}]
    });
    let res = send(
        &env,
        "writer_a",
        Method::POST,
        "/fhir/Observation",
        FHIR_JSON,
        serde_json::to_vec(&obs).unwrap(),
    )
    .await;
    assert_eq!(refusal(&res), (403, "patient_not_permitted".into()));
    let coverage =
        serde_json::json!({"resourceType": "Coverage", "beneficiary": {"reference": "Patient/a-p3"}});
    let res = send(
        &env,
        "writer_a",
        Method::POST,
        "/fhir/Coverage",
        FHIR_JSON,
        serde_json::to_vec(&coverage).unwrap(),
    )
    .await;
    assert_eq!(refusal(&res), (403, "patient_not_permitted".into()));
    assert_nothing_forwarded_since_last(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_is_judged_by_the_subject_its_body_names() {
    let env = FullEnv::start().await;
    let path = "/fhir/Observation/a-p1-obs-01";
    // Moving a care-team patient's Observation onto a foreign patient is refused.
    let res = send(&env, "writer_a", Method::PUT, path, FHIR_JSON, observation("a-p3")).await;
    assert_eq!(refusal(&res), (403, "patient_not_permitted".into()));
    assert_nothing_forwarded_since_last(&env).await;

    let body = observation("a-p2");
    let res = send(&env, "writer_a", Method::PUT, path, FHIR_JSON, body.clone()).await;
    assert_eq!(res.status, 405, "forwarded to the read-only upstream: {}", res.text());
    // The stored record (a-p1's) was read and judged first.
    assert_pre_read(&env, path).await;
    let seen = forwarded(&env).await;
    assert_eq!((seen.method, seen.path_and_query.as_str()), (Method::PUT, path));
    assert_eq!(seen.body.as_deref(), Some(&body[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_by_a_care_team_writer_are_403_and_not_forwarded() {
    let env = FullEnv::start().await;
    // The server would pick the targets by search criteria, among every patient's records.
    let res =
        send(&env, "writer_a", Method::DELETE, "/fhir/Observation?code=8867-4", FHIR_JSON, Vec::new()).await;
    assert_eq!(refusal(&res), (403, "patient_not_permitted".into()));
    let res = send(
        &env,
        "writer_a",
        Method::PUT,
        "/fhir/Observation?_id=a-p3-obs-01",
        FHIR_JSON,
        observation("a-p1"),
    )
    .await;
    assert_eq!(refusal(&res), (403, "patient_not_permitted".into()));
    assert_nothing_forwarded_since_last(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_with_only_read_scopes_is_403_scope_insufficient_and_not_forwarded() {
    let env = FullEnv::start().await;
    // clinician_a treats a-p1 but holds user/*.rs only.
    let res =
        send(&env, "clinician_a", Method::POST, "/fhir/Observation", FHIR_JSON, observation("a-p1")).await;
    assert_eq!(refusal(&res), (403, "scope_insufficient".into()));
    let res = send(
        &env,
        "clinician_a",
        Method::PUT,
        "/fhir/Observation/a-p1-obs-01",
        FHIR_JSON,
        observation("a-p1"),
    )
    .await;
    assert_eq!(refusal(&res), (403, "scope_insufficient".into()));
    assert_nothing_forwarded_since_last(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_search_is_judged_by_its_form_body() {
    let env = FullEnv::start().await;
    let path = "/fhir/Observation/_search";
    let res = send(&env, "clinician_a", Method::POST, path, FORM, b"patient=a-p3".to_vec()).await;
    assert_eq!(refusal(&res), (403, "patient_not_permitted".into()));
    assert_nothing_forwarded_since_last(&env).await;

    let res = send(&env, "clinician_a", Method::POST, path, FORM, b"patient=a-p1".to_vec()).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let bundle = res.json();
    assert_eq!(bundle["resourceType"], "Bundle");
    assert!(bundle["entry"].as_array().is_some_and(|e| !e.is_empty()), "{bundle}");
    let seen = forwarded(&env).await;
    // The tenant's max_page_size obligation bounds the page: the body names no _count, so the
    // URL gains one.
    let capped = format!("{path}?_count=100");
    assert_eq!((seen.method, seen.path_and_query.as_str()), (Method::POST, capped.as_str()));
    assert_eq!(seen.body.as_deref(), Some(&b"patient=a-p1"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_over_the_inspection_cap_is_413_body_too_large_and_not_forwarded() {
    let env = FullEnv::start().await;
    // A Bundle the gateway cannot read whole cannot be judged entry by entry: refused.
    let entry = serde_json::json!({"request": {"method": "GET", "url": "Patient/a-p1"}});
    let bundle = serde_json::json!({
        "resourceType": "Bundle", "type": "batch", "entry": vec![entry; 2000],
    });
    let body = serde_json::to_vec(&bundle).unwrap();
    assert!(body.len() > 64 * 1024, "{} bytes", body.len());
    let res = send(&env, "clinician_a", Method::POST, "/fhir", FHIR_JSON, body).await;
    assert_eq!(refusal(&res), (413, "body_too_large".into()));
    assert_nothing_forwarded_since_last(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_moving_a_record_to_another_patient_is_403_before_any_read() {
    let env = FullEnv::start().await;
    // The patch names a-p3; what it changes is judged by its pre-read (see pre_read.rs).
    let patch = br#"[{"op":"replace","path":"/subject","value":{"reference":"Patient/a-p3"}}]"#;
    let path = "/fhir/Observation/a-p1-obs-01";
    let res =
        send(&env, "writer_a", Method::PATCH, path, "application/json-patch+json", patch.to_vec()).await;
    assert_eq!(refusal(&res), (403, "patient_not_permitted".into()));
    assert_nothing_forwarded_since_last(&env).await;
    // The same as a FHIRPath Patch (a Parameters resource).
    let fhirpath = serde_json::json!({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": "Observation.subject"},
        {"name": "value", "valueReference": {"reference": "Patient/a-p3"}}]}]});
    let res =
        send(&env, "writer_a", Method::PATCH, path, FHIR_JSON, serde_json::to_vec(&fhirpath).unwrap()).await;
    assert_eq!(refusal(&res), (403, "patient_not_permitted".into()));
    assert_nothing_forwarded_since_last(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_a_foreign_patients_record_by_id_are_403_and_not_forwarded() {
    let env = FullEnv::start().await;
    // a-p3-obs-01 belongs to a-p3, off writer_a's care team; the path and the PUT body name no
    // foreign patient, only the stored record does.
    let path = "/fhir/Observation/a-p3-obs-01";
    let res = send(&env, "writer_a", Method::DELETE, path, FHIR_JSON, Vec::new()).await;
    assert_eq!(refusal(&res), (403, "patient_not_permitted".into()));
    assert!(!res.text().contains("a-p3"), "the refusal does not echo the patient");
    assert_pre_read(&env, path).await;
    let res = send(&env, "writer_a", Method::PUT, path, FHIR_JSON, observation("a-p1")).await;
    assert_eq!(refusal(&res), (403, "patient_not_permitted".into()));
    assert_pre_read(&env, path).await;
    assert_nothing_forwarded_since_last(&env).await;
    // The pre-read reads PHI on the writer's behalf, so each write has a durable attempt record
    // before the upstream saw anything, then a denial.
    let records = env.audit_records();
    let writes: Vec<_> = records.iter().filter(|r| r["method"] == "DELETE" || r["method"] == "PUT").collect();
    let phases: Vec<&str> = writes.iter().map(|r| r["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["attempt", "denied", "attempt", "denied"], "{writes:?}");
    assert_eq!(writes[0]["request_id"], writes[1]["request_id"]);
    assert_eq!(writes[2]["request_id"], writes[3]["request_id"]);
}
