//! Patients a write created. A backend service registering a patient (`POST Patient`), or a
//! transaction creating one with its records, is answered with the new Patient: an id no policy
//! data names yet, so the response check would refuse the answer to a write the server has
//! already committed (and a client retrying it would create the patient twice).
//!
//! The upstream says what it created: `201 Created` with a `Location` of `Patient/<id>` for a
//! create, and for each entry of a batch or transaction answer, `response.status` 201 with such a
//! `location`. Those ids are permitted in that one response, and nowhere else: a conditional create
//! that matched an existing patient answers 200 and is checked like any read, and reaching the new
//! patient later takes the policy data that places her in a tenant or a care team.

use std::borrow::Cow;

use http::{header, HeaderMap, StatusCode};
use phigate_plugin::{FhirRequest, Interaction, PatientId};
use serde::Deserialize;

/// The patients the upstream reported created by this request (kept in the request's extensions
/// between the response head and its body).
#[derive(Debug, Clone, Default)]
pub(crate) struct Created(pub(crate) Vec<PatientId>);

/// From the head of a create's answer: the Patient a `201 Created` locates.
pub(crate) fn from_head(
    fhir: Option<&FhirRequest>,
    status: StatusCode,
    headers: &HeaderMap,
) -> Option<Created> {
    let f = fhir?;
    if status != StatusCode::CREATED
        || f.interaction != Interaction::Create
        || f.resource_type != Some("Patient")
    {
        return None;
    }
    [header::LOCATION, header::CONTENT_LOCATION].iter().find_map(|name| {
        let located = headers.get(name)?.to_str().ok()?;
        created_patient(located).map(|id| Created(vec![id]))
    })
}

/// From the body of a batch or transaction answer: the Patients its `201` entries locate.
pub(crate) fn from_bundle(fhir: Option<&FhirRequest>, body: &[u8]) -> Option<Created> {
    if !fhir.is_some_and(|f| matches!(f.interaction, Interaction::Batch | Interaction::Transaction)) {
        return None;
    }
    let answer: Answer<'_> = serde_json::from_slice(body).ok()?;
    let ids: Vec<PatientId> = answer
        .entry
        .iter()
        .filter_map(|e| e.response.as_ref())
        .filter(|r| r.status.trim_start().starts_with("201"))
        .filter_map(|r| created_patient(r.location.as_deref()?))
        .collect();
    (!ids.is_empty()).then_some(Created(ids))
}

/// The id of `Patient/<id>[/_history/<v>]` (relative or absolute); nothing for another type, or
/// for a URL that only names a Patient on the way to something else.
fn created_patient(location: &str) -> Option<PatientId> {
    let path = location.split(['?', '#']).next()?.trim_end_matches('/');
    let resource = path.rsplit_once("/_history/").map_or(path, |(resource, _)| resource);
    let (rest, id) = resource.rsplit_once('/')?;
    let ty = rest.rsplit('/').next()?;
    (ty == "Patient" && !id.is_empty() && !id.starts_with('_')).then(|| PatientId::from(id))
}

#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(default, borrow)]
    entry: Vec<Entry<'a>>,
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(default, borrow)]
    response: Option<EntryResponse<'a>>,
}

#[derive(Deserialize)]
struct EntryResponse<'a> {
    #[serde(default, borrow)]
    status: Cow<'a, str>,
    #[serde(default, borrow)]
    location: Option<Cow<'a, str>>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn create_of(rt: &'static str) -> FhirRequest {
        let mut f = FhirRequest::new(Interaction::Create);
        f.resource_type = Some(rt);
        f
    }

    fn headers(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, value.parse().unwrap());
        h
    }

    fn ids(c: Option<Created>) -> Vec<String> {
        c.map(|c| c.0.iter().map(|p| p.as_str().to_owned()).collect()).unwrap_or_default()
    }

    #[test]
    fn a_201_patient_create_locates_the_new_patient() {
        let f = create_of("Patient");
        for located in
            ["Patient/new1/_history/1", "https://fhir.test/fhir/Patient/new1/_history/1", "Patient/new1"]
        {
            let h = headers(header::LOCATION, located);
            assert_eq!(ids(from_head(Some(&f), StatusCode::CREATED, &h)), ["new1"], "{located}");
        }
        let h = headers(header::CONTENT_LOCATION, "Patient/new2/_history/1");
        assert_eq!(ids(from_head(Some(&f), StatusCode::CREATED, &h)), ["new2"]);
    }

    #[test]
    fn nothing_else_counts_as_created() {
        let h = headers(header::LOCATION, "Patient/p1/_history/1");
        let f = create_of("Patient");
        assert!(from_head(Some(&f), StatusCode::OK, &h).is_none(), "200: a conditional create that matched");
        assert!(from_head(Some(&create_of("Observation")), StatusCode::CREATED, &h).is_none());
        let mut update = create_of("Patient");
        update.interaction = Interaction::Update;
        assert!(from_head(Some(&update), StatusCode::CREATED, &h).is_none());
        assert!(from_head(None, StatusCode::CREATED, &h).is_none());
        for odd in [
            "Observation/o1/_history/1",
            "Patient?identifier=x",
            "Patient/_history",
            "Patient/p1/Observation/o1",
        ] {
            let h = headers(header::LOCATION, odd);
            assert!(from_head(Some(&f), StatusCode::CREATED, &h).is_none(), "{odd}");
        }
    }

    #[test]
    fn a_transaction_answer_locates_the_patients_it_created() {
        let f = FhirRequest::new(Interaction::Transaction);
        let body = br#"{"resourceType":"Bundle","type":"transaction-response","entry":[
            {"response":{"status":"201 Created","location":"Patient/new1/_history/1"}},
            {"response":{"status":"201 Created","location":"Observation/o9/_history/1"}},
            {"response":{"status":"200 OK","location":"Patient/old/_history/4"}},
            {"response":{"status":"201","location":"https://fhir.test/Patient/new2/_history/1"}},
            {"resource":{"resourceType":"Patient","id":"x"}}]}"#;
        assert_eq!(ids(from_bundle(Some(&f), body)), ["new1", "new2"]);
        assert!(from_bundle(Some(&FhirRequest::new(Interaction::SearchType)), body).is_none());
        assert!(from_bundle(Some(&f), b"not json").is_none());
    }
}
