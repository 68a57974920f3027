//! Response verification: the body of an allowed request is checked before it leaves.

// Test helpers outside #[test] functions unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use http::{HeaderMap, HeaderValue, StatusCode};
use std::sync::Arc;

use phigate_plugin::{ErrorCode, Interaction, PatientId, Principal, RequestCtx, ResponseHead, Stage};
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

    // Another tenant's patient, or one the data does not know, replaces the response; the
    // cause (logged, and counted apart) tells an unknown patient from another tenant's.
    for (foreign, unknown) in [("b-p1", false), ("a-p404", true)] {
        let mut c = read();
        stage().on_request(&mut c).await.unwrap();
        let body =
            format!(r#"{{"resourceType":"Observation","subject":{{"reference":"Patient/{foreign}"}}}}"#);
        let denial = stage().on_buffered_response(&mut c, body.as_bytes()).unwrap_err();
        assert_eq!(denial.code, ErrorCode::PatientNotPermitted, "{foreign}");
        let cause = denial.cause.unwrap_or_default();
        assert_eq!(cause.contains("places in no tenant"), unknown, "{foreign}: {cause}");
    }
}

#[test]
fn a_violation_says_whether_the_data_knows_the_patient() {
    use phigate_policy::{verify_collect, Permit, Verdict};
    let body =
        |p: &str| format!(r#"{{"resourceType":"Observation","subject":{{"reference":"Patient/{p}"}}}}"#);
    let restricted = Permit::patients(["a-p1"]);
    let checked = verify_collect(body("zz").as_bytes(), &restricted);
    assert_eq!(
        (checked.verdict, checked.unknown_patient),
        (Verdict::Violation, false),
        "a list knows no tenants"
    );
    let checked = verify_collect(body("a-p1").as_bytes(), &restricted);
    assert_eq!((checked.verdict, checked.unknown_patient), (Verdict::Clean, false));
}

/// FHIR content inside base64 (`Binary`, `Attachment`; HAPI serves bulk export files as
/// `Binary`) is checked like the document around it; other content stays opaque.
#[test]
fn base64_fhir_content_is_checked_like_the_document_around_it() {
    use base64::Engine;
    use phigate_policy::{verify_collect, Labels, Permit, Verdict, Withheld};
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let binary = |content_type: &str, content: &str| {
        format!(
            r#"{{"resourceType":"Binary","id":"job-1-Observation","contentType":"{content_type}","data":"{}"}}"#,
            b64(content)
        )
    };
    let permit = Permit::patients(["a-p1"]);
    let own = r#"{"resourceType":"Observation","subject":{"reference":"Patient/a-p1"}}"#;
    let foreign = r#"{"resourceType":"Observation","subject":{"reference":"Patient/b-p1"}}"#;
    let verdict = |body: &str| verify_collect(body.as_bytes(), &permit).verdict;
    // An NDJSON export file, one resource per line; a JSON document.
    let ndjson = format!("{own}\n{own}\n");
    let checked = verify_collect(binary("application/fhir+ndjson", &ndjson).as_bytes(), &permit);
    assert_eq!((checked.verdict, checked.named), (Verdict::Clean, vec![PatientId::new("a-p1")]));
    assert_eq!(
        verdict(&binary("application/fhir+ndjson", &format!("{own}\n{foreign}\n"))),
        Verdict::Violation
    );
    assert_eq!(verdict(&binary("application/fhir+json; fhirVersion=4.0", foreign)), Verdict::Violation);
    // An Attachment in a DocumentReference, `data` before `contentType`.
    let doc = format!(
        r#"{{"resourceType":"DocumentReference","subject":{{"reference":"Patient/a-p1"}},"content":[{{"attachment":{{"data":"{}","contentType":"application/json"}}}}]}}"#,
        b64(foreign)
    );
    assert_eq!(verdict(&doc), Verdict::Violation);
    // A PDF cannot be read: its bytes are not judged (the references beside it are).
    assert_eq!(verdict(&binary("application/pdf", "%PDF-1.7 Patient/b-p1")), Verdict::Clean);
    // Not base64, not JSON, or nested past two layers: unreadable, never passed.
    let not_b64 = r#"{"resourceType":"Binary","contentType":"application/fhir+json","data":"***"}"#;
    assert_eq!(verdict(not_b64), Verdict::Unreadable);
    assert_eq!(verdict(&binary("application/fhir+json", "{not json")), Verdict::Unreadable);
    let deep = binary(
        "application/fhir+json",
        &binary("application/fhir+json", &binary("application/fhir+json", own)),
    );
    assert_eq!(verdict(&deep), Verdict::Unreadable);
    assert_eq!(
        verdict(&binary("application/fhir+json", &binary("application/fhir+json", own))),
        Verdict::Clean
    );
    // A security label inside withholds the whole resource.
    let psy = r#"{"resourceType":"Condition","meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"PSY"}]},"subject":{"reference":"Patient/a-p1"}}"#;
    let labelled = Permit::patients(["a-p1"])
        .withholding(Labels::from_tokens(["http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY"]));
    let checked = verify_collect(binary("application/fhir+ndjson", psy).as_bytes(), &labelled);
    assert_eq!((checked.verdict, checked.withheld), (Verdict::Clean, Withheld::Whole));
    // `data` of another shape is walked, not trusted.
    let odd = r#"{"resourceType":"Basic","data":{"subject":{"reference":"Patient/b-p1"}}}"#;
    assert_eq!(verdict(odd), Verdict::Violation);
}

/// An export's status URL (reached through a URL the gateway issued): in progress (202, no
/// body) passes; a manifest passes; anything else it answers is verified like any response.
#[tokio::test]
async fn an_export_status_answer_is_verified_like_any_response() {
    let service = principal("svc", "tenant-a", &[], &["system/*.read"]);
    let poll = || {
        let mut f = fhir(Interaction::Operation, "", None, &[]);
        f.resource_type = None;
        f.operation = Some("export-poll-status".into());
        let mut c = get("/fhir/$export-poll-status", service.clone(), f);
        c.bulk = Some(issued_to(&service, phigate_plugin::BulkKind::Status));
        c
    };
    let head = |c: &mut RequestCtx, status: StatusCode| {
        let mut headers = HeaderMap::new();
        if status == StatusCode::OK {
            headers.insert("content-type", HeaderValue::from_static("application/json"));
        }
        let mut head = ResponseHead { status, headers: &mut headers };
        stage().on_response(c, &mut head).map_err(|d| d.code)
    };
    let mut c = poll();
    stage().on_request(&mut c).await.unwrap();
    assert!(c.response.buffer_body);
    assert_eq!(head(&mut c, StatusCode::ACCEPTED), Ok(()), "in progress: no body, no media type");
    assert!(stage().on_buffered_response(&mut c, b"").is_ok());
    let mut c = poll();
    stage().on_request(&mut c).await.unwrap();
    assert_eq!(head(&mut c, StatusCode::OK), Ok(()));
    let manifest = br#"{"transactionTime":"2026-12-07T17:00:00Z","request":"x","requiresAccessToken":true,
        "output":[{"type":"Patient","url":"https://gw/fhir/Binary/job-1-Patient","count":4}],"error":[]}"#;
    assert!(stage().on_buffered_response(&mut c, manifest).is_ok());
    // A status URL answering another tenant's record is refused.
    let mut c = poll();
    stage().on_request(&mut c).await.unwrap();
    assert_eq!(head(&mut c, StatusCode::OK), Ok(()));
    let leak = br#"{"resourceType":"Patient","id":"b-p1"}"#;
    assert_eq!(stage().on_buffered_response(&mut c, leak).unwrap_err().code, ErrorCode::PatientNotPermitted);
}

/// What a bulk URL the gateway issued to `p` grants.
fn issued_to(p: &Principal, kind: phigate_plugin::BulkKind) -> phigate_plugin::BulkAccess {
    phigate_plugin::BulkAccess {
        kind,
        issuer: p.issuer.clone(),
        subject: p.subject.as_str().into(),
        tenant: p.tenant.clone(),
        client_id: p.client_id.as_deref().map(Into::into),
    }
}

/// An export file is checked line by line as it streams; if another stage had the body buffered
/// instead, the whole body gets the same check: no path sends it unchecked.
#[tokio::test]
async fn an_export_file_buffered_by_another_stage_is_checked_the_same_way() {
    let service = principal("svc", "tenant-a", &[], &["system/*.read"]);
    let file = || {
        let mut c = get(
            "/fhir/Binary/job-1-Observation",
            service.clone(),
            fhir(Interaction::Read, "Binary", Some("job-1-Observation"), &[]),
        );
        c.bulk = Some(issued_to(&service, phigate_plugin::BulkKind::File));
        c
    };
    let own = r#"{"resourceType":"Observation","subject":{"reference":"Patient/a-p1"}}"#;
    let foreign = r#"{"resourceType":"Observation","subject":{"reference":"Patient/b-p1"}}"#;
    let mut c = file();
    stage().on_request(&mut c).await.unwrap();
    assert!(c.response.filter_body && !c.response.buffer_body);
    c.response.buffer_body = true; // as a custom stage might
    let body = format!("{own}\n{foreign}\n");
    assert_eq!(
        stage().on_buffered_response(&mut c, body.as_bytes()).unwrap_err().code,
        ErrorCode::PatientNotPermitted
    );
    let mut c = file();
    stage().on_request(&mut c).await.unwrap();
    c.response.buffer_body = true;
    let body = format!("{own}\n{own}\n");
    assert!(stage().on_buffered_response(&mut c, body.as_bytes()).is_ok());
    assert_eq!(c.response.entries, Some(2));
}

/// A write by `who` allowed by the stage, answered with `status` (and `location`, if any) and a
/// JSON body, as the gateway hands the answer to the stage.
async fn answer_write(
    who: Arc<Principal>,
    f: phigate_plugin::FhirRequest,
    status: StatusCode,
    location: Option<&str>,
    body: &[u8],
) -> (RequestCtx, Result<(), ErrorCode>) {
    let mut c = ctx(http::Method::POST, "/fhir/Patient", who, f);
    stage().on_request(&mut c).await.unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/fhir+json"));
    if let Some(l) = location {
        headers.insert("location", HeaderValue::from_str(l).unwrap());
    }
    let mut head = ResponseHead { status, headers: &mut headers };
    stage().on_response(&mut c, &mut head).unwrap();
    assert!(c.response.buffer_body, "a write's answer is checked too");
    let result = stage().on_buffered_response(&mut c, body).map_err(|d| d.code);
    (c, result)
}

fn backend_service() -> Arc<Principal> {
    principal("registration", "tenant-a", &[], &["system/*.cruds"])
}

#[tokio::test]
async fn a_patient_the_request_created_is_permitted_in_its_answer() {
    // The new patient is in no policy data yet: without the server's word that this request
    // created her, the answer to a committed write would be refused.
    let body = br#"{"resourceType":"Patient","id":"new-1","name":[{"family":"Newborn"}]}"#;
    let located = Some("https://fhir.test/fhir/Patient/new-1/_history/1");
    let (c, result) = answer_write(
        backend_service(),
        fhir(Interaction::Create, "Patient", None, &[]),
        StatusCode::CREATED,
        located,
        body,
    )
    .await;
    assert_eq!(result, Ok(()));
    let named: Vec<&str> = c.response.patients.as_deref().unwrap().iter().map(PatientId::as_str).collect();
    assert_eq!(named, ["new-1"], "the audit records the patient created");
}

#[tokio::test]
async fn a_created_patients_answer_naming_anyone_else_is_still_refused() {
    let body = br#"{"resourceType":"Patient","id":"new-1","link":[{"other":{"reference":"Patient/b-p1"},"type":"seealso"}]}"#;
    let (_, result) = answer_write(
        backend_service(),
        fhir(Interaction::Create, "Patient", None, &[]),
        StatusCode::CREATED,
        Some("Patient/new-1/_history/1"),
        body,
    )
    .await;
    assert_eq!(result, Err(ErrorCode::PatientNotPermitted));
}

#[tokio::test]
async fn a_conditional_create_that_matched_an_existing_patient_is_checked_like_a_read() {
    // 200, not 201: the server found a patient (of another tenant, here) and created nothing.
    let body = br#"{"resourceType":"Patient","id":"b-p1"}"#;
    let (_, result) = answer_write(
        backend_service(),
        fhir(Interaction::Create, "Patient", None, &[]),
        StatusCode::OK,
        Some("Patient/b-p1/_history/3"),
        body,
    )
    .await;
    assert_eq!(result, Err(ErrorCode::PatientNotPermitted));
    let body = br#"{"resourceType":"Patient","id":"x-unknown"}"#;
    let (_, result) = answer_write(
        backend_service(),
        fhir(Interaction::Create, "Patient", None, &[]),
        StatusCode::CREATED,
        Some("Patient/new-9/_history/1"),
        body,
    )
    .await;
    assert_eq!(result, Err(ErrorCode::PatientNotPermitted), "only the patient the server located is new");
}

#[tokio::test]
async fn a_transaction_that_registers_a_patient_with_her_records_is_answered() {
    let answer = br#"{"resourceType":"Bundle","type":"transaction-response","entry":[
        {"response":{"status":"201 Created","location":"Patient/new-7/_history/1"},
         "resource":{"resourceType":"Patient","id":"new-7"}},
        {"response":{"status":"201 Created","location":"Observation/o-new/_history/1"},
         "resource":{"resourceType":"Observation","id":"o-new","subject":{"reference":"Patient/new-7"}}}]}"#;
    let tx = phigate_plugin::FhirRequest::new(Interaction::Transaction);
    let (_, result) = answer_write(backend_service(), tx.clone(), StatusCode::OK, None, answer).await;
    assert_eq!(result, Ok(()));
    // The same answer with one record of another tenant's patient is refused whole.
    let leaky = br#"{"resourceType":"Bundle","type":"transaction-response","entry":[
        {"response":{"status":"201 Created","location":"Patient/new-7/_history/1"}},
        {"response":{"status":"200 OK"},"resource":{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/b-p2"}}}]}"#;
    let (_, result) = answer_write(backend_service(), tx, StatusCode::OK, None, leaky).await;
    assert_eq!(result, Err(ErrorCode::PatientNotPermitted));
}
