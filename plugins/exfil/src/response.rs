//! The patients (and Bundle entries) a response actually contained, read from a body another
//! stage had buffered.
//!
//! A search names no patient in its request (`Observation?code=...`) yet may return hundreds:
//! counting only request-side patients would miss the widest exfiltration path. This reads
//! `Patient` resources and the `subject` / `patient` / `beneficiary` references of the returned
//! resources (top level, or each `Bundle.entry.resource`).

use phigate_plugin::PatientId;
use serde_json::Value;

/// Most patients taken from one response (more cannot change a window capped at its threshold).
const MAX_PATIENTS: usize = 10_000;

/// What a buffered response contained, kept in the request's extensions for `on_complete`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ResponseFacts {
    /// Patients named, sorted and without repeats.
    pub(crate) patients: Vec<PatientId>,
    /// `Bundle.entry` count, when the body is a Bundle.
    pub(crate) entries: Option<u32>,
}

/// Reads a FHIR JSON response body; nothing for a body that is not JSON.
pub(crate) fn facts(body: &[u8]) -> ResponseFacts {
    let Ok(doc) = serde_json::from_slice::<Value>(body) else {
        return ResponseFacts::default();
    };
    let mut out = Vec::new();
    let mut entries = None;
    if doc["resourceType"] == "Bundle" {
        let list = doc["entry"].as_array().map_or(&[][..], Vec::as_slice);
        entries = Some(u32::try_from(list.len()).unwrap_or(u32::MAX));
        for entry in list {
            if out.len() >= MAX_PATIENTS {
                break;
            }
            resource(&entry["resource"], &mut out);
        }
    } else {
        resource(&doc, &mut out);
    }
    out.sort_unstable();
    out.dedup();
    ResponseFacts { patients: out, entries }
}

fn resource(r: &Value, out: &mut Vec<PatientId>) {
    if r["resourceType"] == "Patient" {
        if let Some(id) = r["id"].as_str() {
            out.push(PatientId::from(id));
        }
        return;
    }
    for field in ["subject", "patient", "beneficiary"] {
        if let Some(id) = r[field]["reference"].as_str().and_then(patient_ref) {
            out.push(PatientId::from(id));
        }
    }
}

/// The id of a `Patient/X` reference, relative or absolute (`https://host/fhir/Patient/X`).
fn patient_ref(reference: &str) -> Option<&str> {
    let (prefix, id) = reference.rsplit_once('/')?;
    let is_patient = prefix == "Patient" || prefix.ends_with("/Patient");
    (is_patient && !id.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_patients_come_from_patient_resources_and_references() {
        let body = br#"{"resourceType":"Bundle","entry":[
            {"resource":{"resourceType":"Patient","id":"p1"}},
            {"resource":{"resourceType":"Observation","subject":{"reference":"Patient/p2"}}},
            {"resource":{"resourceType":"Claim","patient":{"reference":"https://h/fhir/Patient/p3"}}},
            {"resource":{"resourceType":"Observation","subject":{"reference":"Group/g1"}}},
            {"resource":{"resourceType":"Observation","subject":{"reference":"Patient/p2"}}}]}"#;
        let f = facts(body);
        let ids: Vec<String> = f.patients.iter().map(|p| p.to_string()).collect();
        assert_eq!(ids, ["p1", "p2", "p3"]);
        assert_eq!(f.entries, Some(5));
    }

    #[test]
    fn non_json_body_names_no_patient() {
        assert_eq!(facts(b"<Bundle/>"), ResponseFacts::default());
    }
}
