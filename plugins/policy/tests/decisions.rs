//! The shipped policies through the real stage: allow and deny per concern.

// Test helpers outside #[test] functions unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use http::Method;
use phigate_plugin::{ErrorCode, Flow, Interaction, QueryParam, Stage};
use support::*;

async fn code_of(c: &mut phigate_plugin::RequestCtx) -> Result<(), ErrorCode> {
    stage().on_request(c).await.map(|f| assert!(matches!(f, Flow::Continue))).map_err(|d| d.code)
}

#[tokio::test]
async fn care_team_read_is_allowed_with_permitted_patients() {
    let mut c =
        get("/fhir/Patient/a-p1", clinician_a(), fhir(Interaction::Read, "Patient", Some("a-p1"), &["a-p1"]));
    assert_eq!(code_of(&mut c).await, Ok(()));
    let d = c.decision.unwrap();
    assert!(d.allow);
    assert_eq!(d.revision.len(), 16);
    let permitted: Vec<&str> =
        d.obligations.permitted_patients.as_ref().unwrap().iter().map(|p| p.as_str()).collect();
    assert_eq!(permitted, ["a-p1", "a-p2"]);
}

#[tokio::test]
async fn non_care_team_read_is_403_patient_not_permitted() {
    let mut c =
        get("/fhir/Patient/a-p3", clinician_a(), fhir(Interaction::Read, "Patient", Some("a-p3"), &["a-p3"]));
    assert_eq!(code_of(&mut c).await, Err(ErrorCode::PatientNotPermitted));
    assert!(!c.decision.unwrap().allow, "a deny decision is recorded for audit");
}

#[tokio::test]
async fn cross_tenant_read_is_403_tenant_mismatch() {
    let mut c =
        get("/fhir/Patient/b-p1", clinician_a(), fhir(Interaction::Read, "Patient", Some("b-p1"), &["b-p1"]));
    assert_eq!(code_of(&mut c).await, Err(ErrorCode::TenantMismatch));
}

#[tokio::test]
async fn addressed_tenant_other_than_principal_is_tenant_mismatch() {
    let mut c = get(
        "/fhir/Observation",
        clinician_b(),
        fhir(Interaction::SearchType, "Observation", None, &["b-p1"]),
    );
    c.tenant = Some("tenant-a".into());
    assert_eq!(code_of(&mut c).await, Err(ErrorCode::TenantMismatch));
}

#[tokio::test]
async fn observation_search_for_foreign_patient_is_403() {
    let mut c = get(
        "/fhir/Observation",
        clinician_a(),
        fhir(Interaction::SearchType, "Observation", None, &["a-p4"]),
    );
    assert_eq!(code_of(&mut c).await, Err(ErrorCode::PatientNotPermitted));
}

#[tokio::test]
async fn unresolved_param_by_restricted_principal_is_403() {
    let f = unresolved(fhir(Interaction::SearchType, "Observation", None, &[]), "subject:Patient.name");
    let mut c = get("/fhir/Observation", clinician_a(), f);
    assert_eq!(code_of(&mut c).await, Err(ErrorCode::PatientNotPermitted));
    assert!(c.request.query.is_empty(), "a refused search is not narrowed");
}

#[tokio::test]
async fn batch_with_one_foreign_entry_is_403_for_the_whole_batch() {
    let mut batch = fhir(Interaction::Batch, "Patient", None, &["a-p1", "a-p3"]);
    batch.resource_type = None;
    batch.entries = vec![
        fhir(Interaction::Read, "Patient", Some("a-p1"), &["a-p1"]),
        fhir(Interaction::Read, "Patient", Some("a-p3"), &["a-p3"]),
    ];
    let mut c = ctx(Method::POST, "/fhir", clinician_a(), batch);
    assert_eq!(code_of(&mut c).await, Err(ErrorCode::PatientNotPermitted));
}

#[tokio::test]
async fn everything_on_foreign_patient_is_403() {
    let mut f = fhir(Interaction::Operation, "Patient", Some("a-p3"), &["a-p3"]);
    f.operation = Some("everything".into());
    let mut c = get("/fhir/Patient/a-p3/$everything", clinician_a(), f);
    assert_eq!(code_of(&mut c).await, Err(ErrorCode::PatientNotPermitted));
}

#[tokio::test]
async fn restricted_search_without_patient_is_narrowed_to_care_team() {
    let mut c =
        get("/fhir/Observation", clinician_a(), fhir(Interaction::SearchType, "Observation", None, &[]));
    assert_eq!(code_of(&mut c).await, Ok(()));
    assert_eq!(query(&c, "patient").as_deref(), Some("a-p1,a-p2"));
    assert_eq!(query(&c, "_count").as_deref(), Some("100"), "the tenant's max_page_size is applied");
}

#[tokio::test]
async fn a_search_of_devices_is_narrowed_to_the_care_team_like_a_compartment_type() {
    // Device is outside the R4 Patient compartment, but Device.patient names her.
    let mut c = get("/fhir/Device", clinician_a(), fhir(Interaction::SearchType, "Device", None, &[]));
    assert_eq!(code_of(&mut c).await, Ok(()));
    assert_eq!(query(&c, "patient").as_deref(), Some("a-p1,a-p2"));
}

#[tokio::test]
async fn oversized_page_is_clamped_by_default_and_refused_when_configured() {
    let search = |count: u32| {
        let mut f = fhir(Interaction::SearchType, "Observation", None, &["a-p1"]);
        f.count = Some(count);
        let mut c = get("/fhir/Observation", clinician_a(), f);
        c.request.query.push(QueryParam { name: "_count".into(), value: count.to_string() });
        c
    };
    let mut c = search(5000);
    assert_eq!(code_of(&mut c).await, Ok(()));
    assert_eq!(query(&c, "_count").as_deref(), Some("100"));
    assert_eq!(c.fhir.as_ref().and_then(|f| f.count), Some(100), "the audit record shows what was asked");

    let mut config = phigate_policy::PolicyConfig::new(shipped_policies());
    config.watch = false;
    config.oversized_page = phigate_policy::OversizedPage::Refuse;
    let stage = build(config);
    let mut c = search(5000);
    assert_eq!(stage.on_request(&mut c).await.unwrap_err().code, ErrorCode::PageSizeExceeded);
    let mut c = search(50);
    assert!(stage.on_request(&mut c).await.is_ok());
    assert_eq!(query(&c, "_count").as_deref(), Some("50"));
}

#[tokio::test]
async fn search_with_empty_care_team_is_refused_not_narrowed() {
    let mut c =
        get("/fhir/Observation", er_doctor_a(), fhir(Interaction::SearchType, "Observation", None, &[]));
    assert_eq!(code_of(&mut c).await, Err(ErrorCode::PatientNotPermitted));
    assert!(c.request.query.is_empty());
}

#[tokio::test]
async fn narrowing_beyond_the_bound_is_refused() {
    let mut config = phigate_policy::PolicyConfig::new(shipped_policies());
    config.watch = false;
    config.max_narrow_patients = 1;
    let stage = build(config);
    let mut c =
        get("/fhir/Observation", clinician_a(), fhir(Interaction::SearchType, "Observation", None, &[]));
    let denial = stage.on_request(&mut c).await.unwrap_err();
    assert_eq!(denial.code, ErrorCode::PolicyDenied);
    assert!(c.request.query.is_empty());
}

#[tokio::test]
async fn break_glass_with_role_and_reason_is_allowed_and_marked() {
    let c =
        get("/fhir/Patient/a-p5", er_doctor_a(), fhir(Interaction::Read, "Patient", Some("a-p5"), &["a-p5"]));
    let mut c = with_header(c, "x-break-glass-reason", "unresponsive patient in ED bay 3");
    assert_eq!(code_of(&mut c).await, Ok(()));
    let d = c.decision.as_ref().unwrap();
    assert!(d.obligations.break_glass);
    assert_eq!(d.obligations.alert.as_deref(), Some("break_glass_access"));
    assert_eq!(c.break_glass_reason.as_deref(), Some("unresponsive patient in ED bay 3"));
}

#[tokio::test]
async fn break_glass_without_role_is_403_break_glass_not_permitted() {
    let c =
        get("/fhir/Patient/a-p5", clinician_a(), fhir(Interaction::Read, "Patient", Some("a-p5"), &["a-p5"]));
    let mut c = with_header(c, "x-break-glass-reason", "curious");
    assert_eq!(code_of(&mut c).await, Err(ErrorCode::BreakGlassNotPermitted));
}

#[tokio::test]
async fn blank_or_oversized_break_glass_reason_is_refused() {
    for reason in ["   ".to_string(), "x".repeat(257)] {
        let c = get(
            "/fhir/Patient/a-p5",
            er_doctor_a(),
            fhir(Interaction::Read, "Patient", Some("a-p5"), &["a-p5"]),
        );
        let mut c = with_header(c, "x-break-glass-reason", &reason);
        assert_eq!(code_of(&mut c).await, Err(ErrorCode::BreakGlassNotPermitted));
    }
}

#[tokio::test]
async fn write_without_write_scope_is_403_scope_insufficient() {
    let mut c = ctx(
        Method::POST,
        "/fhir/Observation",
        clinician_a(),
        fhir(Interaction::Create, "Observation", None, &["a-p1"]),
    );
    assert_eq!(code_of(&mut c).await, Err(ErrorCode::ScopeInsufficient));
}

#[tokio::test]
async fn export_without_respond_async_is_export_requires_async() {
    let bulk = principal("bulk", "tenant-a", &[], &["system/*.read"]);
    let mut f = fhir(Interaction::Operation, "Patient", None, &[]);
    f.operation = Some("export".into());
    let mut c = get("/fhir/Patient/$export", bulk.clone(), f.clone());
    assert_eq!(code_of(&mut c).await, Err(ErrorCode::ExportRequiresAsync));
    let mut c = with_header(get("/fhir/Patient/$export", bulk, f), "prefer", "respond-async");
    assert_eq!(code_of(&mut c).await, Ok(()));
}

#[tokio::test]
async fn request_without_principal_is_policy_denied() {
    let mut c =
        get("/fhir/Patient/a-p1", clinician_a(), fhir(Interaction::Read, "Patient", Some("a-p1"), &["a-p1"]));
    c.principal = None;
    assert_eq!(code_of(&mut c).await, Err(ErrorCode::PolicyDenied));
}
