//! FHIR R4 classification: every interaction, patient extraction, unresolved flags, bundles.

use http::Method;
use phigate_plugin::{FhirRequest, Interaction as I};

use crate::request::{
    classify, normalize_target, ClassifyError as E, TargetLimits, UNRESOLVED_BODY,
};

const JSON: Option<&str> = Some("application/fhir+json");
const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

/// Normalizes `target` like the gateway does, then classifies it.
fn run(method: &str, target: &str, body: Option<&str>, ct: Option<&str>) -> Result<FhirRequest, E> {
    let t = normalize_target(target.as_bytes(), &TargetLimits::default()).expect("normalizes");
    let m = Method::from_bytes(method.as_bytes()).expect("method");
    classify(&m, &t.path, &t.query, body.map(str::as_bytes), ct)
}

/// The fields a case checks.
struct Want {
    i: I,
    rt: Option<&'static str>,
    id: Option<&'static str>,
    patients: &'static [&'static str],
    unresolved: &'static [&'static str],
}

const fn w(i: I, rt: Option<&'static str>, id: Option<&'static str>) -> Want {
    Want {
        i,
        rt,
        id,
        patients: &[],
        unresolved: &[],
    }
}

const fn p(mut want: Want, patients: &'static [&'static str]) -> Want {
    want.patients = patients;
    want
}

const fn u(mut want: Want, unresolved: &'static [&'static str]) -> Want {
    want.unresolved = unresolved;
    want
}

fn check(r: &FhirRequest, want: &Want, case: &str) {
    assert_eq!(r.interaction, want.i, "{case}");
    assert_eq!(r.resource_type, want.rt, "{case}");
    assert_eq!(r.id.as_deref(), want.id, "{case}");
    let patients: Vec<&str> = r.patients.iter().map(|p| p.as_str()).collect();
    assert_eq!(patients, want.patients, "{case}");
    let unresolved: Vec<&str> = r.unresolved.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(unresolved, want.unresolved, "{case}");
}

const PT: Option<&str> = Some("Patient");
const OBS: Option<&str> = Some("Observation");

#[test]
fn get_and_write_interactions_classify_by_the_r4_grammar() {
    #[rustfmt::skip]
    let cases: &[(&str, &str, Want)] = &[
        ("GET", "/metadata", w(I::Capabilities, None, None)),
        ("GET", "/Patient/123", p(w(I::Read, PT, Some("123")), &["123"])),
        ("HEAD", "/Patient/123", p(w(I::Read, PT, Some("123")), &["123"])),
        ("GET", "/Observation/o1", w(I::Read, OBS, Some("o1"))),
        ("GET", "/Patient/123/", p(w(I::Read, PT, Some("123")), &["123"])),
        ("GET", "/Patient/123/_history/2", p(w(I::Vread, PT, Some("123")), &["123"])),
        ("PUT", "/Patient/123", p(w(I::Update, PT, Some("123")), &["123"])),
        ("PATCH", "/Observation/o1", w(I::Patch, OBS, Some("o1"))),
        ("DELETE", "/Patient/123", p(w(I::Delete, PT, Some("123")), &["123"])),
        ("DELETE", "/Observation?patient=9", p(w(I::Delete, OBS, None), &["9"])),
        ("PUT", "/Observation?subject=Patient/9", p(w(I::Update, OBS, None), &["9"])),
        ("POST", "/Observation", w(I::Create, OBS, None)),
        ("GET", "/Patient/123/_history", p(w(I::History, PT, Some("123")), &["123"])),
        ("GET", "/Observation/_history", w(I::History, OBS, None)),
        ("GET", "/_history?_since=2024-01-01", w(I::History, None, None)),
        ("GET", "/Observation?code=1234-5", w(I::SearchType, OBS, None)),
        ("GET", "/Observation/_search?patient=5", p(w(I::SearchType, OBS, None), &["5"])),
        ("GET", "/", w(I::SearchSystem, None, None)),
        ("GET", "?_type=Observation&patient=3", p(w(I::SearchSystem, None, None), &["3"])),
        ("POST", "/_search", w(I::SearchSystem, None, None)),
        ("GET", "/Patient/7/Observation?code=x", p(w(I::SearchCompartment, OBS, None), &["7"])),
        ("GET", "/Patient/7/*", p(w(I::SearchCompartment, None, None), &["7"])),
        ("GET", "/Encounter/e1/Observation", w(I::SearchCompartment, OBS, None)),
        ("GET", "/Patient/7/$everything", p(w(I::Operation, PT, Some("7")), &["7"])),
        ("GET", "/Patient/$everything", w(I::Operation, PT, None)),
        ("GET", "/$export", w(I::Operation, None, None)),
        ("GET", "/Patient/$export", w(I::Operation, PT, None)),
        ("GET", "/Group/g1/$export", w(I::Operation, Some("Group"), Some("g1"))),
        ("POST", "/Observation/$lastn?patient=4", p(w(I::Operation, OBS, None), &["4"])),
        ("GET", "/Patient/7/_history/3/$meta", p(w(I::Operation, PT, Some("7")), &["7"])),
    ];
    for (m, target, want) in cases {
        let case = format!("{m} {target}");
        let r = run(
            m,
            &format!("/{}", target.trim_start_matches('/')),
            None,
            None,
        )
        .unwrap_or_else(|e| panic!("{case}: {e:?}"));
        check(&r, want, &case);
    }
}

#[test]
fn version_operation_and_compartment_fields_are_set() {
    let r = run("GET", "/Patient/123/_history/2", None, None).unwrap();
    assert_eq!(r.version_id.as_deref(), Some("2"));
    let r = run("GET", "/Patient/7/$everything?_count=50", None, None).unwrap();
    assert_eq!(r.operation.as_deref(), Some("everything"));
    assert_eq!(r.count, Some(50));
    let r = run("GET", "/Patient/7/Observation", None, None).unwrap();
    let c = r.compartment.expect("compartment");
    assert_eq!((c.resource_type, c.id.as_str()), ("Patient", "7"));
    let r = run("GET", "/Patient/7/_history/3/$meta", None, None).unwrap();
    assert_eq!(r.version_id.as_deref(), Some("3"));
    assert_eq!(r.operation.as_deref(), Some("meta"));
}

#[test]
fn search_params_name_patients_by_the_documented_rule() {
    #[rustfmt::skip]
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("/Observation?patient=123", &["123"], &[]),
        ("/Observation?patient=Patient/123", &["123"], &[]),
        ("/Observation?patient=https://ehr.example/fhir/Patient/123", &["123"], &[]),
        ("/Observation?patient=https://ehr.example/fhir/Patient/123/_history/4", &["123"], &[]),
        ("/Observation?patient=3,1,2,1", &["1", "2", "3"], &[]),
        ("/Observation?patient=1&patient=2", &["1", "2"], &[]),
        ("/Observation?patient:Patient=8", &["8"], &[]),
        ("/Observation?subject=Patient/123", &["123"], &[]),
        ("/Observation?subject=Group/9", &[], &[]),
        ("/Observation?subject:Patient=123", &["123"], &[]),
        ("/Observation?subject:Group=9", &[], &[]),
        // Bare id on a multi-target param: could be Patient/123, Group/123, Device/123.
        ("/Observation?subject=123", &[], &["subject"]),
        ("/Observation?performer=Patient/5", &["5"], &[]),
        ("/Observation?performer=Practitioner/5", &[], &[]),
        ("/Observation?performer=5", &[], &["performer"]),
        ("/AllergyIntolerance?asserter=Patient/6", &["6"], &[]),
        ("/Patient?_id=1,2", &["1", "2"], &[]),
        ("/Observation?_id=1", &[], &[]),
        ("/Patient?link=Patient/4", &["4"], &[]),
        ("/Observation?subject:missing=true", &[], &[]),
        ("/Observation?subject:identifier=urn:oid:1|2", &[], &["subject:identifier"]),
        ("/Observation?code=Patient/5", &[], &[]),
        ("/Observation?subject=urn:uuid:77e01fab-3e19-4e1c-aa99-8d513f25aab7", &[], &[]),
        ("/Observation?subject=https://ehr.example/other", &[], &["subject"]),
        ("/?_type=Patient&_id=4", &["4"], &[]),
        ("/?_id=4", &[], &["_id"]),
        ("/?_type=Patient,Observation&_id=4", &[], &["_id"]),
        ("/?_type=Observation&_id=4", &[], &[]),
        ("/?performer=Patient/2", &["2"], &[]),
        ("/Patient/7/Observation?patient=8", &["7", "8"], &[]),
    ];
    for (target, patients, unresolved) in cases {
        let r = run("GET", target, None, None).unwrap_or_else(|e| panic!("{target}: {e:?}"));
        let got: Vec<&str> = r.patients.iter().map(|p| p.as_str()).collect();
        assert_eq!(got, *patients, "{target}");
        let got: Vec<&str> = r.unresolved.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(got, *unresolved, "{target}");
    }
}

#[test]
fn chained_reverse_chained_include_and_filter_params_are_unresolved() {
    let r = run(
        "GET",
        "/Observation?subject:Patient.name=Smith&patient.name=x&_has:Observation:patient:code=1\
         &_include=Observation:subject&_revinclude:iterate=Provenance:target&_filter=x&_query=q\
         &_contained=true&_include=Observation:performer",
        None,
        None,
    )
    .unwrap();
    let names: Vec<&str> = r.unresolved.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "subject:Patient.name",
            "patient.name",
            "_has:Observation:patient:code",
            "_include",
            "_revinclude:iterate",
            "_filter",
            "_query",
            "_contained",
        ]
    );
    assert!(r.patients.is_empty());
}

#[test]
fn count_is_parsed_and_invalid_count_is_400() {
    assert_eq!(
        run("GET", "/Observation?_count=0", None, None)
            .unwrap()
            .count,
        Some(0)
    );
    assert_eq!(
        run("GET", "/Observation?_count=4294967295", None, None)
            .unwrap()
            .count,
        Some(u32::MAX)
    );
    assert_eq!(run("GET", "/Observation", None, None).unwrap().count, None);
    for bad in ["-1", "+5", "1e3", "", "4294967296", "ten", " 5"] {
        let target = format!(
            "/Observation?_count={}",
            bad.replace(' ', "%20").replace('+', "%2B")
        );
        let err = run("GET", &target, None, None).unwrap_err();
        assert_eq!(err, E::InvalidCount, "{bad:?}");
        assert_eq!(err.error_code().as_str(), "bad_request");
    }
}

#[test]
fn invalid_paths_types_ids_and_methods_are_refused() {
    #[rustfmt::skip]
    let cases: &[(&str, &str, E)] = &[
        ("GET", "/Patients/1", E::UnknownResourceType),
        ("GET", "/patient/1", E::UnknownResourceType),
        ("GET", "/Resource", E::UnknownResourceType),
        ("GET", "/Patient/1/Observationz", E::UnknownResourceType),
        ("GET", "/?_type=Patient,Bogus", E::UnknownResourceType),
        ("GET", "/Patient/1_2", E::InvalidId),
        ("GET", &*format!("/Patient/{}", "a".repeat(65)), E::InvalidId),
        ("GET", "/Observation/1/Patient", E::InvalidPath),
        ("GET", "/Patient/1/Observation/2/x", E::InvalidPath),
        ("GET", "/Patient/1/$", E::InvalidPath),
        ("GET", "/Patient/1/_history/2/x/y", E::InvalidPath),
        ("DELETE", "/", E::MethodNotAllowed),
        ("POST", "/Patient/1", E::MethodNotAllowed),
        ("PUT", "/metadata", E::MethodNotAllowed),
        ("DELETE", "/Patient/1/_history/2", E::MethodNotAllowed),
        ("GET", "/Observation?patient=Bogus/1", E::InvalidReference),
        ("GET", "/Observation?patient=a%20b", E::InvalidReference),
        ("GET", "/Observation?subject=Patient/", E::InvalidReference),
    ];
    for (m, target, want) in cases {
        assert_eq!(
            run(m, target, None, None).unwrap_err(),
            *want,
            "{m} {target}"
        );
    }
    assert_eq!(E::MethodNotAllowed.error_code().status().as_u16(), 405);
    assert_eq!(E::UnknownResourceType.error_code().status().as_u16(), 400);
}

#[test]
fn post_search_form_body_params_are_classified() {
    let r = run(
        "POST",
        "/Observation/_search?_count=5",
        Some("patient=Patient%2F42&code=x+y"),
        FORM,
    )
    .unwrap();
    check(&r, &p(w(I::SearchType, OBS, None), &["42"]), "form");
    assert_eq!(r.count, Some(5));
    let r = run(
        "POST",
        "/_search",
        Some("_type=Observation&subject=Patient/1&_include=x"),
        FORM,
    )
    .unwrap();
    check(
        &r,
        &u(p(w(I::SearchSystem, None, None), &["1"]), &["_include"]),
        "system form",
    );
    let r = run(
        "POST",
        "/Patient/3/Observation/_search",
        Some("performer=Patient/4"),
        FORM,
    )
    .unwrap();
    check(
        &r,
        &p(w(I::SearchCompartment, OBS, None), &["3", "4"]),
        "compartment form",
    );
}

#[test]
fn post_search_form_body_refusals() {
    let dup = run(
        "POST",
        "/Observation/_search?_count=5",
        Some("_count=5000"),
        FORM,
    )
    .unwrap_err();
    assert_eq!(dup.error_code().as_str(), "ambiguous_request");
    let json = run("POST", "/Observation/_search", Some("{}"), JSON).unwrap_err();
    assert_eq!(json, E::UnsupportedContentType);
    let ambiguous = run("POST", "/Observation/_search", Some("patient=%252F"), FORM).unwrap_err();
    assert_eq!(ambiguous.error_code().as_str(), "ambiguous_request");
    let bad = run("POST", "/Observation/_search", Some("_count=x"), FORM).unwrap_err();
    assert_eq!(bad, E::InvalidCount);
}

#[test]
fn create_and_update_bodies_name_their_patients() {
    let obs = r#"{"resourceType":"Observation","subject":{"reference":"Patient/77","display":"x"},
        "code":{"text":"bp"},"performer":[{"reference":"Practitioner/1"}]}"#;
    let r = run("POST", "/Observation", Some(obs), JSON).unwrap();
    check(&r, &p(w(I::Create, OBS, None), &["77"]), "create");
    let r = run(
        "PUT",
        "/Observation/o1",
        Some(obs),
        Some("application/json; charset=utf-8"),
    )
    .unwrap();
    check(&r, &p(w(I::Update, OBS, Some("o1")), &["77"]), "update");
    let consent = r#"{"resourceType":"Consent","patient":{"reference":"8"}}"#;
    let r = run("POST", "/Consent", Some(consent), None).unwrap();
    check(
        &r,
        &p(w(I::Create, Some("Consent"), None), &["8"]),
        "patient is Patient-only",
    );
    let group = r#"{"resourceType":"Observation","subject":{"reference":"Group/1"}}"#;
    assert!(run("POST", "/Observation", Some(group), JSON)
        .unwrap()
        .patients
        .is_empty());
    let urn = r#"{"resourceType":"Observation","subject":{"reference":"urn:uuid:1"}}"#;
    assert!(run("POST", "/Observation", Some(urn), JSON)
        .unwrap()
        .patients
        .is_empty());
    let cond = r#"{"resourceType":"Observation","subject":{"reference":"Patient?identifier=a|b"}}"#;
    let r = run("POST", "/Observation", Some(cond), JSON).unwrap();
    check(
        &r,
        &u(w(I::Create, OBS, None), &["subject"]),
        "conditional reference",
    );
    let r = run(
        "PUT",
        "/Patient/5",
        Some(r#"{"resourceType":"Patient","id":"5"}"#),
        JSON,
    )
    .unwrap();
    check(
        &r,
        &p(w(I::Update, PT, Some("5")), &["5"]),
        "patient update",
    );
}

#[test]
fn bodies_the_gateway_cannot_read_are_flagged_or_refused() {
    let r = run(
        "POST",
        "/Observation",
        Some("<Observation/>"),
        Some("application/fhir+xml"),
    )
    .unwrap();
    check(&r, &u(w(I::Create, OBS, None), &[UNRESOLVED_BODY]), "xml");
    let patch = r#"[{"op":"replace","path":"/subject","value":{"reference":"Patient/9"}}]"#;
    let r = run(
        "PATCH",
        "/Observation/1",
        Some(patch),
        Some("application/json-patch+json"),
    )
    .unwrap();
    check(
        &r,
        &u(w(I::Patch, OBS, Some("1")), &[UNRESOLVED_BODY]),
        "json patch",
    );
    let r = run(
        "POST",
        "/$export",
        Some(r#"{"resourceType":"Parameters"}"#),
        JSON,
    )
    .unwrap();
    check(
        &r,
        &u(w(I::Operation, None, None), &[UNRESOLVED_BODY]),
        "operation body",
    );
    let err = run("POST", "/Observation", Some("{not json"), JSON).unwrap_err();
    assert_eq!(err, E::InvalidBody);
}

const BATCH: &str = r#"{"resourceType":"Bundle","type":"batch","entry":[
  {"request":{"method":"GET","url":"Patient/1"}},
  {"request":{"method":"GET","url":"Observation?patient=2&_count=10"}},
  {"request":{"method":"GET","url":"Observation?subject=5"}},
  {"request":{"method":"DELETE","url":"Observation/o9"}},
  {"resource":{"resourceType":"Observation","subject":{"reference":"Patient/3"}},
   "request":{"method":"POST","url":"Observation"}},
  {"resource":{"resourceType":"Patient","id":"4"},"request":{"method":"PUT","url":"Patient/4"}},
  {"request":{"method":"GET","url":"Patient/1/$everything"}}
]}"#;

#[test]
fn batch_entries_are_classified_and_their_patients_unioned() {
    let r = run("POST", "/", Some(BATCH), JSON).unwrap();
    check(
        &r,
        &u(
            p(w(I::Batch, None, None), &["1", "2", "3", "4"]),
            &["subject"],
        ),
        "batch",
    );
    let kinds: Vec<I> = r.entries.iter().map(|e| e.interaction).collect();
    assert_eq!(
        kinds,
        [
            I::Read,
            I::SearchType,
            I::SearchType,
            I::Delete,
            I::Create,
            I::Update,
            I::Operation
        ]
    );
    assert_eq!(r.entries[1].count, Some(10));
    assert_eq!(r.entries[4].patients[0].as_str(), "3");
}

#[test]
fn synthea_transaction_with_urn_uuid_references_names_no_server_patient() {
    let bundle = r#"{"resourceType":"Bundle","type":"transaction","entry":[
      {"fullUrl":"urn:uuid:77e01fab-3e19-4e1c-aa99-8d513f25aab7",
       "resource":{"resourceType":"Patient","id":"77e01fab-3e19-4e1c-aa99-8d513f25aab7"},
       "request":{"method":"POST","url":"Patient"}},
      {"fullUrl":"urn:uuid:078abc4b-785f-4089-8349-e8889fb72238",
       "resource":{"resourceType":"Encounter","subject":{"reference":"urn:uuid:77e01fab-3e19-4e1c-aa99-8d513f25aab7","display":"Della"}},
       "request":{"method":"POST","url":"Encounter"}}
    ]}"#;
    // The base as an empty FHIR path, as the router passes it for `POST [base]`.
    let r = classify(&Method::POST, "", &[], Some(bundle.as_bytes()), JSON).unwrap();
    check(&r, &w(I::Transaction, None, None), "transaction");
    assert_eq!(r.entries.len(), 2);
    assert!(r.entries.iter().all(|e| e.interaction == I::Create));
}

#[test]
fn bundle_refusals() {
    let bundle = |t: &str, entry: &str| {
        format!(r#"{{"resourceType":"Bundle","type":"{t}","entry":[{entry}]}}"#)
    };
    #[rustfmt::skip]
    let cases: Vec<(String, Option<&str>, E)> = vec![
        (bundle("collection", ""), JSON, E::BundleType),
        (bundle("searchset", ""), JSON, E::BundleType),
        (r#"{"resourceType":"Bundle"}"#.to_owned(), JSON, E::BundleType),
        (r#"{"resourceType":"Patient","type":"batch"}"#.to_owned(), JSON, E::InvalidBody),
        ("[1,2]".to_owned(), JSON, E::InvalidBody),
        (bundle("batch", ""), Some("application/fhir+xml"), E::UnsupportedContentType),
        (bundle("batch", r#"{"resource":{}}"#), JSON, E::InvalidEntry),
        (bundle("batch", r#"{"request":{"method":"TRACE","url":"Patient"}}"#), JSON, E::InvalidEntry),
        (bundle("batch", r#"{"request":{"method":"GET","url":"Bogus/1"}}"#), JSON, E::UnknownResourceType),
        (bundle("batch", r#"{"request":{"method":"POST","url":""},"resource":{}}"#), JSON, E::NestedBundle),
        (bundle("batch", r#"{"request":{"method":"GET","url":"Patient/1/../2"}}"#), JSON,
            E::Ambiguous(crate::request::Ambiguity::DotSegment)),
        (bundle("batch", r#"{"request":{"method":"GET","url":"http://x/Patient/1"}}"#), JSON,
            E::Ambiguous(crate::request::Ambiguity::EmptySegment)),
    ];
    for (body, ct, want) in cases {
        assert_eq!(
            run("POST", "/", Some(&body), ct).unwrap_err(),
            want,
            "{body}"
        );
    }
    assert_eq!(run("POST", "/", None, JSON).unwrap_err(), E::BodyRequired);
}

#[test]
fn error_messages_never_contain_request_values() {
    let secret = "SSN123456789";
    for target in [
        format!("/{secret}/1"),
        format!("/Observation?_count={secret}"),
        format!("/Observation?patient=Bogus/{secret}"),
    ] {
        let err = run("GET", &target, None, None).unwrap_err();
        assert!(!err.to_string().contains(secret), "{target}");
        assert!(!format!("{err:?}").contains(secret), "{target}");
    }
}
