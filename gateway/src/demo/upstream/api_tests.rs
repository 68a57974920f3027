//! FHIR behaviour of the sample upstream, without sockets (the TLS end-to-end tests live in
//! `phigate-test-support`).

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::Value;

use super::fhir::{ApiRequest, FhirApi, Reply, FHIR_JSON};
use super::{FHIR_NDJSON, MAX_EXPORT_JOBS};
use crate::demo::data::{SampleData, RESOURCE_TYPES, TENANT_TAG_SYSTEM};

const BASE: &str = "https://up.test/fhir";

fn api() -> FhirApi {
    FhirApi::new(Arc::new(SampleData::generate()))
}

/// POSTs `body` to the base (a batch or transaction Bundle).
fn post_bundle(api: &FhirApi, body: &[u8]) -> Reply {
    api.handle(&ApiRequest {
        method: &Method::POST,
        path: "",
        query: "",
        base_url: BASE,
        form_body: false,
        body,
        headers: &HeaderMap::new(),
    })
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
        headers: &HeaderMap::new(),
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
fn the_history_of_a_resource_is_its_one_version() {
    let api = api();
    let (s, v) = get(&api, "Observation/a-p2-obs-03/_history");
    assert_eq!(s, StatusCode::OK);
    assert_eq!((v["type"].as_str(), v["total"].as_u64()), (Some("history"), Some(1)));
    assert_eq!(v["entry"][0]["resource"]["id"], "a-p2-obs-03");
    assert_eq!(v["entry"][0]["fullUrl"], format!("{BASE}/Observation/a-p2-obs-03"));
    assert_eq!(v["entry"][0]["response"]["etag"], "W/\"1\"");
    let (s, v) = get(&api, "Patient/a-p2/_history");
    assert_eq!((s, v["entry"][0]["resource"]["id"].as_str()), (StatusCode::OK, Some("a-p2")));
    let (s, v) = get(&api, "Observation/a-p2-obs-99/_history");
    assert_eq!((s, issue_code(&v)), (StatusCode::NOT_FOUND, "not-found"));
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
    let reply = post_bundle(&api, bundle.as_bytes());
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
    let reply = post_bundle(&api, br#"{"resourceType":"Bundle","type":"transaction","entry":[]}"#);
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

#[test]
fn metadata_lists_the_bulk_export_operations() {
    let api = api();
    let (_, v) = get(&api, "metadata");
    let system = v["rest"][0]["operation"].as_array().expect("system operations");
    assert!(system.iter().any(|o| o["name"] == "export"
        && o["definition"] == "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"));
    let patient = v["rest"][0]["resource"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["type"] == "Patient")
        .expect("Patient");
    let names: Vec<_> =
        patient["operation"].as_array().expect("operations").iter().map(|o| &o["name"]).collect();
    assert_eq!(names, ["everything", "export"]);
    let group = v["rest"][0]["resource"].as_array().expect("resources").iter().find(|r| r["type"] == "Group");
    let group = group.expect("Group");
    assert_eq!(
        group["operation"][0]["definition"],
        "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"
    );
    assert!(group.get("interaction").is_none(), "no Group resource is served");
}

// Bulk Data Access export.

const ASYNC: (&str, &str) = ("prefer", "respond-async");

/// Sends a request with headers; the raw reply, since bulk answers are not all FHIR JSON.
fn send(api: &FhirApi, method: Method, target: &str, headers: &[(&'static str, &str)]) -> Reply {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(*name, HeaderValue::from_str(value).expect("header value"));
    }
    api.handle(&ApiRequest {
        method: &method,
        path,
        query,
        base_url: BASE,
        form_body: false,
        body: &[],
        headers: &map,
    })
}

fn header<'r>(reply: &'r Reply, name: &str) -> Option<&'r str> {
    reply.headers.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.to_str().ok())
}

fn json(reply: &Reply) -> Value {
    serde_json::from_slice(&reply.body).expect("JSON body")
}

/// The target (below the base) of an absolute URL the upstream handed out.
fn target(url: &str) -> &str {
    url.strip_prefix(BASE).and_then(|t| t.strip_prefix('/')).expect("URL on the base")
}

/// Starts an export; the status URL from `Content-Location`.
fn kick_off(api: &FhirApi, target: &str, headers: &[(&'static str, &str)]) -> String {
    let reply = send(api, Method::GET, target, headers);
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{target}: {:?}", reply.body);
    header(&reply, "content-location").expect("Content-Location").to_owned()
}

/// Polls until the manifest is ready (the first poll is "in progress").
fn manifest(api: &FhirApi, status_url: &str) -> Value {
    let first = send(api, Method::GET, target(status_url), &[]);
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let done = send(api, Method::GET, target(status_url), &[]);
    assert_eq!(done.status, StatusCode::OK);
    json(&done)
}

/// Every file of a manifest: (type, resources), checking the count against the lines.
fn files(api: &FhirApi, manifest: &Value) -> Vec<(String, Vec<Value>)> {
    let outputs = manifest["output"].as_array().expect("output");
    outputs
        .iter()
        .map(|o| {
            let ty = o["type"].as_str().expect("type").to_owned();
            let reply = send(api, Method::GET, target(o["url"].as_str().expect("url")), &[]);
            assert_eq!((reply.status, reply.content_type), (StatusCode::OK, Some(FHIR_NDJSON)));
            let text = std::str::from_utf8(&reply.body).expect("UTF-8");
            assert!(text.ends_with('\n'), "every line ends in a newline");
            let lines: Vec<Value> =
                text.lines().map(|l| serde_json::from_str(l).expect("one resource per line")).collect();
            assert_eq!(o["count"].as_u64(), Some(lines.len() as u64), "{ty}");
            (ty, lines)
        })
        .collect()
}

fn tenant_tags(resource: &Value) -> Vec<&str> {
    resource["meta"]["tag"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .filter(|t| t["system"] == TENANT_TAG_SYSTEM)
                .filter_map(|t| t["code"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

fn export_of(api: &FhirApi, tenant: Option<&str>) -> Vec<Value> {
    let mut headers = vec![ASYNC];
    headers.extend(tenant.map(|t| ("x-phigate-tenant", t)));
    let status = kick_off(api, "$export", &headers);
    files(api, &manifest(api, &status)).into_iter().flat_map(|(_, lines)| lines).collect()
}

#[test]
fn export_kick_off_needs_prefer_respond_async() {
    let api = api();
    for target in ["$export", "Patient/$export"] {
        let reply = send(&api, Method::GET, target, &[]);
        assert_eq!(
            (reply.status, issue_code(&json(&reply))),
            (StatusCode::BAD_REQUEST, "invalid"),
            "{target}"
        );
        let reply = send(&api, Method::GET, target, &[("prefer", "return=minimal")]);
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{target}");
    }
    let reply = send(&api, Method::GET, "$export", &[("prefer", "handling=strict, respond-async")]);
    assert_eq!(reply.status, StatusCode::ACCEPTED);
}

#[test]
fn export_refuses_unknown_types_formats_and_parameters() {
    let api = api();
    for (target, code) in [
        ("$export?_type=Banana", "invalid"),
        ("$export?_type=Patient,Banana", "invalid"),
        ("$export?_type=Patient,", "invalid"),
        ("$export?_outputFormat=text/csv", "invalid"),
        ("$export?_since=2020-01-01T00:00:00Z", "not-supported"),
        ("Patient/$export?_type=Practitioner", "not-supported"),
    ] {
        let reply = send(&api, Method::GET, target, &[ASYNC]);
        assert_eq!((reply.status, issue_code(&json(&reply))), (StatusCode::BAD_REQUEST, code), "{target}");
    }
    for target in [
        "$export?_outputFormat=application%2Ffhir%2Bndjson",
        "$export?_outputFormat=application/fhir+ndjson",
        "$export?_outputFormat=application/ndjson",
        "$export?_outputFormat=ndjson&_type=Patient",
    ] {
        assert_eq!(send(&api, Method::GET, target, &[ASYNC]).status, StatusCode::ACCEPTED, "{target}");
    }
}

#[test]
fn export_kick_off_answers_202_with_the_status_url_and_an_informational_outcome() {
    let api = api();
    let reply = send(&api, Method::GET, "$export", &[ASYNC]);
    assert_eq!((reply.status, reply.content_type), (StatusCode::ACCEPTED, Some(FHIR_JSON)));
    assert_eq!(
        header(&reply, "content-location"),
        Some(&*format!("{BASE}/$export-poll-status?_jobId=job-1"))
    );
    let v = json(&reply);
    assert_eq!(v["resourceType"], "OperationOutcome");
    assert_eq!(
        (&v["issue"][0]["severity"], &v["issue"][0]["code"], &v["issue"][0]["diagnostics"]),
        (&Value::from("information"), &Value::from("informational"), &Value::from("Export started"))
    );
    let second = kick_off(&api, "Patient/$export", &[ASYNC]);
    assert_eq!(second, format!("{BASE}/$export-poll-status?_jobId=job-2"));
}

#[test]
fn export_first_poll_is_in_progress_then_the_manifest_counts_the_file_lines() {
    let api = api();
    let status = kick_off(&api, "$export?_outputFormat=ndjson", &[ASYNC]);
    let first = send(&api, Method::GET, target(&status), &[]);
    assert_eq!((first.status, first.body.len(), first.content_type), (StatusCode::ACCEPTED, 0, None));
    assert_eq!(
        (header(&first, "x-progress"), header(&first, "retry-after")),
        (Some("in-progress"), Some("1"))
    );
    for _ in 0..2 {
        let done = send(&api, Method::GET, target(&status), &[]);
        assert_eq!((done.status, done.content_type), (StatusCode::OK, Some("application/json")));
        let m = json(&done);
        let time = m["transactionTime"].as_str().expect("transactionTime");
        assert!(time.len() == 20 && time.as_bytes()[10] == b'T' && time.ends_with('Z'), "{time}");
        assert_eq!(m["request"], format!("{BASE}/$export?_outputFormat=ndjson"));
        assert_eq!((&m["requiresAccessToken"], &m["error"]), (&Value::Bool(true), &serde_json::json!([])));
        let outputs = m["output"].as_array().expect("output");
        let types: Vec<_> = outputs.iter().filter_map(|o| o["type"].as_str()).collect();
        let mut all = RESOURCE_TYPES.to_vec();
        all.sort_unstable();
        assert_eq!(types, all);
        for o in outputs {
            assert_eq!(o["url"], format!("{BASE}/Binary/job-1-{}", o["type"].as_str().unwrap_or("")));
        }
        let files = files(&api, &m);
        let total: usize = files.iter().map(|(_, lines)| lines.len()).sum();
        assert_eq!(total, api.data.resources().len());
    }
}

#[test]
fn export_files_hold_one_resource_of_their_type_per_line() {
    let api = api();
    let status = kick_off(&api, "$export?_type=Observation,Patient&_type=Patient", &[ASYNC]);
    let files = files(&api, &manifest(&api, &status));
    let counts: Vec<_> = files.iter().map(|(ty, lines)| (ty.as_str(), lines.len())).collect();
    assert_eq!(counts, [("Observation", 108), ("Patient", 9)]);
    for (ty, lines) in &files {
        for r in lines {
            assert_eq!(r["resourceType"], **ty);
            let id = r["id"].as_str().expect("id");
            let stored = api.data.resource(ty, id).expect("exported resource is in the store");
            assert_eq!(serde_json::from_slice::<Value>(&stored.json).ok().as_ref(), Some(r));
        }
    }
    let status = kick_off(&api, "Patient/$export", &[ASYNC]);
    let m = manifest(&api, &status);
    let types: Vec<_> =
        m["output"].as_array().expect("output").iter().filter_map(|o| o["type"].as_str()).collect();
    assert_eq!(types, ["Condition", "Encounter", "MedicationRequest", "Observation", "Patient"]);
}

#[test]
fn export_with_a_tenant_header_holds_only_that_tenants_resources() {
    let api = api();
    for (tenant, other) in [("tenant-a", "tenant-b"), ("tenant-b", "tenant-a")] {
        let resources = export_of(&api, Some(tenant));
        assert!(!resources.is_empty(), "{tenant}");
        for r in &resources {
            let tags = tenant_tags(r);
            assert!(tags.contains(&tenant) && !tags.contains(&other), "{tenant}: {}", r["id"]);
        }
    }
    let b_patients: Vec<_> = export_of(&api, Some("tenant-b"))
        .into_iter()
        .filter(|r| r["resourceType"] == "Patient")
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(b_patients, ["b-p1", "b-p2", "b-p3", "b-p4"]);
    let reply = send(&api, Method::GET, "$export", &[ASYNC, ("x-phigate-tenant", "")]);
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = send(
        &api,
        Method::GET,
        "$export",
        &[ASYNC, ("x-phigate-tenant", "tenant-a"), ("x-phigate-tenant", "tenant-b")],
    );
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[test]
fn a_group_export_holds_its_members_records_and_another_tenants_group_is_not_found() {
    let api = api();
    let status = kick_off(
        &api,
        "Group/tenant-a-cohort/$export?_type=Patient,Observation",
        &[ASYNC, ("x-phigate-tenant", "tenant-a")],
    );
    let files = files(&api, &manifest(&api, &status));
    let patients: Vec<_> = files
        .iter()
        .filter(|(ty, _)| ty == "Patient")
        .flat_map(|(_, l)| l)
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(patients, ["a-p1", "a-p2"], "the cohort: tenant A's first two patients");
    let subjects: std::collections::BTreeSet<_> = files
        .iter()
        .filter(|(ty, _)| ty == "Observation")
        .flat_map(|(_, l)| l)
        .map(|r| r["subject"]["reference"].as_str().expect("subject").to_owned())
        .collect();
    assert_eq!(subjects.into_iter().collect::<Vec<_>>(), ["Patient/a-p1", "Patient/a-p2"]);
    // Another tenant's Group, on a partitioned request, and an unknown Group: 404, no job.
    for (target, tenant) in
        [("Group/tenant-b-cohort/$export", Some("tenant-a")), ("Group/nobody/$export", None)]
    {
        let mut headers = vec![ASYNC];
        headers.extend(tenant.map(|t| ("x-phigate-tenant", t)));
        assert_eq!(send(&api, Method::GET, target, &headers).status, StatusCode::NOT_FOUND, "{target}");
    }
    assert!(kick_off(&api, "Group/tenant-b-cohort/$export", &[ASYNC]).ends_with("_jobId=job-2"));
    assert_eq!(
        send(&api, Method::HEAD, "Group/tenant-a-cohort/$export", &[ASYNC]).status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

/// A POST kick-off: `path` with a `Parameters` body, `Prefer: respond-async`.
fn post_kick_off(api: &FhirApi, path: &str, body: &str) -> Reply {
    let mut map = HeaderMap::new();
    map.append("prefer", HeaderValue::from_static("respond-async"));
    api.handle(&ApiRequest {
        method: &Method::POST,
        path,
        query: "",
        base_url: BASE,
        form_body: false,
        body: body.as_bytes(),
        headers: &map,
    })
}

#[test]
fn an_export_kicked_off_by_post_takes_its_parameters_from_the_body() {
    let api = api();
    let body = r#"{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"Patient,Condition"},
        {"name":"_outputFormat","valueString":"application/fhir+ndjson"}]}"#;
    for path in ["$export", "Patient/$export", "Group/tenant-a-cohort/$export"] {
        let reply = post_kick_off(&api, path, body);
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{path}: {:?}", reply.body);
        let status = header(&reply, "content-location").expect("Content-Location").to_owned();
        let types: Vec<String> =
            files(&api, &manifest(&api, &status)).into_iter().map(|(ty, _)| ty).collect();
        assert_eq!(types, ["Condition", "Patient"], "{path}");
    }
    assert_eq!(post_kick_off(&api, "$export", "").status, StatusCode::ACCEPTED, "no body: every type");
    for bad in [
        r#"{"resourceType":"Bundle"}"#,
        "not json",
        r#"{"resourceType":"Parameters","parameter":[{"name":"_type","valueInteger":3}]}"#,
        r#"{"resourceType":"Parameters","parameter":[{"name":"_since","valueString":"2026-01-01"}]}"#,
    ] {
        assert_eq!(post_kick_off(&api, "$export", bad).status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[test]
fn export_without_a_tenant_header_holds_both_tenants() {
    let api = api();
    let resources = export_of(&api, None);
    assert_eq!(resources.len(), api.data.resources().len());
    for tenant in ["tenant-a", "tenant-b"] {
        assert!(resources.iter().any(|r| tenant_tags(r).contains(&tenant)), "{tenant}");
    }
}

#[test]
fn deleting_an_export_removes_the_job_and_its_files() {
    let api = api();
    let status = kick_off(&api, "$export?_type=Patient", &[ASYNC]);
    let m = manifest(&api, &status);
    let file = m["output"][0]["url"].as_str().expect("url").to_owned();
    assert_eq!(send(&api, Method::GET, target(&file), &[]).status, StatusCode::OK);
    let reply = send(&api, Method::DELETE, target(&status), &[]);
    assert_eq!((reply.status, reply.body.len()), (StatusCode::ACCEPTED, 0));
    for (method, url) in [(Method::GET, &status), (Method::GET, &file), (Method::DELETE, &status)] {
        let reply = send(&api, method.clone(), target(url), &[]);
        assert_eq!(
            (reply.status, issue_code(&json(&reply))),
            (StatusCode::NOT_FOUND, "not-found"),
            "{method} {url}"
        );
    }
    // The rest of the upstream stays read-only.
    assert_eq!(send(&api, Method::DELETE, "Patient/a-p1", &[]).status, StatusCode::METHOD_NOT_ALLOWED);
}

#[test]
fn unknown_or_missing_export_job_and_file_are_404() {
    let api = api();
    kick_off(&api, "$export?_type=Patient", &[ASYNC]);
    for target in [
        "$export-poll-status?_jobId=job-9",
        "$export-poll-status",
        "$export-poll-status?jobId=job-1",
        "Binary/job-9-Patient",
        "Binary/job-1-Observation",
        "Binary/job-1",
    ] {
        let reply = send(&api, Method::GET, target, &[]);
        assert_eq!(
            (reply.status, issue_code(&json(&reply))),
            (StatusCode::NOT_FOUND, "not-found"),
            "{target}"
        );
    }
    // Other Binary ids keep the answer for an unsupported type.
    let reply = send(&api, Method::GET, "Binary/x", &[]);
    assert_eq!((reply.status, issue_code(&json(&reply))), (StatusCode::NOT_FOUND, "not-supported"));
    assert_eq!(send(&api, Method::GET, "Binary/job-1-Patient", &[]).status, StatusCode::OK);
}

#[test]
fn only_the_newest_export_jobs_are_kept() {
    let api = api();
    for n in 1..=MAX_EXPORT_JOBS + 1 {
        let status = kick_off(&api, "$export?_type=Patient", &[ASYNC]);
        assert!(status.ends_with(&format!("_jobId=job-{n}")), "{status}");
    }
    let poll =
        |job: usize| send(&api, Method::GET, &format!("$export-poll-status?_jobId=job-{job}"), &[]).status;
    assert_eq!(poll(1), StatusCode::NOT_FOUND);
    assert_eq!(send(&api, Method::GET, "Binary/job-1-Patient", &[]).status, StatusCode::NOT_FOUND);
    assert_eq!(poll(2), StatusCode::ACCEPTED);
    assert_eq!(poll(MAX_EXPORT_JOBS + 1), StatusCode::ACCEPTED);
}

#[test]
fn bulk_endpoints_are_refused_in_a_batch_and_by_head_without_side_effects() {
    let api = api();
    let status = kick_off(&api, "$export?_type=Patient", &[ASYNC]);
    let bundle = r#"{"resourceType":"Bundle","type":"batch","entry":[
        {"request":{"method":"GET","url":"$export-poll-status?_jobId=job-1"}},
        {"request":{"method":"GET","url":"Binary/job-1-Patient"}},
        {"request":{"method":"GET","url":"Patient/$export"}},
        {"request":{"method":"GET","url":"Group/tenant-a-cohort/$export"}}]}"#;
    let reply = post_bundle(&api, bundle.as_bytes());
    let v = json(&reply);
    let statuses: Vec<_> =
        v["entry"].as_array().expect("entries").iter().map(|e| e["response"]["status"].clone()).collect();
    assert_eq!(statuses, ["400 Bad Request", "400 Bad Request", "400 Bad Request", "400 Bad Request"]);
    assert_eq!(send(&api, Method::HEAD, target(&status), &[]).status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(send(&api, Method::HEAD, "$export", &[ASYNC]).status, StatusCode::METHOD_NOT_ALLOWED);
    // Neither consumed the first poll nor started a job.
    assert_eq!(send(&api, Method::GET, target(&status), &[]).status, StatusCode::ACCEPTED);
    assert!(kick_off(&api, "$export", &[ASYNC]).ends_with("_jobId=job-2"));
}

#[test]
fn export_copies_repeat_each_resource_in_a_row() {
    let once = api();
    let thrice = FhirApi::new(Arc::new(SampleData::generate())).with_export_copies(3);
    let single = files(&once, &manifest(&once, &kick_off(&once, "Patient/$export?_type=Patient", &[ASYNC])));
    let copied =
        files(&thrice, &manifest(&thrice, &kick_off(&thrice, "Patient/$export?_type=Patient", &[ASYNC])));
    let ids =
        |lines: &[Value]| lines.iter().map(|r| r["id"].as_str().expect("id").to_owned()).collect::<Vec<_>>();
    let expected: Vec<String> =
        ids(&single[0].1).into_iter().flat_map(|id| [id.clone(), id.clone(), id]).collect();
    assert_eq!(ids(&copied[0].1), expected);
}
