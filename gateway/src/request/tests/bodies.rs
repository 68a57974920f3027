//! Classification of requests with bodies: `POST _search` forms, create/update resources,
//! batch and transaction Bundles.

use http::Method;
use phigate_plugin::Interaction as I;

use super::classify::{check, p, run, u, w, FORM, JSON, OBS, PT};
use crate::request::{classify, Ambiguity, ClassifyError as E, UNRESOLVED_BODY};

#[test]
fn post_search_form_body_params_are_classified() {
    let r =
        run("POST", "/Observation/_search?_count=5", Some("patient=Patient%2F42&code=x+y"), FORM).unwrap();
    check(&r, &p(w(I::SearchType, OBS, None), &["42"]), "form");
    assert_eq!(r.count, Some(5));
    let r = run("POST", "/_search", Some("_type=Observation&subject=Patient/1&_include=x"), FORM).unwrap();
    check(&r, &u(p(w(I::SearchSystem, None, None), &["1"]), &["_include"]), "system form");
    let r = run("POST", "/Patient/3/Observation/_search", Some("performer=Patient/4"), FORM).unwrap();
    check(&r, &p(w(I::SearchCompartment, OBS, None), &["3", "4"]), "compartment form");
}

#[test]
fn post_search_form_body_refusals() {
    let dup = run("POST", "/Observation/_search?_count=5", Some("_count=5000"), FORM).unwrap_err();
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
    let r = run("PUT", "/Observation/o1", Some(obs), Some("application/json; charset=utf-8")).unwrap();
    check(&r, &p(w(I::Update, OBS, Some("o1")), &["77"]), "update");
    let consent = r#"{"resourceType":"Consent","patient":{"reference":"8"}}"#;
    let r = run("POST", "/Consent", Some(consent), None).unwrap();
    check(&r, &p(w(I::Create, Some("Consent"), None), &["8"]), "patient is Patient-only");
    let group = r#"{"resourceType":"Observation","subject":{"reference":"Group/1"}}"#;
    assert!(run("POST", "/Observation", Some(group), JSON).unwrap().patients.is_empty());
    let urn = r#"{"resourceType":"Observation","subject":{"reference":"urn:uuid:1"}}"#;
    assert!(run("POST", "/Observation", Some(urn), JSON).unwrap().patients.is_empty());
    let cond = r#"{"resourceType":"Observation","subject":{"reference":"Patient?identifier=a|b"}}"#;
    let r = run("POST", "/Observation", Some(cond), JSON).unwrap();
    check(&r, &u(w(I::Create, OBS, None), &["subject"]), "conditional reference");
    let r = run("PUT", "/Patient/5", Some(r#"{"resourceType":"Patient","id":"5"}"#), JSON).unwrap();
    check(&r, &p(w(I::Update, PT, Some("5")), &["5"]), "patient update");
}

#[test]
fn bodies_the_gateway_cannot_read_are_flagged_or_refused() {
    let r = run("POST", "/Observation", Some("<Observation/>"), Some("application/fhir+xml")).unwrap();
    check(&r, &u(w(I::Create, OBS, None), &[UNRESOLVED_BODY]), "xml");
    let r = run("POST", "/$export", Some(r#"{"resourceType":"Parameters"}"#), JSON).unwrap();
    check(&r, &u(w(I::Operation, None, None), &[UNRESOLVED_BODY]), "operation body");
    let err = run("POST", "/Observation", Some("{not json"), JSON).unwrap_err();
    assert_eq!(err, E::InvalidBody);
}

const JSON_PATCH: Option<&str> = Some("application/json-patch+json");

#[test]
fn a_json_patch_names_the_patients_its_values_write() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        (r#"[{"op":"replace","path":"/status","value":"amended"}]"#, &[], &[]),
        (r#"[{"op":"replace","path":"/subject","value":{"reference":"Patient/9"}}]"#, &["9"], &[]),
        (r#"[{"op":"replace","path":"/subject/reference","value":"Patient/8"}]"#, &["8"], &[]),
        (r#"[{"op":"add","path":"/performer/-","value":{"reference":"Patient/7"}}]"#, &["7"], &[]),
        (r#"[{"op":"add","path":"/patient","value":{"reference":"6"}}]"#, &["6"], &[]),
        // A bare id under `subject` could be a Group or a Device: unresolved, as in a body.
        (r#"[{"op":"replace","path":"/subject/reference","value":"5"}]"#, &[], &["subject"]),
        (r#"[{"op":"test","path":"/subject","value":{"reference":"Patient/4"}}]"#, &["4"], &[]),
        (
            r#"[{"op":"add","path":"","value":{"resourceType":"Observation","subject":{"reference":"Patient/3"}}}]"#,
            &["3"],
            &[],
        ),
        (
            r#"[{"op":"add","path":"/contained/0","value":{"resourceType":"Encounter","subject":{"reference":"Patient/2"}}}]"#,
            &["2"],
            &[],
        ),
        // Rearranging or dropping what the stored record holds writes nothing new.
        (
            r#"[{"op":"remove","path":"/subject"},{"op":"copy","from":"/subject","path":"/focus/0"}]"#,
            &[],
            &[],
        ),
    ];
    for (patch, patients, unresolved) in cases {
        let r = run("PATCH", "/Observation/1", Some(patch), JSON_PATCH)
            .unwrap_or_else(|e| panic!("{patch}: {e:?}"));
        check(&r, &u(p(w(I::Patch, OBS, Some("1")), patients), unresolved), patch);
    }
    for bad in [
        r#"{"op":"replace"}"#,
        r#"[{"op":"replace","path":"/subject"}]"#,
        r#"[{"op":"merge","path":"/x","value":1}]"#,
    ] {
        assert_eq!(
            run("PATCH", "/Observation/1", Some(bad), JSON_PATCH).unwrap_err(),
            E::InvalidBody,
            "{bad}"
        );
    }
}

/// A FHIRPath Patch of one operation with these parts (after `type`).
fn fhirpath_patch(kind: &str, parts: &str) -> String {
    format!(
        r#"{{"resourceType":"Parameters","parameter":[{{"name":"operation","part":[{{"name":"type","valueCode":"{kind}"}},{parts}]}}]}}"#
    )
}

#[test]
fn a_fhirpath_patch_names_the_patients_its_values_write() {
    let path = |p: &str| format!(r#"{{"name":"path","valueString":"{p}"}}"#);
    let cases: Vec<(String, &[&str], &[&str])> = vec![
        (
            fhirpath_patch(
                "replace",
                &format!(r#"{},{{"name":"value","valueCode":"amended"}}"#, path("Observation.status")),
            ),
            &[],
            &[],
        ),
        (
            fhirpath_patch(
                "replace",
                &format!(
                    r#"{},{{"name":"value","valueReference":{{"reference":"Patient/9"}}}}"#,
                    path("Observation.subject")
                ),
            ),
            &["9"],
            &[],
        ),
        (
            fhirpath_patch(
                "replace",
                &format!(
                    r#"{},{{"name":"value","valueString":"Patient/8"}}"#,
                    path("Observation.subject.reference")
                ),
            ),
            &["8"],
            &[],
        ),
        // A complex value written as parts.
        (
            fhirpath_patch(
                "add",
                &format!(
                    r#"{},{{"name":"name","valueString":"performer"}},{{"name":"value","part":[{{"name":"reference","valueString":"Patient/7"}}]}}"#,
                    path("Observation")
                ),
            ),
            &["7"],
            &[],
        ),
        (
            fhirpath_patch(
                "insert",
                &format!(
                    r#"{},{{"name":"value","valueReference":{{"reference":"5"}}}},{{"name":"index","valueInteger":0}}"#,
                    path("Observation.subject")
                ),
            ),
            &[],
            &["subject"],
        ),
        (fhirpath_patch("delete", &path("Observation.subject")), &[], &[]),
    ];
    for (patch, patients, unresolved) in &cases {
        let r =
            run("PATCH", "/Observation/1", Some(patch), JSON).unwrap_or_else(|e| panic!("{patch}: {e:?}"));
        check(&r, &u(p(w(I::Patch, OBS, Some("1")), patients), unresolved), patch);
    }
    let unknown = fhirpath_patch("merge", &path("Observation.subject"));
    for bad in [
        unknown.as_str(),
        r#"{"resourceType":"Observation"}"#,
        r#"{"resourceType":"Parameters","parameter":[{"name":"x"}]}"#,
    ] {
        assert_eq!(run("PATCH", "/Observation/1", Some(bad), JSON).unwrap_err(), E::InvalidBody, "{bad}");
    }
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
    check(&r, &u(p(w(I::Batch, None, None), &["1", "2", "3", "4"]), &["subject"]), "batch");
    let kinds: Vec<I> = r.entries.iter().map(|e| e.interaction).collect();
    assert_eq!(kinds, [I::Read, I::SearchType, I::SearchType, I::Delete, I::Create, I::Update, I::Operation]);
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
    let bundle =
        |t: &str, entry: &str| format!(r#"{{"resourceType":"Bundle","type":"{t}","entry":[{entry}]}}"#);
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
            E::Ambiguous(Ambiguity::DotSegment)),
        (bundle("batch", r#"{"request":{"method":"GET","url":"http://x/Patient/1"}}"#), JSON,
            E::Ambiguous(Ambiguity::EmptySegment)),
    ];
    for (body, ct, want) in cases {
        assert_eq!(run("POST", "/", Some(&body), ct).unwrap_err(), want, "{body}");
    }
    assert_eq!(run("POST", "/", None, JSON).unwrap_err(), E::BodyRequired);
}

#[test]
fn duplicate_json_keys_are_refused_not_guessed() {
    // Two parsers may keep different copies of a repeated key: the gateway refuses the body.
    let dup = r#"{"resourceType":"Observation","subject":{"reference":"Patient/1"},
        "subject":{"reference":"Patient/2"}}"#;
    assert_eq!(run("POST", "/Observation", Some(dup), JSON).unwrap_err(), E::InvalidBody);
    let dup_type = r#"{"resourceType":"Bundle","type":"batch","type":"collection","entry":[]}"#;
    assert_eq!(run("POST", "/", Some(dup_type), JSON).unwrap_err(), E::InvalidBody);
}

#[test]
fn json_escapes_in_references_are_decoded_before_judging() {
    let escaped = r#"{"resourceType":"Observation","subject":{"reference":"Patient\/1\u0032"}}"#;
    let r = run("POST", "/Observation", Some(escaped), JSON).unwrap();
    check(&r, &p(w(I::Create, OBS, None), &["12"]), "escaped reference");
}

#[test]
fn compartment_definition_preloads_and_errors_have_fixed_reasons() {
    assert_eq!(crate::request::preload(), Ok(()));
    assert_eq!(E::InvalidCount.reason(), "invalid_count");
    assert_eq!(E::Ambiguous(Ambiguity::DotSegment).reason(), "dot_segment");
    assert_eq!(E::CompartmentUnavailable.error_code().as_str(), "internal_error");
}

#[test]
fn every_reference_of_a_written_resource_counts_not_only_subject() {
    // Observation.performer and Coverage.beneficiary put a resource in a patient's compartment.
    let obs = r#"{"resourceType":"Observation","subject":{"reference":"Patient/1"},
        "performer":[{"reference":"Practitioner/2"},{"reference":"Patient/3"}],
        "extension":[{"url":"x","valueReference":{"reference":"Patient\/4"}}]}"#;
    let r = run("POST", "/Observation", Some(obs), JSON).unwrap();
    check(&r, &p(w(I::Create, OBS, None), &["1", "3", "4"]), "nested references");
    let coverage = r#"{"resourceType":"Coverage","beneficiary":{"reference":"Patient/5"}}"#;
    let r = run("PUT", "/Coverage/c1", Some(coverage), JSON).unwrap();
    check(&r, &p(w(I::Update, Some("Coverage"), Some("c1")), &["5"]), "beneficiary");
    let contained = r##"{"resourceType":"Observation","contained":[{"resourceType":"Observation",
        "subject":{"reference":"Patient/6"}}],"subject":{"reference":"#c"}}"##;
    let r = run("POST", "/Observation", Some(contained), JSON).unwrap();
    check(&r, &p(w(I::Create, OBS, None), &["6"]), "contained resources");
    let bare = r#"{"resourceType":"Observation","performer":[{"reference":"7"}]}"#;
    let r = run("POST", "/Observation", Some(bare), JSON).unwrap();
    check(&r, &u(w(I::Create, OBS, None), &[UNRESOLVED_BODY]), "bare id outside subject/patient");
    let repeated = r#"{"resourceType":"Observation","performer":[{"reference":"Patient/1",
        "reference":"Patient/2"}]}"#;
    assert_eq!(run("POST", "/Observation", Some(repeated), JSON).unwrap_err(), E::InvalidBody);
    let bad = r#"{"resourceType":"Observation","performer":[{"reference":"Bogus/1"}]}"#;
    assert_eq!(run("POST", "/Observation", Some(bad), JSON).unwrap_err(), E::InvalidReference);
}

#[test]
fn bundle_entry_resources_count_every_reference() {
    let bundle = r#"{"resourceType":"Bundle","type":"transaction","entry":[
      {"resource":{"resourceType":"Observation","performer":[{"reference":"Patient/9"}]},
       "request":{"method":"POST","url":"Observation"}}]}"#;
    let r = run("POST", "/", Some(bundle), JSON).unwrap();
    assert_eq!(r.patients.iter().map(|p| p.as_str()).collect::<Vec<_>>(), ["9"]);
}
