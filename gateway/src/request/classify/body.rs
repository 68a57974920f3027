//! The parts of a JSON request body classification reads: every `reference` of a resource (with
//! the top-level element it sits under), and a Bundle's entries. Everything else is skipped by
//! serde without being materialized (no `serde_json::Value` on the hot path).
//!
//! Every reference counts, not only `subject` and `patient`: a resource joins a patient's
//! compartment through other elements too (`Observation.performer`, `Coverage.beneficiary`,
//! `Appointment.participant.actor`), and a write must not place data in a compartment the
//! principal may not touch.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::patients::{reference, Findings};
use super::{ClassifyError, UNRESOLVED_BODY};

/// The top-level element a reference was found under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Element {
    /// `subject`: multi-target (a bare id is unresolvable).
    Subject,
    /// `patient`: every R4 `patient` element targets Patient alone.
    Patient,
    /// Any other element.
    Other,
}

/// Every `reference` string of a resource, at any depth.
#[derive(Debug, Default)]
pub(super) struct ResourceRefs<'a> {
    refs: Vec<(Element, Cow<'a, str>)>,
}

impl<'de: 'a, 'a> Deserialize<'de> for ResourceRefs<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut refs = Vec::new();
        d.deserialize_map(Walk { element: None, is_ref: false, out: &mut refs })?;
        Ok(ResourceRefs { refs })
    }
}

/// One JSON value being walked: under which top-level element (`None`: the resource itself),
/// and whether it is the value of a `reference` key.
struct Walk<'r, 'a> {
    element: Option<Element>,
    is_ref: bool,
    out: &'r mut Vec<(Element, Cow<'a, str>)>,
}

impl<'de: 'a, 'a> DeserializeSeed<'de> for Walk<'_, 'a> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'a> Walk<'_, 'a> {
    fn string(self, value: Cow<'a, str>) {
        if self.is_ref {
            self.out.push((self.element.unwrap_or(Element::Other), value));
        }
    }
}

impl<'de: 'a, 'a> Visitor<'de> for Walk<'_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<(), E> {
        self.string(Cow::Borrowed(v));
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.string(Cow::Owned(v.to_owned()));
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let element = self.element;
        while seq.next_element_seed(Walk { element, is_ref: false, out: &mut *self.out })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Two parsers may keep different copies of a repeated key: refused rather than guessed
        // for the keys that decide which patients a resource names.
        let mut seen = [false; 3];
        while let Some(key) = map.next_key::<Key>()? {
            if let Some(i) = key.tracked() {
                if std::mem::replace(&mut seen[i], true) {
                    return Err(A::Error::custom("repeated key"));
                }
            }
            let element = self.element.or(Some(match key {
                Key::Subject => Element::Subject,
                Key::Patient => Element::Patient,
                Key::Reference | Key::Other => Element::Other,
            }));
            let is_ref = key == Key::Reference;
            map.next_value_seed(Walk { element, is_ref, out: &mut *self.out })?;
        }
        Ok(())
    }
}

/// An object key, compared without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Reference,
    Subject,
    Patient,
    Other,
}

impl Key {
    /// The index of a key checked for repeats.
    fn tracked(self) -> Option<usize> {
        match self {
            Key::Reference => Some(0),
            Key::Subject => Some(1),
            Key::Patient => Some(2),
            Key::Other => None,
        }
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "reference" => Key::Reference,
                    "subject" => Key::Subject,
                    "patient" => Key::Patient,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl ResourceRefs<'_> {
    /// Adds the patients these references name. `patient` elements target Patient only;
    /// `subject` is multi-target, so only typed references count (see `patients` docs); a bare
    /// id elsewhere is flagged as an unresolved body.
    pub(super) fn collect(&self, out: &mut Findings) -> Result<(), ClassifyError> {
        for (element, value) in &self.refs {
            let (name, patient_only) = match element {
                Element::Subject => ("subject", false),
                Element::Patient => ("patient", true),
                Element::Other => (UNRESOLVED_BODY, false),
            };
            reference(name, value, patient_only, out)?;
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
    ["application/fhir+json", "application/json", "application/json+fhir"]
        .iter()
        .any(|m| media.eq_ignore_ascii_case(m))
}

/// Whether a `Content-Type` is `application/json-patch+json` (RFC 6902).
pub(super) fn is_json_patch(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json-patch+json"))
}

/// One JSON Patch operation, as far as classification needs it.
#[derive(Deserialize)]
struct PatchOp {
    op: String,
    path: String,
    #[serde(default)]
    value: Option<serde_json::Value>,
}

/// The references a JSON Patch (RFC 6902) writes: in the `value` of each `add`, `replace` and
/// `test`, under the top-level element its `path` starts at (a string written at `.../reference`
/// is itself one). `remove`, `move` and `copy` write nothing new: they only drop or rearrange what
/// the stored record already holds, which the pre-read checks (see the policy stage). An unknown
/// operation, or an `add` without a value, is not a patch the gateway can judge: invalid.
pub(super) fn patch_refs(body: &[u8]) -> Result<ResourceRefs<'static>, ClassifyError> {
    let ops: Vec<PatchOp> = serde_json::from_slice(body).map_err(|_| ClassifyError::InvalidBody)?;
    let mut refs = Vec::new();
    for op in ops {
        match op.op.as_str() {
            "remove" | "move" | "copy" => continue,
            "add" | "replace" | "test" => {}
            _ => return Err(ClassifyError::InvalidBody),
        }
        let value = op.value.ok_or(ClassifyError::InvalidBody)?;
        let mut segments = op.path.split('/').skip(1);
        let first = segments.next();
        let element = match first {
            None => None,
            Some("subject") => Some(Element::Subject),
            Some("patient") => Some(Element::Patient),
            Some(_) => Some(Element::Other),
        };
        if let (true, serde_json::Value::String(s)) = (op.path.ends_with("/reference"), &value) {
            refs.push((element.unwrap_or(Element::Other), Cow::Owned(s.clone())));
            continue;
        }
        let walk = Walk { element, is_ref: false, out: &mut refs };
        serde::Deserializer::deserialize_any(value, walk).map_err(|_| ClassifyError::InvalidBody)?;
    }
    Ok(ResourceRefs { refs })
}

/// The references a FHIRPath Patch (a `Parameters` resource of `operation`s, FHIR R4 §3.1.0.6.5)
/// writes: in the `value` of each `add`, `insert` and `replace`, under the top-level element the
/// operation's `path` (or, for an `add` to the resource itself, its `name`) names. A reference is
/// a `reference` member (`valueReference`) or a part named `reference` with a string value (a
/// complex value written as parts). `delete` and `move` write nothing new (see [`patch_refs`]).
/// Another shape, or another operation type, is invalid.
pub(super) fn fhirpath_patch_refs(body: &[u8]) -> Result<ResourceRefs<'static>, ClassifyError> {
    use serde_json::Value;
    let invalid = || ClassifyError::InvalidBody;
    let doc: Value = serde_json::from_slice(body).map_err(|_| invalid())?;
    if doc.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(invalid());
    }
    // The parts of an operation with this name, and the string in one's `key`.
    fn parts<'v>(op: &'v Value, name: &'v str) -> impl Iterator<Item = &'v Value> {
        let all = op.get("part").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        all.iter().filter(move |p| p.get("name").and_then(Value::as_str) == Some(name))
    }
    fn string<'v>(op: &'v Value, name: &'v str, key: &str) -> Option<&'v str> {
        parts(op, name).next()?.get(key)?.as_str()
    }
    let mut refs = Vec::new();
    for op in doc.get("parameter").and_then(Value::as_array).into_iter().flatten() {
        if op.get("name").and_then(Value::as_str) != Some("operation") {
            return Err(invalid());
        }
        let kind = string(op, "type", "valueCode").ok_or_else(invalid)?;
        match kind {
            "delete" | "move" => continue,
            "add" | "insert" | "replace" => {}
            _ => return Err(invalid()),
        }
        let path = string(op, "path", "valueString").ok_or_else(invalid)?;
        // `Observation.subject`, `Observation.performer[0]`, or the resource itself (`add` names
        // the element it adds).
        let top = match path.split_once('.') {
            Some((_, rest)) => rest.split(['.', '[', '(']).next().unwrap_or(""),
            None => string(op, "name", "valueString").unwrap_or_default(),
        };
        let element = match top {
            "subject" => Element::Subject,
            "patient" => Element::Patient,
            _ => Element::Other,
        };
        // A string written at `....reference` is itself a reference.
        let at_reference = path.rsplit('.').next() == Some("reference");
        for value in parts(op, "value") {
            fhirpath_value_refs(value, element, at_reference, &mut refs).map_err(|_| invalid())?;
        }
    }
    Ok(ResourceRefs { refs })
}

/// The references in one `value` part of a FHIRPath Patch operation (see above).
fn fhirpath_value_refs(
    value: &serde_json::Value,
    element: Element,
    is_reference: bool,
    out: &mut Vec<(Element, Cow<'static, str>)>,
) -> Result<(), serde_json::Error> {
    use serde_json::Value;
    if let Value::Object(map) = value {
        if is_reference || map.get("name").and_then(Value::as_str) == Some("reference") {
            for (key, v) in map {
                if let (true, Value::String(s)) = (key.starts_with("value"), v) {
                    out.push((element, Cow::Owned(s.clone())));
                }
            }
        }
        for (key, v) in map {
            if key == "part" {
                for part in v.as_array().into_iter().flatten() {
                    fhirpath_value_refs(part, element, false, out)?;
                }
            } else if key.starts_with("value") {
                let walk = Walk { element: Some(element), is_ref: false, out: &mut *out };
                serde::Deserializer::deserialize_any(v.clone(), walk)?;
            }
        }
    }
    Ok(())
}

/// Whether a `Content-Type` is `application/x-www-form-urlencoded`.
pub(super) fn is_form(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}
