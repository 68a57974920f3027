//! Pre-reads: a write by id by a principal held to a permitted set asks the gateway to read the
//! stored record first, and the record is judged like a response before the write goes anywhere.

// Test helpers outside #[test] functions unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use http::{Method, StatusCode};
use phigate_plugin::{ErrorCode, Interaction, PreRead, RequestCtx, Stage};
use support::*;

/// clinician_a's care team (a-p1, a-p2) with SMART write scopes.
fn writer_a() -> std::sync::Arc<phigate_plugin::Principal> {
    principal("clinician_a", "tenant-a", &["clinician"], &["user/*.cruds"])
}

/// `method /fhir/<ty>/<id>` by writer_a, through the stage's `on_request`.
async fn write_by_id(
    method: Method,
    interaction: Interaction,
    ty: &str,
    id: &str,
    body: &[&str],
) -> RequestCtx {
    let path = format!("/fhir/{ty}/{id}");
    let mut c = ctx(method, &path, writer_a(), fhir(interaction, ty, Some(id), body));
    stage().on_request(&mut c).await.unwrap();
    c
}

async fn delete_observation() -> RequestCtx {
    write_by_id(Method::DELETE, Interaction::Delete, "Observation", "o1", &[]).await
}

fn answered(c: &mut RequestCtx, status: u16, body: &[u8]) -> Result<(), ErrorCode> {
    let read = PreRead::Answered { status: StatusCode::from_u16(status).unwrap(), body };
    stage().on_pre_read(c, read).map_err(|d| d.code)
}

const OWN: &[u8] = br#"{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/a-p2"}}"#;
const FOREIGN: &[u8] = br#"{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/a-p3"}}"#;

#[tokio::test]
async fn update_patch_and_delete_by_id_on_a_compartment_type_ask_for_a_pre_read() {
    let update = write_by_id(Method::PUT, Interaction::Update, "Observation", "o1", &["a-p1"]).await;
    assert!(update.upstream.pre_read);
    let patch = write_by_id(Method::PATCH, Interaction::Patch, "Encounter", "e1", &[]).await;
    assert!(patch.upstream.pre_read);
    assert!(delete_observation().await.upstream.pre_read);
    // Outside the compartment, but naming its patient (data.fhir.patient_linked).
    let device = write_by_id(Method::PUT, Interaction::Update, "Device", "d1", &["a-p1"]).await;
    assert!(device.upstream.pre_read);
}

#[tokio::test]
async fn reads_writes_to_patient_and_writes_to_non_compartment_types_ask_for_none() {
    let mut read =
        get("/fhir/Observation/o1", writer_a(), fhir(Interaction::Read, "Observation", Some("o1"), &[]));
    stage().on_request(&mut read).await.unwrap();
    assert!(!read.upstream.pre_read, "a read is verified on its response");
    // The path names the patient, and policy judged it.
    let patient = write_by_id(Method::PUT, Interaction::Update, "Patient", "a-p1", &["a-p1"]).await;
    assert!(!patient.upstream.pre_read);
    let practitioner = write_by_id(Method::PUT, Interaction::Update, "Practitioner", "pr1", &[]).await;
    assert!(!practitioner.upstream.pre_read, "not in data.fhir.patient_compartment");
    let mut create = ctx(
        Method::POST,
        "/fhir/Observation",
        writer_a(),
        fhir(Interaction::Create, "Observation", None, &["a-p1"]),
    );
    stage().on_request(&mut create).await.unwrap();
    assert!(!create.upstream.pre_read, "a create changes no stored record");
}

#[tokio::test]
async fn stored_record_of_a_permitted_patient_lets_the_write_through() {
    let mut c = delete_observation().await;
    assert_eq!(answered(&mut c, 200, OWN), Ok(()));
}

#[tokio::test]
async fn stored_record_of_a_foreign_patient_is_403_patient_not_permitted() {
    let mut c = delete_observation().await;
    assert_eq!(answered(&mut c, 200, FOREIGN), Err(ErrorCode::PatientNotPermitted));
    // Anywhere in the record, not only its subject.
    let performer = br#"{"resourceType":"Observation","subject":{"reference":"Patient/a-p1"},
        "performer":[{"reference":"https://fhir.test/fhir/Patient/a-p3"}]}"#;
    assert_eq!(answered(&mut c, 200, performer), Err(ErrorCode::PatientNotPermitted));
}

#[tokio::test]
async fn missing_record_is_an_update_as_create_and_goes_through() {
    let mut c = write_by_id(Method::PUT, Interaction::Update, "Observation", "new-1", &["a-p1"]).await;
    let outcome = br#"{"resourceType":"OperationOutcome","issue":[]}"#;
    assert_eq!(answered(&mut c, 404, outcome), Ok(()));
    assert_eq!(answered(&mut c, 410, b""), Ok(()));
}

#[tokio::test]
async fn any_other_answer_refuses_the_write() {
    let mut c = delete_observation().await;
    assert_eq!(answered(&mut c, 500, b""), Err(ErrorCode::UpstreamError));
    assert_eq!(answered(&mut c, 403, OWN), Err(ErrorCode::UpstreamError), "a refused read proves nothing");
    assert_eq!(answered(&mut c, 304, b""), Err(ErrorCode::UpstreamError));
}

#[tokio::test]
async fn unreadable_or_empty_stored_record_is_403_policy_error() {
    let mut c = delete_observation().await;
    assert_eq!(answered(&mut c, 200, br#"{"resourceType":"Observ"#), Err(ErrorCode::PolicyError));
    assert_eq!(answered(&mut c, 200, b"<Observation/>"), Err(ErrorCode::PolicyError));
    assert_eq!(answered(&mut c, 200, b"  "), Err(ErrorCode::PolicyError));
}

#[tokio::test]
async fn failed_pre_read_refuses_with_the_gateways_code() {
    let mut c = delete_observation().await;
    let denial = stage().on_pre_read(&mut c, PreRead::Failed(ErrorCode::UpstreamUnavailable)).unwrap_err();
    assert_eq!(denial.code, ErrorCode::UpstreamUnavailable);
}

#[tokio::test]
async fn a_decision_without_a_permitted_set_asks_for_no_pre_read() {
    // A policy that holds only restricted principals to a permitted set; an analyst is tenant-wide.
    let dir = policies_copy();
    let authz = dir.path().join("authz.rego");
    let text = std::fs::read_to_string(&authz).unwrap();
    let from = "permitted_tenant := input.principal.tenant if {\n";
    assert!(text.contains(from), "the shipped rule moved");
    std::fs::write(&authz, text.replace(from, &format!("{from}\trestricted\n"))).unwrap();
    let mut config = phigate_policy::PolicyConfig::new(dir.path());
    config.watch = false;
    config.test_on_reload = false;
    config.max_eval_ms = 10_000;
    let stage = build(config);
    let analyst = principal("analyst_a", "tenant-a", &["analyst"], &["user/*.cruds"]);
    let path = "/fhir/Observation/o1";
    let mut c = ctx(Method::DELETE, path, analyst, fhir(Interaction::Delete, "Observation", Some("o1"), &[]));
    stage.on_request(&mut c).await.unwrap();
    let obligations = &c.decision.as_ref().unwrap().obligations;
    assert!(obligations.permitted_patients.is_none() && obligations.permitted_tenant.is_none());
    assert!(!c.upstream.pre_read);
    // The same edited policy still holds the care team to its set, and asks.
    let mut c =
        ctx(Method::DELETE, path, writer_a(), fhir(Interaction::Delete, "Observation", Some("o1"), &[]));
    stage.on_request(&mut c).await.unwrap();
    assert!(c.upstream.pre_read);
}

#[tokio::test]
async fn a_pre_read_another_stage_asked_for_is_not_judged_by_policy() {
    // Policy asks for none on a read; whatever a custom stage does with its own is its business.
    let mut c =
        get("/fhir/Observation/o1", writer_a(), fhir(Interaction::Read, "Observation", Some("o1"), &[]));
    stage().on_request(&mut c).await.unwrap();
    c.upstream.pre_read = true;
    assert_eq!(answered(&mut c, 200, FOREIGN), Ok(()));
    assert_eq!(answered(&mut c, 500, b""), Ok(()));
}
