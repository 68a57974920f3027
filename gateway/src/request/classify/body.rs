//! The parts of a JSON request body classification reads: a resource's top-level `subject` and
//! `patient` references, and a Bundle's entries. Everything else is skipped by serde without
//! being materialized (no `serde_json::Value` on the hot path).

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::patients::{reference, Findings};
use super::ClassifyError;

/// The references of a resource that name its patient.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ResourceRefs<'a> {
    #[serde(default, borrow)]
    subject: Option<OneOrMany<'a>>,
    #[serde(default, borrow)]
    patient: Option<OneOrMany<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany<'a> {
    Many(#[serde(borrow)] Vec<Reference<'a>>),
    One(#[serde(borrow)] Reference<'a>),
    /// A shape no R4 resource uses for these elements; carries no reference.
    Other(IgnoredAny),
}

#[derive(Debug, Deserialize)]
struct Reference<'a> {
    #[serde(default, borrow)]
    reference: Option<Cow<'a, str>>,
}

impl ResourceRefs<'_> {
    /// Adds the patients these references name. `patient` elements target Patient only;
    /// `subject` is multi-target, so only typed references count (see `patients` docs).
    pub(super) fn collect(&self, out: &mut Findings) -> Result<(), ClassifyError> {
        for (name, refs, patient_only) in [
            ("subject", &self.subject, false),
            ("patient", &self.patient, true),
        ] {
            let list: &[Reference<'_>] = match refs {
                Some(OneOrMany::One(r)) => std::slice::from_ref(r),
                Some(OneOrMany::Many(v)) => v,
                Some(OneOrMany::Other(_)) | None => &[],
            };
            for r in list {
                if let Some(value) = &r.reference {
                    reference(name, value, patient_only, out)?;
                }
            }
        }
        Ok(())
    }
}

/// A `batch` or `transaction` Bundle as posted to the base.
#[derive(Debug, Deserialize)]
pub(super) struct BundleIn<'a> {
    #[serde(rename = "resourceType", borrow)]
    pub(super) resource_type: Cow<'a, str>,
    #[serde(rename = "type", default, borrow)]
    pub(super) kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) entry: Vec<EntryIn<'a>>,
}

/// One Bundle entry: its request line and the refs of its resource.
#[derive(Debug, Deserialize)]
pub(super) struct EntryIn<'a> {
    #[serde(default, borrow)]
    pub(super) request: Option<EntryRequest<'a>>,
    #[serde(default, borrow)]
    pub(super) resource: Option<ResourceRefs<'a>>,
}

/// `Bundle.entry.request`.
#[derive(Debug, Deserialize)]
pub(super) struct EntryRequest<'a> {
    #[serde(borrow)]
    pub(super) method: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) url: Cow<'a, str>,
}

/// Whether a `Content-Type` is JSON (`application/fhir+json`, `application/json`, or the
/// pre-R4 `application/json+fhir`), ignoring parameters and case. No type at all counts as JSON:
/// the body is then parsed and a non-JSON body refused.
pub(super) fn is_json(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return true };
    let media = ct.split(';').next().unwrap_or("").trim();
    [
        "application/fhir+json",
        "application/json",
        "application/json+fhir",
    ]
    .iter()
    .any(|m| media.eq_ignore_ascii_case(m))
}

/// Whether a `Content-Type` is `application/x-www-form-urlencoded`.
pub(super) fn is_form(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}
