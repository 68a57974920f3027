//! Pre-reads end to end: a write by id (`PUT`, `PATCH`, `DELETE Observation/123`) by a principal
//! held to a set of patients is judged by the stored record it changes. The gateway reads the
//! record first (the upstream sees a bare `GET` of the same path), the policy stage checks it like
//! a response, and only then is the write audited and forwarded. See `authz_writes.rs` for the
//! refusals of writes to a foreign patient's record.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod common;

use common::writes::*;
use common::FullEnv;
use http::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_of_a_care_team_patients_record_is_pre_read_then_forwarded() {
    let env = FullEnv::start().await;
    let path = "/fhir/Observation/a-p1-obs-01";
    let res = send(&env, "writer_a", Method::DELETE, path, FHIR_JSON, Vec::new()).await;
    assert_eq!(res.status, 405, "forwarded to the read-only upstream: {}", res.text());
    assert_pre_read(&env, path).await;
    let seen = forwarded(&env).await;
    assert_eq!((seen.method, seen.path_and_query.as_str()), (Method::DELETE, path));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_of_a_record_that_does_not_exist_is_pre_read_404_then_forwarded() {
    let env = FullEnv::start().await;
    // Update-as-create: nothing is stored under the id, and the body names a care-team patient.
    let path = "/fhir/Observation/a-p1-obs-new";
    let body = observation("a-p1");
    let res = send(&env, "writer_a", Method::PUT, path, FHIR_JSON, body.clone()).await;
    assert_eq!(res.status, 405, "forwarded to the read-only upstream: {}", res.text());
    assert_pre_read(&env, path).await;
    let seen = forwarded(&env).await;
    assert_eq!((seen.method, seen.path_and_query.as_str()), (Method::PUT, path));
    assert_eq!(seen.body.as_deref(), Some(&body[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_of_a_patient_by_id_is_forwarded_without_a_pre_read() {
    let env = FullEnv::start().await;
    // `Patient/a-p1` names its patient in the path: policy judged it, nothing to read first.
    let path = "/fhir/Patient/a-p1";
    let body = serde_json::to_vec(&serde_json::json!({"resourceType": "Patient", "id": "a-p1"})).unwrap();
    let res = send(&env, "writer_a", Method::PUT, path, FHIR_JSON, body).await;
    assert_eq!(res.status, 405, "forwarded to the read-only upstream: {}", res.text());
    let seen = forwarded(&env).await;
    assert_eq!((seen.method, seen.path_and_query.as_str()), (Method::PUT, path));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_naming_nobody_is_still_judged_by_the_stored_record() {
    // A JSON Patch names the patients its values write (none here); the record it changes is
    // read and judged first.
    let env = FullEnv::start().await;
    let patch = br#"[{"op":"replace","path":"/status","value":"amended"}]"#.to_vec();
    let foreign = "/fhir/Observation/a-p3-obs-01";
    let res =
        send(&env, "writer_a", Method::PATCH, foreign, "application/json-patch+json", patch.clone()).await;
    assert_eq!(refusal(&res), (403, "patient_not_permitted".into()));
    assert_pre_read(&env, foreign).await;
    assert_nothing_forwarded_since_last(&env).await;

    let own = "/fhir/Observation/a-p1-obs-01";
    let res = send(&env, "writer_a", Method::PATCH, own, "application/json-patch+json", patch.clone()).await;
    assert_eq!(res.status, 405, "forwarded to the read-only upstream: {}", res.text());
    assert_pre_read(&env, own).await;
    let seen = forwarded(&env).await;
    assert_eq!((seen.method, seen.path_and_query.as_str()), (Method::PATCH, own));
    assert_eq!(seen.body.as_deref(), Some(&patch[..]));
}

/// Makes clinicians tenant-wide in the policy data (no demo persona writes tenant-wide) and
/// removes the shipped Rego tests, which assume care teams.
fn tenant_wide_clinicians(dir: &std::path::Path) {
    edit_policy(
        &dir.join("data/roles.yaml"),
        "clinician: {patient_access: care_team}",
        "clinician: {patient_access: tenant}",
    );
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with("_test.rego") {
            std::fs::remove_file(path).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_by_a_principal_without_a_permitted_set_is_forwarded_without_a_pre_read() {
    // No demo persona writes tenant-wide: make clinicians tenant-wide, and (as a policy may) name
    // a permitted set only for restricted principals. The shipped tests assume otherwise.
    let env = FullEnv::start_with_policies(|dir| {
        tenant_wide_clinicians(dir);
        edit_policy(
            &dir.join("authz.rego"),
            "permitted_tenant := input.principal.tenant if {\n",
            "permitted_tenant := input.principal.tenant if {\n\trestricted\n",
        );
    })
    .await;
    let path = "/fhir/Observation/a-p3-obs-01";
    let res = send(&env, "writer_a", Method::DELETE, path, FHIR_JSON, Vec::new()).await;
    assert_eq!(res.status, 405, "forwarded to the read-only upstream: {}", res.text());
    let seen = forwarded(&env).await;
    assert_eq!((seen.method, seen.path_and_query.as_str()), (Method::DELETE, path), "no pre-read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_wide_write_by_id_is_judged_by_the_stored_records_tenant() {
    // A tenant-wide writer (clinicians made tenant-wide) is held to its tenant, not to a list:
    // the stored record of its own tenant lets the write through, another tenant's refuses it.
    let env = FullEnv::start_with_policies(|dir| {
        tenant_wide_clinicians(dir);
    })
    .await;
    let foreign = "/fhir/Observation/b-p1-obs-01";
    let res = send(&env, "writer_a", Method::DELETE, foreign, FHIR_JSON, Vec::new()).await;
    assert_eq!(refusal(&res), (403, "patient_not_permitted".into()));
    assert_pre_read(&env, foreign).await;
    assert_nothing_forwarded_since_last(&env).await;

    // Outside the care team the shipped data gives writer_a, but in its tenant.
    let own = "/fhir/Observation/a-p5-obs-01";
    let res = send(&env, "writer_a", Method::DELETE, own, FHIR_JSON, Vec::new()).await;
    assert_eq!(res.status, 405, "forwarded to the read-only upstream: {}", res.text());
    assert_pre_read(&env, own).await;
    let seen = forwarded(&env).await;
    assert_eq!((seen.method, seen.path_and_query.as_str()), (Method::DELETE, own));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_record_over_the_buffer_cap_refuses_the_write_with_502() {
    // The pre-read answer is read whole or not at all: a record too large to check is no proof.
    let env = FullEnv::start_with(|_| {}, "limits:\n  max_response_buffer_bytes: 64\n").await;
    let path = "/fhir/Observation/a-p1-obs-01";
    let res = send(&env, "writer_a", Method::DELETE, path, FHIR_JSON, Vec::new()).await;
    assert_eq!(refusal(&res), (502, "upstream_error".into()));
    assert_pre_read(&env, path).await;
    assert!(env.upstream.recorder.try_next().is_none(), "the write was not forwarded");
}
