//! FHIR R4 classification: every interaction, patient extraction, unresolved flags, bundles.

use http::Method;
use phigate_plugin::{FhirRequest, Interaction as I};

use crate::request::{classify, normalize_target, ClassifyError as E, TargetLimits};

pub(super) const JSON: Option<&str> = Some("application/fhir+json");
pub(super) const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

/// Normalizes `target` like the gateway does, then classifies it.
pub(super) fn run(
    method: &str,
    target: &str,
    body: Option<&str>,
    ct: Option<&str>,
) -> Result<FhirRequest, E> {
    let t = normalize_target(target.as_bytes(), &TargetLimits::default()).expect("normalizes");
    let m = Method::from_bytes(method.as_bytes()).expect("method");
    classify(&m, &t.path, &t.query, body.map(str::as_bytes), ct)
}

/// The fields a case checks.
pub(super) struct Want {
    i: I,
    rt: Option<&'static str>,
    id: Option<&'static str>,
    patients: &'static [&'static str],
    unresolved: &'static [&'static str],
}

pub(super) const fn w(i: I, rt: Option<&'static str>, id: Option<&'static str>) -> Want {
    Want { i, rt, id, patients: &[], unresolved: &[] }
}

pub(super) const fn p(mut want: Want, patients: &'static [&'static str]) -> Want {
    want.patients = patients;
    want
}

pub(super) const fn u(mut want: Want, unresolved: &'static [&'static str]) -> Want {
    want.unresolved = unresolved;
    want
}

pub(super) fn check(r: &FhirRequest, want: &Want, case: &str) {
    assert_eq!(r.interaction, want.i, "{case}");
    assert_eq!(r.resource_type, want.rt, "{case}");
    assert_eq!(r.id.as_deref(), want.id, "{case}");
    let patients: Vec<&str> = r.patients.iter().map(|p| p.as_str()).collect();
    assert_eq!(patients, want.patients, "{case}");
    let unresolved: Vec<&str> = r.unresolved.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(unresolved, want.unresolved, "{case}");
}

pub(super) const PT: Option<&str> = Some("Patient");
pub(super) const OBS: Option<&str> = Some("Observation");

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
        let r = run(m, &format!("/{}", target.trim_start_matches('/')), None, None)
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
            "_revinclude:iterate",
            "_filter",
            "_query",
            "_contained",
        ]
    );
    assert!(r.patients.is_empty());
}

#[test]
fn includes_are_resolved_only_on_a_search_of_one_compartment_type() {
    let cases: &[(&str, &[&str])] = &[
        ("/Observation?patient=1&_include=Observation:encounter&_revinclude=Provenance:target", &[]),
        ("/MedicationRequest?_include=MedicationRequest:medication", &[]),
        ("/Patient?_id=1&_revinclude=Provenance:target", &[]),
        ("/Patient/1/Encounter?_include=Encounter:practitioner", &[]),
        // Anchored outside the compartment: every Encounter of that practitioner, any patient.
        ("/Practitioner?_id=p&_revinclude=Encounter:practitioner", &["_revinclude"]),
        ("/Organization?_include=Organization:partof", &["_include"]),
        ("/?_type=Observation&_include=Observation:subject", &["_include"]),
        ("/Observation?patient=1&_include:iterate=Encounter:practitioner", &["_include:iterate"]),
    ];
    for (target, unresolved) in cases {
        let r = run("GET", target, None, None).unwrap_or_else(|e| panic!("{target}: {e:?}"));
        let got: Vec<&str> = r.unresolved.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(got, *unresolved, "{target}");
    }
}

#[test]
fn count_is_parsed_and_invalid_count_is_400() {
    assert_eq!(run("GET", "/Observation?_count=0", None, None).unwrap().count, Some(0));
    assert_eq!(run("GET", "/Observation?_count=4294967295", None, None).unwrap().count, Some(u32::MAX));
    assert_eq!(run("GET", "/Observation", None, None).unwrap().count, None);
    for bad in ["-1", "+5", "1e3", "", "4294967296", "ten", " 5"] {
        let target = format!("/Observation?_count={}", bad.replace(' ', "%20").replace('+', "%2B"));
        let err = run("GET", &target, None, None).unwrap_err();
        assert_eq!(err, E::InvalidCount, "{bad:?}");
        assert_eq!(err.error_code().as_str(), "bad_request");
    }
}

#[test]
fn a_page_of_a_stored_search_on_the_base_is_a_continuation() {
    let page = run("GET", "/?_getpages=9f3c&_getpagesoffset=20&_count=20&_bundletype=searchset", None, None);
    let page = page.unwrap();
    assert_eq!((page.interaction, page.continuation), (I::SearchSystem, true));
    for target in ["/?_lastUpdated=gt2020", "/Observation?_getpages=9f3c", "/_search?_getpages=9f3c"] {
        assert!(!run("GET", target, None, None).unwrap().continuation, "{target}");
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
        assert_eq!(run(m, target, None, None).unwrap_err(), *want, "{m} {target}");
    }
    assert_eq!(E::MethodNotAllowed.error_code().status().as_u16(), 405);
    assert_eq!(E::UnknownResourceType.error_code().status().as_u16(), 400);
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
