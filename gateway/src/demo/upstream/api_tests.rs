//! FHIR behaviour of the sample upstream, without sockets (the TLS end-to-end tests live in
//! `phigate-test-support`).

use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::Value;

use super::fhir::{ApiRequest, FhirApi};
use crate::demo::data::SampleData;

const BASE: &str = "https://up.test/fhir";

fn api() -> FhirApi {
    FhirApi::new(Arc::new(SampleData::generate()))
}

fn call(api: &FhirApi, method: Method, target: &str, form: Option<&str>) -> (StatusCode, Value) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let body = form.unwrap_or("");
    let reply = api.handle(&ApiRequest {
        method: &method,
        path,
        query,
        base_url: BASE,
        form_body: form.is_some(),
        body: body.as_bytes(),
    });
    let json = serde_json::from_slice(&reply.body).expect("JSON body");
    (reply.status, json)
}

fn get(api: &FhirApi, target: &str) -> (StatusCode, Value) {
    call(api, Method::GET, target, None)
}

fn ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|e| e.iter().map(|e| e["resource"]["id"].as_str().unwrap_or("").to_owned()).collect())
        .unwrap_or_default()
}

fn link(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == relation)
        .and_then(|l| l["url"].as_str().map(str::to_owned))
}

fn issue_code(v: &Value) -> &str {
    assert_eq!(v["resourceType"], "OperationOutcome");
    v["issue"][0]["code"].as_str().unwrap_or("")
}

#[test]
fn read_returns_the_resource_and_missing_is_404_operation_outcome() {
    let api = api();
    let (s, v) = get(&api, "Observation/a-p2-obs-03");
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["subject"]["reference"], "Patient/a-p2");
    let (s, v) = get(&api, "Observation/a-p2-obs-99");
    assert_eq!((s, issue_code(&v)), (StatusCode::NOT_FOUND, "not-found"));
    let (s, v) = get(&api, "Banana/1");
    assert_eq!((s, issue_code(&v)), (StatusCode::NOT_FOUND, "not-supported"));
}

#[test]
fn search_pages_with_default_size_and_next_link_using_offset() {
    let api = api();
    let (s, v) = get(&api, "Observation");
    assert_eq!(s, StatusCode::OK);
    assert_eq!((v["type"].as_str(), v["total"].as_u64()), (Some("searchset"), Some(108)));
    assert_eq!(ids(&v).len(), 20);
    assert_eq!(v["entry"][0]["fullUrl"], format!("{BASE}/Observation/a-p1-obs-01"));
    assert_eq!(v["entry"][0]["search"]["mode"], "match");
    let next = link(&v, "next").expect("next");
    assert_eq!(next, format!("{BASE}/Observation?_count=20&_offset=20"));
    let (_, last) = get(&api, "Observation?_count=20&_offset=100");
    assert_eq!(ids(&last).len(), 8);
    assert!(link(&last, "next").is_none());
    assert_eq!(
        link(&last, "previous").as_deref(),
        Some(&*format!("{BASE}/Observation?_count=20&_offset=80"))
    );
}

#[test]
fn count_is_capped_at_100_and_repeated_count_is_400() {
    let api = api();
    let (_, v) = get(&api, "Observation?_count=500");
    assert_eq!(ids(&v).len(), 100);
    let (s, v) = get(&api, "Observation?_count=5&_count=6");
    assert_eq!((s, issue_code(&v)), (StatusCode::BAD_REQUEST, "invalid"));
    let (s, _) = get(&api, "Observation?_count=many");
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = get(&api, "Observation?_offset=1&_offset=2");
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[test]
fn offset_past_the_end_is_an_empty_page_not_an_overflow() {
    let api = api();
    let (s, v) = get(&api, &format!("Observation?_offset={}", usize::MAX));
    assert_eq!((s, v["total"].as_u64(), v.get("entry")), (StatusCode::OK, Some(108), None));
    assert!(link(&v, "next").is_none());
}

#[test]
fn patient_and_subject_filters_accept_references_and_or_lists() {
    let api = api();
    let (_, v) = get(&api, "Observation?patient=Patient/a-p1,a-p2&_count=100");
    assert_eq!(v["total"], 24);
    assert!(ids(&v).iter().all(|i| i.starts_with("a-p1-") || i.starts_with("a-p2-")));
    let (_, v) = get(&api, "Condition?subject=Patient%2Fb-p3");
    assert_eq!(ids(&v), ["b-p3-cond-1", "b-p3-cond-2"]);
    let (_, v) = get(&api, "Condition?subject=Group/b-p3");
    assert_eq!(v["total"], 0);
    let (_, v) = get(&api, "Observation?patient=a-p1&code=http://loinc.org|8867-4");
    assert_eq!(ids(&v), ["a-p1-obs-01", "a-p1-obs-07"]);
}

#[test]
fn unknown_search_parameter_is_400_not_ignored() {
    let api = api();
    let (s, v) = get(&api, "Observation?patient.name=x");
    assert_eq!((s, issue_code(&v)), (StatusCode::BAD_REQUEST, "invalid"));
    let (s, _) = get(&api, "Observation?patient:missing=true");
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[test]
fn tag_and_id_filters_select_by_tenant_and_id() {
    let api = api();
    let (_, v) = get(&api, "Patient?_tag=https://phigate.dev/tenant|tenant-b");
    assert_eq!(ids(&v), ["b-p1", "b-p2", "b-p3", "b-p4"]);
    let (_, v) = get(&api, "Patient?_id=a-p5,b-p1");
    assert_eq!(ids(&v), ["a-p5", "b-p1"]);
    let (_, v) = get(&api, "Patient?_summary=count");
    assert_eq!((v["total"].as_u64(), v.get("entry")), (Some(9), None));
}

#[test]
fn compartment_search_is_scoped_and_pages_on_its_own_path() {
    let api = api();
    let (_, v) = get(&api, "Patient/a-p1/Observation?_count=5");
    assert_eq!(v["total"], 12);
    assert_eq!(ids(&v).len(), 5);
    assert_eq!(
        link(&v, "next").as_deref(),
        Some(&*format!("{BASE}/Patient/a-p1/Observation?_count=5&_offset=5"))
    );
    let (s, _) = get(&api, "Patient/zz/Observation");
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = get(&api, "Patient/a-p1/Practitioner");
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[test]
fn everything_returns_patient_first_then_records_paged() {
    let api = api();
    let (_, v) = get(&api, "Patient/b-p1/$everything?_count=10");
    assert_eq!(v["total"], 19);
    assert_eq!(ids(&v)[0], "b-p1");
    let next = link(&v, "next").expect("next");
    assert_eq!(next, format!("{BASE}/Patient/b-p1/$everything?_count=10&_offset=10"));
    let (_, page2) = get(&api, "Patient/b-p1/$everything?_count=10&_offset=10");
    assert_eq!(ids(&page2).len(), 9);
    let (s, _) = get(&api, "Patient/b-p1/$everything?code=x");
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[test]
fn batch_answers_each_entry_in_order() {
    let api = api();
    let bundle = r#"{"resourceType":"Bundle","type":"batch","entry":[
        {"request":{"method":"GET","url":"Patient/a-p1"}},
        {"request":{"method":"GET","url":"Patient/nope"}},
        {"request":{"method":"GET","url":"Observation?patient=a-p3&_count=2"}},
        {"request":{"method":"DELETE","url":"Patient/a-p1"}}]}"#;
    let reply = api.handle(&ApiRequest {
        method: &Method::POST,
        path: "",
        query: "",
        base_url: BASE,
        form_body: false,
        body: bundle.as_bytes(),
    });
    assert_eq!(reply.status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&reply.body).expect("json");
    assert_eq!(v["type"], "batch-response");
    let statuses: Vec<_> =
        v["entry"].as_array().expect("entries").iter().map(|e| e["response"]["status"].clone()).collect();
    assert_eq!(statuses, ["200 OK", "404 Not Found", "200 OK", "405 Method Not Allowed"]);
    assert_eq!(v["entry"][0]["resource"]["id"], "a-p1");
    assert_eq!(v["entry"][2]["resource"]["total"], 12);
    assert_eq!(v["entry"][1]["outcome"]["resourceType"], "OperationOutcome");
}

#[test]
fn transaction_and_non_bundle_posts_are_400() {
    let api = api();
    let (s, v) = call(&api, Method::POST, "", None);
    assert_eq!((s, issue_code(&v)), (StatusCode::BAD_REQUEST, "invalid"));
    let reply = api.handle(&ApiRequest {
        method: &Method::POST,
        path: "",
        query: "",
        base_url: BASE,
        form_body: false,
        body: br#"{"resourceType":"Bundle","type":"transaction","entry":[]}"#,
    });
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[test]
fn post_search_reads_form_parameters() {
    let api = api();
    let (s, v) = call(&api, Method::POST, "Observation/_search", Some("patient=b-p2&_count=3"));
    assert_eq!(s, StatusCode::OK);
    assert_eq!((v["total"].as_u64(), ids(&v).len()), (Some(12), 3));
    let (s, _) = call(&api, Method::POST, "Observation/_search?patient=b-p2", None);
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[test]
fn writes_are_405_and_unknown_paths_404() {
    let api = api();
    for (m, p) in [(Method::PUT, "Patient/a-p1"), (Method::DELETE, "Patient/a-p1"), (Method::POST, "Patient")]
    {
        let (s, v) = call(&api, m, p, None);
        assert_eq!((s, issue_code(&v)), (StatusCode::METHOD_NOT_ALLOWED, "not-supported"));
    }
    for p in ["Patient//a-p1", "Patient/a-p1/", "Patient/a-p1/Observation/x/y"] {
        assert_eq!(get(&api, p).0, StatusCode::NOT_FOUND, "{p}");
    }
}

#[test]
fn metadata_is_an_r4_capability_statement_listing_the_search_params() {
    let api = api();
    let (s, v) = get(&api, "metadata");
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (v["resourceType"].as_str(), v["fhirVersion"].as_str()),
        (Some("CapabilityStatement"), Some("4.0.1"))
    );
    let obs = v["rest"][0]["resource"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["type"] == "Observation")
        .expect("Observation");
    assert!(obs["searchParam"].as_array().expect("params").iter().any(|p| p["name"] == "patient"));
}

#[test]
fn error_bodies_never_echo_the_request() {
    let api = api();
    let (_, v) = get(&api, "Observation?secret-param=SSN-123-45-6789");
    assert!(!v.to_string().contains("SSN-123"));
    assert!(!v.to_string().contains("secret-param"));
}
