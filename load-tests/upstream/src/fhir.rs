//! Canned FHIR R4 payloads: a Patient (~1 KB) and a searchset Bundle of Observations (~50 KB).
//!
//! Everything is serialized once at start; a request only copies bytes, so the upstream's cost
//! per request is close to that of a static file server. The data is synthetic (no real PHI).

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{json, Value};

/// Observations per search page: the workload's `_count=50`.
pub const PAGE_SIZE: usize = 50;

/// Pre-serialized responses, keyed by patient id.
#[derive(Debug)]
pub struct Payloads {
    patients: HashMap<String, Bytes>,
    bundles: HashMap<String, Bytes>,
}

impl Payloads {
    /// Serializes a Patient and an Observation search page for each id in `patient_ids`.
    pub fn new<'a>(patient_ids: impl IntoIterator<Item = &'a str>) -> Self {
        let mut patients = HashMap::new();
        let mut bundles = HashMap::new();
        for id in patient_ids {
            patients.insert(id.to_owned(), serialize(&patient(id)));
            bundles.insert(id.to_owned(), serialize(&observation_bundle(id, PAGE_SIZE)));
        }
        Payloads { patients, bundles }
    }

    /// The Patient with this id, if it is one of the known ids.
    pub fn patient(&self, id: &str) -> Option<Bytes> {
        self.patients.get(id).cloned()
    }

    /// The Observation search page of this patient, if it is one of the known ids.
    pub fn observations(&self, patient_id: &str) -> Option<Bytes> {
        self.bundles.get(patient_id).cloned()
    }
}

fn serialize(value: &Value) -> Bytes {
    // Serializing a `Value` built by `json!` cannot fail (no non-string map keys).
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// A synthetic US Core-like Patient of about 1 KB.
pub fn patient(id: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "id": id,
        "meta": {"versionId": "3", "lastUpdated": "2026-11-20T08:15:00Z",
                 "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"]},
        "identifier": [{"use": "usual",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
            "system": "urn:oid:2.16.840.1.113883.19.5", "value": format!("MRN-{id}")}],
        "active": true,
        "name": [{"use": "official", "family": "Testperson", "given": ["Alex", "Jordan"]}],
        "telecom": [{"system": "phone", "value": "555-0100", "use": "home"},
                    {"system": "email", "value": "alex.testperson@example.org"}],
        "gender": "other",
        "birthDate": "1970-01-01",
        "address": [{"use": "home", "line": ["1 Synthetic Way", "Apt 2"], "city": "Springfield",
                     "state": "ZZ", "postalCode": "00000", "country": "US"}],
        "maritalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                                      "code": "U", "display": "unmarried"}]},
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en-US"}]},
                           "preferred": true}],
        "generalPractitioner": [{"reference": "Practitioner/prac-1", "display": "Dr. Synthetic"}],
        "managingOrganization": {"reference": "Organization/org-1", "display": "Synthetic Clinic"}
    })
}

/// A searchset Bundle with `count` vital-sign Observations of `patient_id` (~1 KB each).
pub fn observation_bundle(patient_id: &str, count: usize) -> Value {
    let entries: Vec<Value> = (0..count).map(|i| observation_entry(patient_id, i)).collect();
    json!({
        "resourceType": "Bundle",
        "id": format!("search-{patient_id}"),
        "type": "searchset",
        "total": count * 4,
        "link": [
            {"relation": "self", "url": format!("Observation?patient={patient_id}&_count={count}")},
            {"relation": "next",
             "url": format!("Observation?patient={patient_id}&_count={count}&_offset={count}")}
        ],
        "entry": entries
    })
}

fn observation_entry(patient_id: &str, i: usize) -> Value {
    let id = format!("obs-{patient_id}-{i}");
    json!({
        "fullUrl": format!("https://fhir-upstream.internal/fhir/Observation/{id}"),
        "resource": {
            "resourceType": "Observation",
            "id": id,
            "meta": {"versionId": "1", "lastUpdated": "2026-11-20T08:15:00Z",
                     "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-heart-rate"]},
            "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "vital-signs", "display": "Vital Signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}],
                     "text": "Heart rate"},
            "subject": {"reference": format!("Patient/{patient_id}")},
            "encounter": {"reference": format!("Encounter/enc-{patient_id}-{}", i / 10)},
            "effectiveDateTime": format!("2026-11-{:02}T{:02}:{:02}:00Z", 1 + i % 28, i % 24, i % 60),
            "issued": "2026-11-20T08:15:00Z",
            "performer": [{"reference": "Practitioner/prac-1", "display": "Dr. Synthetic"}],
            "valueQuantity": {"value": 60 + (i % 40), "unit": "beats/minute",
                              "system": "http://unitsofmeasure.org", "code": "/min"},
            "interpretation": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                            "code": "N", "display": "Normal"}]}],
            "note": [{"text": "Synthetic measurement for load testing; resting, seated, after five minutes."}]
        },
        "search": {"mode": "match"}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_sizes_match_the_workload_description() {
        let payloads = Payloads::new(["pat-1"]);
        let patient = payloads.patient("pat-1").unwrap_or_default();
        let bundle = payloads.observations("pat-1").unwrap_or_default();
        assert!((700..1500).contains(&patient.len()), "patient is {} bytes", patient.len());
        assert!((40_000..60_000).contains(&bundle.len()), "bundle is {} bytes", bundle.len());
        let parsed: Value = serde_json::from_slice(&bundle).unwrap_or_default();
        assert_eq!(parsed["entry"].as_array().map(Vec::len), Some(PAGE_SIZE));
        assert_eq!(parsed["entry"][0]["resource"]["subject"]["reference"], "Patient/pat-1");
    }

    #[test]
    fn unknown_patient_has_no_payload() {
        let payloads = Payloads::new(["pat-1"]);
        assert!(payloads.patient("pat-2").is_none());
        assert!(payloads.observations("pat-2").is_none());
    }
}
