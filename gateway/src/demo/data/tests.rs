use serde_json::Value;

use super::*;

fn parse(r: &StoredResource) -> Value {
    serde_json::from_slice(&r.json).expect("valid JSON")
}

#[test]
fn generation_is_deterministic() {
    let a = SampleData::generate();
    let b = SampleData::generate();
    assert_eq!(a.resources().len(), b.resources().len());
    for (x, y) in a.resources().iter().zip(b.resources()) {
        assert_eq!(x.json, y.json);
    }
}

#[test]
fn documented_ids_exist_with_their_tenants() {
    let data = SampleData::generate();
    let ids =
        |t: &str| -> Vec<String> { data.tenant(t).expect(t).patients.iter().map(|p| p.id.clone()).collect() };
    assert_eq!(ids("tenant-a"), ["a-p1", "a-p2", "a-p3", "a-p4", "a-p5"]);
    assert_eq!(ids("tenant-b"), ["b-p1", "b-p2", "b-p3", "b-p4"]);
    let (tenant, p) = data.patient("b-p2").expect("b-p2");
    assert_eq!(tenant.id, "tenant-b");
    assert_eq!(p.observations.len(), 12);
    assert_eq!(p.observations[0], "b-p2-obs-01");
    assert_eq!(p.encounters, ["b-p2-enc-1", "b-p2-enc-2"]);
    assert_eq!(p.conditions, ["b-p2-cond-1", "b-p2-cond-2"]);
    assert_eq!(p.medication_requests, ["b-p2-medreq-1"]);
    assert_eq!(
        data.resources().len(),
        168,
        "9 patients' records and 4 practitioners, a PSY condition for each -p1"
    );
    assert!(data.patient("c-p1").is_none());
}

#[test]
fn care_teams_are_as_documented() {
    let data = SampleData::generate();
    let a = data.tenant("tenant-a").expect("a");
    assert_eq!(a.practitioners[0].id, "a-dr1");
    assert_eq!(a.practitioners[0].patients, ["a-p1", "a-p2", "a-p3"]);
    assert_eq!(a.practitioners[1].patients, ["a-p3", "a-p4", "a-p5"]);
    let b = data.tenant("tenant-b").expect("b");
    assert_eq!(b.practitioners[1].patients, ["b-p3", "b-p4"]);
    assert!(data.resource("Practitioner", "b-dr2").is_some());
}

#[test]
fn every_resource_is_fhir_json_with_tenant_tag_and_patient_reference() {
    let data = SampleData::generate();
    for r in data.resources() {
        assert!(
            r.json.starts_with(format!("{{\"resourceType\":\"{}\",", r.resource_type).as_bytes()),
            "{}",
            r.id
        );
        let v = parse(r);
        assert_eq!(v["id"], *r.id);
        let tag = &v["meta"]["tag"][0];
        assert_eq!(tag["system"], TENANT_TAG_SYSTEM);
        assert_eq!(tag["code"], *r.tenant);
        match (r.resource_type, &r.patient) {
            ("Patient", Some(p)) => assert_eq!(*p, r.id),
            ("Practitioner", None) => {}
            (_, Some(p)) => {
                assert_eq!(v["subject"]["reference"], format!("Patient/{p}"));
                let (tenant, _) = data.patient(p).expect("patient exists");
                assert_eq!(tenant.id, *r.tenant, "resource and patient share a tenant");
            }
            (t, None) => panic!("{t} {} has no patient", r.id),
        }
    }
}

#[test]
fn indexes_find_resources_by_id_type_and_patient() {
    let data = SampleData::generate();
    let obs = data.resource("Observation", "a-p4-obs-07").expect("obs");
    assert_eq!(obs.patient.as_deref(), Some("a-p4"));
    assert!(data.resource("Observation", "a-p4-obs-13").is_none());
    assert!(data.resource("Nope", "a-p1").is_none());
    assert_eq!(data.of_type("Observation").len(), 9 * 12);
    assert_eq!(data.of_type("Patient").len(), 9);
    assert_eq!(data.of_patient("Observation", "a-p1").len(), 12);
    assert_eq!(data.of_patient("Condition", "b-p4").len(), 2);
    let all = data.everything("a-p1");
    assert_eq!(all.len(), 19);
    assert_eq!(data.get(all[0]).resource_type, "Patient");
    assert!(data.everything("zz").is_empty());
}

#[test]
fn tokens_match_code_and_system_forms() {
    let data = SampleData::generate();
    let obs = data.resource("Observation", "a-p1-obs-01").expect("obs");
    assert!(obs.has_token("code", "8867-4"));
    assert!(obs.has_token("code", "http://loinc.org|8867-4"));
    assert!(obs.has_token("category", "vital-signs"));
    assert!(obs.has_token("_tag", "https://phigate.dev/tenant|tenant-a"));
    assert!(obs.has_token("encounter", "Encounter/a-p1-enc-1"));
    assert!(!obs.has_token("_tag", "tenant-b"));
    assert!(!obs.has_token("code", "http://snomed.info/sct|8867-4"));
    let psy = data.resource("Condition", "a-p1-cond-psy").expect("the labelled condition");
    assert!(psy.has_token("_security", "http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY"));
    assert_eq!(parse(psy)["meta"]["security"][0]["code"], "PSY");
    assert_eq!(data.of_patient("Condition", "a-p1").len(), 3);
    assert!(data.resource("Condition", "a-p2-cond-psy").is_none(), "only the first patient of a tenant");
}
