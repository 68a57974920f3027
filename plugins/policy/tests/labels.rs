//! Security labels: resources whose `meta.security` carries a label the principal is not cleared
//! for are left out of search results and refused anywhere else, with the shipped policies and
//! data (`data.security_labels`, `role_grants[role].labels`, break-glass, patient apps).

// Test helpers outside #[test] functions unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use http::{Method, StatusCode};
use phigate_plugin::{ErrorCode, Interaction, PatientId, PreRead, Principal, RequestCtx, Stage};
use phigate_policy::{verify_collect, Labels, Permit, PolicyConfig, Verdict, Withheld, WithheldNotice};
use std::sync::Arc;
use support::*;

const ACT: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const CONF: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";

fn psychiatrist_a() -> Arc<Principal> {
    principal("clinician_a", "tenant-a", &["psychiatrist"], &["user/*.rs"])
}

fn observation(id: &str, patient: &str, security: &str) -> String {
    format!(
        r#"{{"resourceType":"Observation","id":"{id}","meta":{{"versionId":"1","security":[{security}]}},"subject":{{"reference":"Patient/{patient}"}}}}"#
    )
}

fn coding(system: &str, code: &str) -> String {
    format!(r#"{{"system":"{system}","code":"{code}","display":"label"}}"#)
}

fn searchset(entries: &[String]) -> String {
    let entries: Vec<String> =
        entries.iter().map(|r| format!(r#"{{"resource":{r},"search":{{"mode":"match"}}}}"#)).collect();
    format!(
        r#"{{"resourceType":"Bundle","type":"searchset","total":{},"entry":[{}]}}"#,
        entries.len(),
        entries.join(",")
    )
}

async fn search_by(principal: Arc<Principal>) -> RequestCtx {
    let mut c = get("/fhir/Observation", principal, fhir(Interaction::SearchType, "Observation", None, &[]));
    stage().on_request(&mut c).await.unwrap();
    c
}

async fn read_by(principal: Arc<Principal>) -> RequestCtx {
    let mut c =
        get("/fhir/Observation/o1", principal, fhir(Interaction::Read, "Observation", Some("o1"), &[]));
    stage().on_request(&mut c).await.unwrap();
    c
}

#[tokio::test]
async fn a_clinician_has_every_enforced_label_withheld_and_a_psychiatrist_not_psy() {
    let c = search_by(clinician_a()).await;
    let withheld = c.decision.as_ref().unwrap().obligations.withheld_labels.clone().unwrap();
    assert_eq!(withheld.len(), 5, "{withheld:?}");
    assert!(withheld.contains(&format!("{ACT}|PSY")));
    let c = search_by(psychiatrist_a()).await;
    let withheld = c.decision.as_ref().unwrap().obligations.withheld_labels.clone().unwrap();
    assert_eq!(withheld.len(), 4);
    assert!(!withheld.contains(&format!("{ACT}|PSY")));
}

#[tokio::test]
async fn labelled_search_entries_are_left_out_and_the_rest_is_sent() {
    let mut c = search_by(clinician_a()).await;
    let body = searchset(&[
        observation("o1", "a-p1", &coding(CONF, "N")),
        observation("o2", "a-p2", &coding(ACT, "PSY")),
        observation("o3", "a-p1", ""),
    ]);
    stage().on_buffered_response(&mut c, body.as_bytes()).unwrap();
    let sent = c.response.replace_body.clone().expect("a replacement body");
    let v: serde_json::Value = serde_json::from_slice(&sent).unwrap();
    let entries = v["entry"].as_array().unwrap();
    let ids: Vec<&str> = entries.iter().filter_map(|e| e["resource"]["id"].as_str()).collect();
    assert_eq!(ids, ["o1", "o3"]);
    assert_eq!(entries.last().unwrap()["resource"]["issue"][0]["code"], "suppressed");
    assert!(!String::from_utf8_lossy(&sent).contains("PSY"));
    assert_eq!(c.response.withheld, Some(1));
    assert_eq!(c.response.entries, Some(2), "the outcome entry is not a result");
    let named: Vec<&str> = c.response.patients.as_deref().unwrap().iter().map(PatientId::as_str).collect();
    assert_eq!(named, ["a-p1"], "a patient named only in a withheld entry was not served");
}

/// The body the client gets: the replacement, or what the upstream sent.
fn sent(c: &RequestCtx, body: &str) -> serde_json::Value {
    serde_json::from_slice(c.response.replace_body.as_deref().unwrap_or(body.as_bytes())).unwrap()
}

#[tokio::test]
async fn a_clean_search_result_loses_only_its_count() {
    let mut c = search_by(clinician_a()).await;
    let body = searchset(&[observation("o1", "a-p1", &coding(CONF, "N"))]);
    stage().on_buffered_response(&mut c, body.as_bytes()).unwrap();
    let mut expected: serde_json::Value = serde_json::from_str(&body).unwrap();
    expected.as_object_mut().unwrap().remove("total");
    assert_eq!(sent(&c, &body), expected, "the total would count records the clinician cannot see");
    assert_eq!(c.response.withheld, None);
    assert_eq!(c.response.entries, Some(1));
}

#[tokio::test]
async fn a_cleared_role_gets_the_labelled_entry() {
    let mut c = search_by(psychiatrist_a()).await;
    let body = searchset(&[observation("o2", "a-p2", &coding(ACT, "PSY"))]);
    stage().on_buffered_response(&mut c, body.as_bytes()).unwrap();
    assert_eq!(c.response.withheld, None);
    let got = sent(&c, &body);
    assert_eq!(got["entry"][0]["resource"]["meta"]["security"][0]["code"], "PSY");
    assert_eq!(got.get("total"), None, "other labels are still withheld: no count");
    // ... but not one carrying a label its role does not clear.
    let mut c = search_by(psychiatrist_a()).await;
    let body = searchset(&[observation("o2", "a-p2", &coding(ACT, "ETH"))]);
    stage().on_buffered_response(&mut c, body.as_bytes()).unwrap();
    assert_eq!(c.response.withheld, Some(1));
    assert_eq!(sent(&c, &body).get("total"), None);
}

#[tokio::test]
async fn counts_are_kept_when_nothing_is_withheld_or_the_upstream_hides_them_itself() {
    let body = searchset(&[observation("o1", "a-p5", &coding(CONF, "V"))]);
    let c = get("/fhir/Observation", er_doctor_a(), fhir(Interaction::SearchType, "Observation", None, &[]));
    let mut c = with_header(c, "x-break-glass-reason", "unresponsive patient in ED bay 3");
    stage().on_request(&mut c).await.unwrap();
    stage().on_buffered_response(&mut c, body.as_bytes()).unwrap();
    assert!(c.response.replace_body.is_none(), "break-glass sees every label, so its count is true");

    let mut config = PolicyConfig::new(shipped_policies());
    config.watch = false;
    config.max_eval_ms = 10_000;
    config.hide_counts = false;
    let keeping = build(config);
    let mut c = search_by(clinician_a()).await;
    let body = searchset(&[observation("o1", "a-p1", "")]);
    keeping.on_buffered_response(&mut c, body.as_bytes()).unwrap();
    assert!(c.response.replace_body.is_none());
}

#[tokio::test]
async fn a_silent_cut_leaves_nothing_that_tells() {
    let mut config = PolicyConfig::new(shipped_policies());
    config.watch = false;
    config.max_eval_ms = 10_000;
    config.withheld_notice = WithheldNotice::Silent;
    let silent = build(config);
    let mut c = search_by(clinician_a()).await;
    let body = searchset(&[observation("o1", "a-p1", ""), observation("o2", "a-p2", &coding(ACT, "PSY"))]);
    silent.on_buffered_response(&mut c, body.as_bytes()).unwrap();
    let got = sent(&c, &body);
    let ids: Vec<&str> =
        got["entry"].as_array().unwrap().iter().filter_map(|e| e["resource"]["id"].as_str()).collect();
    assert_eq!(ids, ["o1"]);
    assert_eq!(got["entry"].as_array().unwrap().len(), 1, "no outcome entry");
    assert_eq!(got.get("total"), None);
    assert_eq!((c.response.withheld, c.response.entries), (Some(1), Some(1)), "the audit still knows");

    // A read of the record answers as if it did not exist; what is recorded is the truth.
    let mut c = read_by(clinician_a()).await;
    let body = observation("o1", "a-p1", &coding(CONF, "R"));
    let denial = silent.on_buffered_response(&mut c, body.as_bytes()).unwrap_err();
    assert_eq!(
        (denial.code, denial.shown()),
        (ErrorCode::SecurityLabelNotPermitted, ErrorCode::ResourceNotFound)
    );
    // With the notice on (the default), the refusal says what it is.
    let mut c = read_by(clinician_a()).await;
    let denial = stage().on_buffered_response(&mut c, body.as_bytes()).unwrap_err();
    assert_eq!(denial.shown(), ErrorCode::SecurityLabelNotPermitted);
    // Not a read (a search whose Bundle itself is labelled): refused as such, silent or not.
    let mut c = search_by(clinician_a()).await;
    let labelled_bundle = r#"{"resourceType":"Bundle","type":"searchset","meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"R"}]},"entry":[]}"#;
    let denial = silent.on_buffered_response(&mut c, labelled_bundle.as_bytes()).unwrap_err();
    assert_eq!(denial.shown(), ErrorCode::SecurityLabelNotPermitted);
}

#[tokio::test]
async fn a_labelled_read_is_refused() {
    let mut c = read_by(clinician_a()).await;
    let body = observation("o1", "a-p1", &coding(CONF, "R"));
    let denial = stage().on_buffered_response(&mut c, body.as_bytes()).unwrap_err();
    assert_eq!(denial.code, ErrorCode::SecurityLabelNotPermitted);
    assert!(c.response.replace_body.is_none());
}

#[tokio::test]
async fn break_glass_reads_a_labelled_record() {
    let c =
        get("/fhir/Observation/o1", er_doctor_a(), fhir(Interaction::Read, "Observation", Some("o1"), &[]));
    let mut c = with_header(c, "x-break-glass-reason", "unresponsive patient in ED bay 3");
    stage().on_request(&mut c).await.unwrap();
    assert_eq!(c.decision.as_ref().unwrap().obligations.withheld_labels, None);
    let body = observation("o1", "a-p5", &coding(CONF, "V"));
    stage().on_buffered_response(&mut c, body.as_bytes()).unwrap();
}

#[tokio::test]
async fn a_foreign_patient_in_a_withheld_entry_still_refuses_the_whole_response() {
    let mut c = search_by(clinician_a()).await;
    let body = searchset(&[observation("o1", "a-p1", ""), observation("o2", "a-p3", &coding(ACT, "PSY"))]);
    let denial = stage().on_buffered_response(&mut c, body.as_bytes()).unwrap_err();
    assert_eq!(denial.code, ErrorCode::PatientNotPermitted);
}

#[tokio::test]
async fn a_write_to_a_labelled_record_is_refused_on_its_pre_read() {
    let writer = principal("clinician_a", "tenant-a", &["clinician"], &["user/*.cruds"]);
    let f = fhir(Interaction::Delete, "Observation", Some("o1"), &[]);
    let mut c = ctx(Method::DELETE, "/fhir/Observation/o1", writer, f);
    stage().on_request(&mut c).await.unwrap();
    assert!(c.upstream.pre_read);
    let stored = observation("o1", "a-p1", &coding(ACT, "HIV"));
    let read = PreRead::Answered { status: StatusCode::OK, body: stored.as_bytes() };
    assert_eq!(
        stage().on_pre_read(&mut c, read).map_err(|d| d.code),
        Err(ErrorCode::SecurityLabelNotPermitted)
    );
    let unlabelled = observation("o1", "a-p1", "");
    let read = PreRead::Answered { status: StatusCode::OK, body: unlabelled.as_bytes() };
    assert_eq!(stage().on_pre_read(&mut c, read).map_err(|d| d.code), Ok(()));
}

fn silent_stage() -> phigate_policy::PolicyStage {
    let mut config = PolicyConfig::new(shipped_policies());
    config.watch = false;
    config.max_eval_ms = 10_000;
    config.withheld_notice = WithheldNotice::Silent;
    build(config)
}

#[tokio::test]
async fn kept_silent_a_write_to_a_labelled_record_and_its_history_answer_as_if_it_did_not_exist() {
    let silent = silent_stage();
    // A write refused on its pre-read: 404 shown, the true code kept.
    let writer = principal("clinician_a", "tenant-a", &["clinician"], &["user/*.cruds"]);
    let f = fhir(Interaction::Delete, "Observation", Some("o1"), &[]);
    let mut c = ctx(Method::DELETE, "/fhir/Observation/o1", writer, f);
    silent.on_request(&mut c).await.unwrap();
    let stored = observation("o1", "a-p1", &coding(ACT, "HIV"));
    let read = PreRead::Answered { status: StatusCode::OK, body: stored.as_bytes() };
    let denial = silent.on_pre_read(&mut c, read).unwrap_err();
    assert_eq!(
        (denial.code, denial.shown()),
        (ErrorCode::SecurityLabelNotPermitted, ErrorCode::ResourceNotFound)
    );
    // Another refusal of the pre-read keeps its code.
    let foreign = observation("o1", "b-p1", "");
    let read = PreRead::Answered { status: StatusCode::OK, body: foreign.as_bytes() };
    assert_eq!(silent.on_pre_read(&mut c, read).unwrap_err().shown(), ErrorCode::PatientNotPermitted);

    // The history of the record (a version carries the label): 404 shown.
    let history = || {
        let f = fhir(Interaction::History, "Observation", Some("o1"), &[]);
        get("/fhir/Observation/o1/_history", clinician_a(), f)
    };
    let versions = format!(
        r#"{{"resourceType":"Bundle","type":"history","entry":[{{"resource":{}}},{{"resource":{}}}]}}"#,
        observation("o1", "a-p1", &coding(ACT, "PSY")),
        observation("o1", "a-p1", "")
    );
    let mut c = history();
    silent.on_request(&mut c).await.unwrap();
    let denial = silent.on_buffered_response(&mut c, versions.as_bytes()).unwrap_err();
    assert_eq!(
        (denial.code, denial.shown()),
        (ErrorCode::SecurityLabelNotPermitted, ErrorCode::ResourceNotFound)
    );
    // With the notice on (the default), the record's history is refused as what it is.
    let mut c = history();
    stage().on_request(&mut c).await.unwrap();
    let denial = stage().on_buffered_response(&mut c, versions.as_bytes()).unwrap_err();
    assert_eq!(denial.shown(), ErrorCode::SecurityLabelNotPermitted);
}

fn permit() -> Permit {
    Permit::patients(["a-p1", "a-p2"]).withholding(Labels::from_tokens([&*format!("{ACT}|PSY"), "R"]))
}

#[test]
fn labels_are_found_on_the_root_in_entries_and_in_contained_resources() {
    let check = |body: &str| {
        let v = verify_collect(body.as_bytes(), &permit());
        assert_eq!(v.verdict, Verdict::Clean, "{body}");
        v.withheld
    };
    let psy = coding(ACT, "PSY");
    assert_eq!(check(&observation("o1", "a-p1", &psy)), Withheld::Whole);
    assert_eq!(
        check(&observation("o1", "a-p1", &coding("urn:local", "R"))),
        Withheld::Whole,
        "a bare code: any system"
    );
    assert_eq!(check(&observation("o1", "a-p1", &coding("urn:local", "PSY"))), Withheld::Nothing);
    assert_eq!(check(&observation("o1", "a-p1", r#"{"code":"R"}"#)), Withheld::Whole, "no system");
    assert_eq!(check(&observation("o1", "a-p1", "")), Withheld::Nothing);
    // A labelled contained resource withholds the entry that holds it.
    let contained = format!(
        r#"{{"resourceType":"DiagnosticReport","id":"d1","subject":{{"reference":"Patient/a-p1"}},"contained":[{}]}}"#,
        observation("c1", "a-p1", &psy)
    );
    assert_eq!(check(&searchset(&[observation("o1", "a-p1", ""), contained])), Withheld::Entries(vec![1]));
    // The Bundle's own label withholds all of it.
    let own = r#"{"resourceType":"Bundle","type":"searchset","meta":{"security":[{"code":"R"}]},"entry":[]}"#;
    assert_eq!(check(own), Withheld::Whole);
    // Only a search result loses entries: a batch or history answer is refused whole.
    let history = searchset(&[observation("o1", "a-p1", &psy)]).replace("searchset", "history");
    assert_eq!(check(&history), Withheld::Whole);
    // A nested Bundle's entries belong to the root entry that holds them.
    let nested = format!(
        r#"{{"resourceType":"Bundle","type":"searchset","entry":[{{"resource":{{"resourceType":"Bundle","type":"collection","entry":[{{"resource":{}}}]}}}}]}}"#,
        observation("o1", "a-p1", &psy)
    );
    assert_eq!(check(&nested), Withheld::Entries(vec![0]));
}

#[test]
fn label_checks_fail_closed_on_odd_shapes_and_skip_meta_when_nothing_is_withheld() {
    let odd = r#"{"resourceType":"Observation","meta":{"security":["PSY"]},"subject":{"reference":"Patient/a-p1"}}"#;
    assert_eq!(verify_collect(odd.as_bytes(), &permit()).verdict, Verdict::Unreadable);
    // Without withheld labels, meta is walked like any element (patients in it still count).
    let plain = Permit::patients(["a-p1"]);
    assert_eq!(verify_collect(odd.as_bytes(), &plain).verdict, Verdict::Clean);
    let foreign_in_meta = r#"{"resourceType":"Observation","meta":{"security":[{"code":"N","extension":[{"valueReference":{"reference":"Patient/a-p9"}}]}]}}"#;
    assert_eq!(verify_collect(foreign_in_meta.as_bytes(), &plain).verdict, Verdict::Violation);
    // With labels withheld, what else a coding holds is still walked.
    assert_eq!(verify_collect(foreign_in_meta.as_bytes(), &permit()).verdict, Verdict::Violation);
    // A coding naming its code twice is ambiguous: unreadable, so refused.
    let twice = r#"{"resourceType":"Observation","meta":{"security":[{"code":"N","code":"R"}]}}"#;
    assert_eq!(verify_collect(twice.as_bytes(), &permit()).verdict, Verdict::Unreadable);
    let lone = r#"{"resourceType":"Observation","meta":{"security":{"code":"R"}}}"#;
    assert_eq!(
        verify_collect(lone.as_bytes(), &permit()).verdict,
        Verdict::Unreadable,
        "a coding not in a list"
    );
    let listed = r#"{"resourceType":"Observation","meta":[{"security":[{"code":"R"}]}]}"#;
    assert_eq!(
        verify_collect(listed.as_bytes(), &permit()).verdict,
        Verdict::Unreadable,
        "a meta that is a list"
    );
    let null = r#"{"resourceType":"Observation","meta":{"security":null}}"#;
    assert_eq!(verify_collect(null.as_bytes(), &permit()).withheld, Withheld::Nothing);
    let escaped = r#"{"resourceType":"Observation","meta":{"security":[{"code":"\u0052"}]}}"#;
    assert_eq!(verify_collect(escaped.as_bytes(), &permit()).withheld, Withheld::Whole, "an escaped R is R");
}

/// A one-file policy with `data/labels.json` holding `labels` as `data.security_labels`.
fn policy_with_labels(decision: &str, labels: &str) -> Result<phigate_policy::PolicyStage, String> {
    policy_with_data(decision, &format!(r#"{{"security_labels": {labels}}}"#))
}

/// A one-file policy (deciding `decision` for a principal) over `data/data.json` = `data`.
fn policy_with_data(decision: &str, data: &str) -> Result<phigate_policy::PolicyStage, String> {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("authz.rego"),
        format!("package phigate.authz\n\ndecision := {{\"allow\": false, \"reasons\": []}} if not input.principal\n\n{decision}\n"),
    )
    .unwrap();
    std::fs::create_dir(tmp.path().join("data")).unwrap();
    std::fs::write(tmp.path().join("data/data.json"), data).unwrap();
    let mut c = phigate_policy::PolicyConfig::new(tmp.path());
    c.watch = false;
    c.max_eval_ms = 10_000;
    let routes = vec![route()];
    let ctx = phigate_plugin::StageBuildCtx { routes: &routes, config_dir: std::path::Path::new("/") };
    let built = c.build(&ctx).map_err(|issues| issues[0].message.clone());
    std::mem::forget(tmp);
    built
}

#[tokio::test]
async fn cleared_labels_of_the_wrong_shape_deny_with_policy_error() {
    let allow = r#"decision := {"allow": true, "reasons": [], "obligations": {"permitted_patients": ["a-p1"], "cleared_labels": 5}} if input.principal"#;
    let s = policy_with_labels(allow, r#"{"urn:x|R": {}}"#).unwrap();
    let mut c =
        get("/fhir/Observation/o1", clinician_a(), fhir(Interaction::Read, "Observation", Some("o1"), &[]));
    assert_eq!(s.on_request(&mut c).await.unwrap_err().code, ErrorCode::PolicyError);
    // Absent, they clear nothing; labels are withheld only where responses are verified.
    let allow = r#"decision := {"allow": true, "reasons": [], "obligations": {"permitted_patients": ["a-p1"]}} if input.principal"#;
    let s = policy_with_labels(allow, r#"{"urn:x|R": {}, "V": {}}"#).unwrap();
    let mut c =
        get("/fhir/Observation/o1", clinician_a(), fhir(Interaction::Read, "Observation", Some("o1"), &[]));
    s.on_request(&mut c).await.unwrap();
    let withheld = c.decision.unwrap().obligations.withheld_labels;
    assert_eq!(withheld.as_deref(), Some(&["V".to_owned(), "urn:x|R".to_owned()][..]));
    let allow = r#"decision := {"allow": true, "reasons": []} if input.principal"#;
    let s = policy_with_labels(allow, r#"{"urn:x|R": {}}"#).unwrap();
    let mut c =
        get("/fhir/metadata", clinician_a(), fhir(Interaction::Capabilities, "Observation", None, &[]));
    s.on_request(&mut c).await.unwrap();
    assert_eq!(c.decision.unwrap().obligations.withheld_labels, None);
    assert!(!c.response.buffer_body);
}

#[test]
fn security_labels_data_of_the_wrong_shape_does_not_load() {
    let allow = r#"decision := {"allow": true} if input.principal"#;
    let err = policy_with_labels(allow, r#"["urn:x|R"]"#).err().unwrap();
    assert!(err.contains("data.security_labels"), "{err}");
    let err = policy_with_labels(allow, r#"{"urn:x|": {}}"#).err().unwrap();
    assert!(err.contains("data.security_labels"), "{err}");
}

#[tokio::test]
async fn a_subsetted_search_keeps_meta_where_labels_are_withheld() {
    let elements = |c: &RequestCtx| query(c, "_elements");
    let mut c =
        get("/fhir/Observation", clinician_a(), fhir(Interaction::SearchType, "Observation", None, &[]));
    c.request
        .query
        .push(phigate_plugin::QueryParam { name: "_elements".into(), value: "code,subject".into() });
    stage().on_request(&mut c).await.unwrap();
    assert_eq!(elements(&c).as_deref(), Some("code,subject,meta"));

    let mut c =
        get("/fhir/Observation", clinician_a(), fhir(Interaction::SearchType, "Observation", None, &[]));
    c.request
        .query
        .push(phigate_plugin::QueryParam { name: "_elements:exclude".into(), value: "meta".into() });
    assert_eq!(stage().on_request(&mut c).await.unwrap_err().code, ErrorCode::BadRequest);

    // $graphql answers with chosen fields, not resources with meta: refused.
    let mut f = fhir(Interaction::Operation, "Patient", Some("a-p1"), &["a-p1"]);
    f.operation = Some("graphql".into());
    let mut c = get("/fhir/Patient/a-p1/$graphql", clinician_a(), f);
    assert_eq!(stage().on_request(&mut c).await.unwrap_err().code, ErrorCode::PolicyDenied);

    // Under break-glass nothing is withheld, and the query goes as asked.
    let f = fhir(Interaction::SearchType, "Observation", None, &["a-p5"]);
    let mut c = with_header(
        get("/fhir/Observation", er_doctor_a(), f),
        "x-break-glass-reason",
        "unresponsive patient",
    );
    c.request.query.push(phigate_plugin::QueryParam { name: "_elements".into(), value: "code".into() });
    stage().on_request(&mut c).await.unwrap();
    assert_eq!(elements(&c).as_deref(), Some("code"));
}

/// The shipped policies with patient a-p2's chart labelled restricted (`R`) in the data.
fn stage_with_restricted_a_p2() -> phigate_policy::PolicyStage {
    let tmp = policies_copy();
    let path = tmp.path().join("data/tenants.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let restricted = format!(r#""a-p2": {{"tenant": "tenant-a", "security": ["{CONF}|R"]}}"#);
    let edited = text.replace(r#""a-p2": {"tenant": "tenant-a"}"#, &restricted);
    assert_ne!(edited, text);
    std::fs::write(&path, edited).unwrap();
    let stage = stage_at(tmp.path());
    std::mem::forget(tmp);
    stage
}

#[tokio::test]
async fn every_record_of_a_restricted_patient_is_withheld_from_tenant_wide_principals() {
    let s = stage_with_restricted_a_p2();
    // An analyst reaches tenant-a's patients through the tenant: a-p2's chart label holds.
    let analyst = || principal("scraper_a", "tenant-a", &["analyst"], &["user/*.read"]);
    let mut c = get("/fhir/Observation", analyst(), fhir(Interaction::SearchType, "Observation", None, &[]));
    s.on_request(&mut c).await.unwrap();
    let body = searchset(&[
        observation("o1", "a-p1", ""),
        observation("o2", "a-p2", ""),
        observation("o3", "a-p1", ""),
    ]);
    s.on_buffered_response(&mut c, body.as_bytes()).unwrap();
    assert_eq!(c.response.withheld, Some(1), "o2");
    let sent: serde_json::Value = serde_json::from_slice(c.response.replace_body.as_ref().unwrap()).unwrap();
    assert!(!sent.to_string().contains("a-p2"));
    // A read of the patient, or of one of her records: refused.
    for (path, ty, id, body) in [
        ("/fhir/Patient/a-p2", "Patient", "a-p2", r#"{"resourceType":"Patient","id":"a-p2"}"#.to_owned()),
        ("/fhir/Observation/o2", "Observation", "o2", observation("o2", "a-p2", "")),
    ] {
        let patients: &[&str] = if ty == "Patient" { &["a-p2"] } else { &[] };
        let mut c = get(path, analyst(), fhir(Interaction::Read, ty, Some(id), patients));
        s.on_request(&mut c).await.unwrap();
        let denial = s.on_buffered_response(&mut c, body.as_bytes()).unwrap_err();
        assert_eq!(denial.code, ErrorCode::SecurityLabelNotPermitted, "{path}");
        // Her care team (clinician_a treats a-p1 and a-p2) reaches her as one of its own.
        let mut c = get(path, clinician_a(), fhir(Interaction::Read, ty, Some(id), patients));
        s.on_request(&mut c).await.unwrap();
        s.on_buffered_response(&mut c, body.as_bytes()).unwrap();
    }
    // Break-glass reaches a-p2 too.
    let c =
        get("/fhir/Patient/a-p2", er_doctor_a(), fhir(Interaction::Read, "Patient", Some("a-p2"), &["a-p2"]));
    let mut c = with_header(c, "x-break-glass-reason", "unresponsive patient in ED bay 3");
    s.on_request(&mut c).await.unwrap();
    s.on_buffered_response(&mut c, br#"{"resourceType":"Patient","id":"a-p2"}"#).unwrap();
}

#[test]
fn patient_labels_of_the_wrong_shape_do_not_load() {
    let allow = r#"decision := {"allow": true} if input.principal"#;
    let err =
        policy_with_data(allow, r#"{"patients": {"a-p1": {"tenant": "t", "security": "R"}}}"#).err().unwrap();
    assert!(err.contains("data.patients"), "{err}");
}
