//! The patients (and Bundle entries) a response actually contained, read from a body another
//! stage had buffered.
//!
//! A search names no patient in its request (`Observation?code=...`) yet may return hundreds:
//! counting only request-side patients would miss the widest exfiltration path. This reads
//! `Patient` resources and the `subject` / `patient` / `beneficiary` references of the returned
//! resources (top level, or each `Bundle.entry.resource`).

use std::fmt;

use phigate_plugin::{patient_of_reference, PatientId};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
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
///
/// A streaming pass (this runs on every buffered response, and searchsets are tens of KB): only
/// the few fields read are looked at, everything else is skipped without being built, and only
/// the patient ids found are allocated.
pub(crate) fn facts(body: &[u8]) -> ResponseFacts {
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    let Ok(top) = Resource { out: &mut out, top: true }.deserialize(&mut de) else {
        return ResponseFacts::default();
    };
    if de.end().is_err() {
        return ResponseFacts::default();
    }
    out.sort_unstable();
    out.dedup();
    let entries = (top.resource_type.as_deref() == Some("Bundle")).then_some(top.entries);
    ResponseFacts { patients: out, entries }
}

/// What one resource object said about itself.
#[derive(Default)]
struct Seen {
    resource_type: Option<String>,
    entries: u32,
}

/// A resource: `Patient` → its `id`; otherwise its `subject` / `patient` / `beneficiary`
/// references. At the top level it may be a Bundle whose `entry[].resource` are read too.
struct Resource<'a> {
    out: &'a mut Vec<PatientId>,
    top: bool,
}

impl<'de> DeserializeSeed<'de> for Resource<'_> {
    type Value = Seen;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Seen, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Resource<'_> {
    type Value = Seen;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a FHIR resource")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Seen, A::Error> {
        let mut seen = Seen::default();
        let (mut id, mut refs): (Option<String>, Vec<String>) = (None, Vec::new());
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match &*key {
                // These few fields are small: read them whole, and treat any shape other than the
                // expected one as absent (a malformed field must not hide the rest of the body).
                "resourceType" => seen.resource_type = text(map.next_value()?),
                "id" => id = text(map.next_value()?),
                "subject" | "patient" | "beneficiary" => {
                    if let Value::Object(mut reference) = map.next_value()? {
                        refs.extend(reference.remove("reference").and_then(text));
                    }
                }
                "entry" if self.top => seen.entries = map.next_value_seed(Entries { out: &mut *self.out })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if self.out.len() < MAX_PATIENTS {
            if seen.resource_type.as_deref() == Some("Patient") {
                self.out.extend(id.map(PatientId::new));
            } else {
                self.out.extend(refs.iter().filter_map(|r| patient_ref(r)).map(PatientId::from));
            }
        }
        Ok(seen)
    }
}

fn text(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// `Bundle.entry`: counts the entries and reads each `resource`.
struct Entries<'a> {
    out: &'a mut Vec<PatientId>,
}

impl<'de> DeserializeSeed<'de> for Entries<'_> {
    type Value = u32;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u32, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Entries<'_> {
    type Value = u32;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bundle entries")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u32, A::Error> {
        let mut n = 0u32;
        while seq.next_element_seed(Entry { out: &mut *self.out })?.is_some() {
            n = n.saturating_add(1);
        }
        Ok(n)
    }
}

/// One `Bundle.entry`: its `resource`, everything else skipped.
struct Entry<'a> {
    out: &'a mut Vec<PatientId>,
}

impl<'de> DeserializeSeed<'de> for Entry<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Entry<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Bundle entry")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "resource" {
                map.next_value_seed(Resource { out: &mut *self.out, top: false })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// The id of a patient reference (`phigate_plugin::patient_of_reference`: relative, absolute or
/// versioned); a conditional reference names nobody that could be counted.
fn patient_ref(reference: &str) -> Option<&str> {
    patient_of_reference(reference).filter(|id| !id.is_empty())
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
    fn versioned_references_count_and_conditional_ones_do_not() {
        let body = br#"{"resourceType":"Bundle","entry":[
            {"resource":{"resourceType":"Observation","subject":{"reference":"Patient/p4/_history/2"}}},
            {"resource":{"resourceType":"Observation","subject":{"reference":"Patient?identifier=x"}}}]}"#;
        let ids: Vec<String> = facts(body).patients.iter().map(|p| p.to_string()).collect();
        assert_eq!(ids, ["p4"]);
    }

    #[test]
    fn non_json_body_names_no_patient() {
        assert_eq!(facts(b"<Bundle/>"), ResponseFacts::default());
        assert_eq!(facts(br#"{"resourceType":"Patient","id":"p1"} trailing"#), ResponseFacts::default());
    }

    #[test]
    fn key_order_and_unknown_fields_do_not_matter() {
        let body =
            br#"{"id":"p9","meta":{"tag":[{"code":"x"}]},"resourceType":"Patient","name":[{"family":"F"}]}"#;
        let f = facts(body);
        assert_eq!(f.patients, [PatientId::from("p9")]);
        assert_eq!(f.entries, None, "not a Bundle");

        let body = br#"{"entry":[{"fullUrl":"u","resource":{"subject":{"display":"d","reference":"Patient/p4"},"resourceType":"Observation"},"search":{"mode":"match"}}],"total":1,"resourceType":"Bundle"}"#;
        let f = facts(body);
        assert_eq!((f.patients, f.entries), (vec![PatientId::from("p4")], Some(1)));
    }

    #[test]
    fn malformed_fields_are_skipped_not_fatal() {
        let body = br#"{"resourceType":"Bundle","entry":[
            {"resource":{"resourceType":"Observation","subject":null,"patient":"Patient/x","id":5}},
            {"resource":{"resourceType":"Patient","id":["p1"]}},
            {"resource":{"resourceType":"Observation","subject":{"reference":7},"patient":{"reference":"Patient/p6"}}}]}"#;
        let f = facts(body);
        assert_eq!((f.patients, f.entries), (vec![PatientId::from("p6")], Some(3)));
    }

    #[test]
    fn an_empty_searchset_has_zero_entries() {
        let f = facts(br#"{"resourceType":"Bundle","type":"searchset","total":0}"#);
        assert_eq!((f.patients.len(), f.entries), (0, Some(0)));
    }
}
