//! Response verification: the body of an allowed request is checked before it leaves.

// Test helpers outside #[test] functions unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use http::{HeaderMap, HeaderValue, StatusCode};
use phigate_plugin::{ErrorCode, Interaction, PatientId, RequestCtx, ResponseHead, Stage};
use support::*;

async fn allowed_read_of_observation() -> RequestCtx {
    let mut c =
        get("/fhir/Observation/o1", clinician_a(), fhir(Interaction::Read, "Observation", Some("o1"), &[]));
    stage().on_request(&mut c).await.unwrap();
    c
}

fn head_json(c: &mut RequestCtx, content_type: &str) -> Result<(), ErrorCode> {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_str(content_type).unwrap());
    let mut head = ResponseHead { status: StatusCode::OK, headers: &mut headers };
    stage().on_response(c, &mut head).map_err(|d| d.code)
}

#[tokio::test]
async fn read_by_id_asks_for_the_body() {
    let mut c = allowed_read_of_observation().await;
    assert_eq!(head_json(&mut c, "application/fhir+json; charset=utf-8"), Ok(()));
    assert!(c.response.buffer_body);
}

#[tokio::test]
async fn read_by_id_of_foreign_patients_observation_is_replaced_with_403() {
    let mut c = allowed_read_of_observation().await;
    head_json(&mut c, "application/fhir+json").unwrap();
    let body = br#"{"resourceType":"Observation","id":"o1","status":"final","subject":{"reference":"Patient/a-p3"}}"#;
    let denial = stage().on_buffered_response(&mut c, body).unwrap_err();
    assert_eq!(denial.code, ErrorCode::PatientNotPermitted);
}

#[tokio::test]
async fn read_by_id_of_own_patients_observation_passes() {
    let mut c = allowed_read_of_observation().await;
    let body = br#"{"resourceType":"Observation","id":"o1","subject":{"reference":"https://fhir.test/fhir/Patient/a-p2/_history/3"},"performer":[{"reference":"Practitioner/x"}]}"#;
    assert!(stage().on_buffered_response(&mut c, body).is_ok());
}

#[tokio::test]
async fn bundle_with_one_foreign_entry_is_replaced_with_403() {
    let mut c =
        get("/fhir/Observation", clinician_a(), fhir(Interaction::SearchType, "Observation", None, &[]));
    stage().on_request(&mut c).await.unwrap();
    let body = br#"{"resourceType":"Bundle","type":"searchset","entry":[
        {"resource":{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/a-p1"}}},
        {"resource":{"resourceType":"Patient","id":"a-p4"},"search":{"mode":"include"}}]}"#;
    let denial = stage().on_buffered_response(&mut c, body).unwrap_err();
    assert_eq!(denial.code, ErrorCode::PatientNotPermitted);
}

#[tokio::test]
async fn a_clean_bundle_records_its_patients_and_entries_for_later_stages() {
    let mut c =
        get("/fhir/Observation", clinician_a(), fhir(Interaction::SearchType, "Observation", None, &[]));
    stage().on_request(&mut c).await.unwrap();
    let body = br#"{"resourceType":"Bundle","type":"searchset","entry":[
        {"resource":{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/a-p2"}}},
        {"resource":{"resourceType":"Observation","id":"o2","subject":{"reference":"Patient/a-p2"}}},
        {"resource":{"resourceType":"Patient","id":"a-p1"},"search":{"mode":"include"}}]}"#;
    assert!(stage().on_buffered_response(&mut c, body).is_ok());
    let named: Vec<&str> = c.response.patients.as_deref().unwrap().iter().map(|p| p.as_str()).collect();
    assert_eq!(named, ["a-p1", "a-p2"]);
    assert_eq!(c.response.entries, Some(3));
}

#[test]
fn verification_counts_only_the_root_bundles_entries() {
    use phigate_policy::{verify_collect, Permit, Verdict};
    let permitted = Permit::patients(["a-p1", "a-p2"]);
    let nested = br#"{"resourceType":"Observation","subject":{"reference":"Patient/a-p1"},"contained":[{"resourceType":"Bundle","entry":[{},{}]}]}"#;
    let v = verify_collect(nested, &permitted);
    assert_eq!(
        (v.verdict, v.named.as_slice(), v.entries),
        (Verdict::Clean, &[PatientId::from("a-p1")][..], None)
    );
    let empty = br#"{"resourceType":"Bundle","type":"searchset","total":0}"#;
    assert_eq!(verify_collect(empty, &permitted).entries, Some(0));
    let foreign =
        br#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient","id":"a-p9"}}]}"#;
    let v = verify_collect(foreign, &permitted);
    assert_eq!((v.verdict, v.named.len(), v.entries), (Verdict::Violation, 0, None));
}

#[tokio::test]
async fn non_json_response_for_a_restricted_principal_is_policy_error() {
    let mut c = allowed_read_of_observation().await;
    assert_eq!(head_json(&mut c, "application/fhir+xml"), Err(ErrorCode::PolicyError));
}

#[tokio::test]
async fn truncated_json_is_policy_error() {
    let mut c = allowed_read_of_observation().await;
    let denial =
        stage().on_buffered_response(&mut c, br#"{"resourceType":"Observation","subject":{"#).unwrap_err();
    assert_eq!(denial.code, ErrorCode::PolicyError);
}

#[test]
fn patient_references_are_found_in_every_form() {
    use phigate_policy::patient_of;
    assert_eq!(patient_of("Patient/a-p1"), Some("a-p1"));
    assert_eq!(patient_of("https://x/fhir/Patient/a-p1/_history/2"), Some("a-p1"));
    assert_eq!(patient_of("Patient?identifier=123"), Some(""), "conditional refs are never permitted");
    assert_eq!(patient_of("Practitioner/p1"), None);
    assert_eq!(patient_of("#contained"), None);
}

#[test]
fn deeply_nested_bodies_are_unreadable_not_a_stack_overflow() {
    let body = "[".repeat(100_000);
    assert_eq!(
        phigate_policy::verify_response(body.as_bytes(), &["a-p1"]),
        phigate_policy::Verdict::Unreadable
    );
}

/// A principal that reaches the whole tenant (here a backend service): its decision names the
/// tenant, not the tenant's patients, and its responses are checked patient by patient against
/// the policy data's tenant of each.
#[tokio::test]
async fn tenant_wide_responses_are_checked_by_each_patients_tenant() {
    let service = principal("svc", "tenant-a", &[], &["system/*.read"]);
    let read = || {
        get("/fhir/Observation/o1", service.clone(), fhir(Interaction::Read, "Observation", Some("o1"), &[]))
    };
    let mut c = read();
    stage().on_request(&mut c).await.unwrap();
    let decision = c.decision.as_ref().unwrap();
    assert_eq!(decision.obligations.permitted_patients, None);
    assert_eq!(decision.obligations.permitted_tenant.as_ref().map(|t| t.as_str()), Some("tenant-a"));
    assert_eq!(head_json(&mut c, "application/fhir+json"), Ok(()));
    assert!(c.response.buffer_body);

    // Patients outside any care team but in the tenant pass, and are recorded.
    let own = br#"{"resourceType":"Bundle","entry":[
        {"resource":{"resourceType":"Observation","subject":{"reference":"Patient/a-p5"}}},
        {"resource":{"resourceType":"Observation","subject":{"reference":"Patient/a-p3"}}}]}"#;
    assert!(stage().on_buffered_response(&mut c, own).is_ok());
    let named: Vec<&str> = c.response.patients.as_deref().unwrap().iter().map(|p| p.as_str()).collect();
    assert_eq!(named, ["a-p3", "a-p5"]);

    // Another tenant's patient, or one the data does not know, replaces the response.
    for foreign in ["b-p1", "a-p404"] {
        let mut c = read();
        stage().on_request(&mut c).await.unwrap();
        let body =
            format!(r#"{{"resourceType":"Observation","subject":{{"reference":"Patient/{foreign}"}}}}"#);
        let denial = stage().on_buffered_response(&mut c, body.as_bytes()).unwrap_err();
        assert_eq!(denial.code, ErrorCode::PatientNotPermitted, "{foreign}");
    }
}
