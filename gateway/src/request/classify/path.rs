//! The FHIR R4 REST URL grammar (http://hl7.org/fhir/R4/http.html), after the route's base.

use super::patients::is_fhir_id;
use super::ClassifyError;
use crate::request::resource_types::resource_type;

/// Types that define a compartment in R4 (`[type]/[id]/[type]` searches).
const COMPARTMENT_TYPES: &[&str] = &["Device", "Encounter", "Patient", "Practitioner", "RelatedPerson"];

/// What a FHIR path addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target<'p> {
    /// `[base]`
    Base,
    /// `[base]/metadata`
    Metadata,
    /// `[base]/_history`
    SystemHistory,
    /// `[base]/_search`
    SystemSearch,
    /// `[base]/$op`
    SystemOp(&'p str),
    /// `[type]`
    Type(&'static str),
    /// `[type]/_search`
    TypeSearch(&'static str),
    /// `[type]/_history`
    TypeHistory(&'static str),
    /// `[type]/$op`
    TypeOp(&'static str, &'p str),
    /// `[type]/[id]`
    Instance(&'static str, &'p str),
    /// `[type]/[id]/_history`
    InstanceHistory(&'static str, &'p str),
    /// `[type]/[id]/_history/[vid]`
    Version(&'static str, &'p str, &'p str),
    /// `[type]/[id]/$op` (`vid` set for `[type]/[id]/_history/[vid]/$op`)
    InstanceOp(&'static str, &'p str, Option<&'p str>, &'p str),
    /// `[compartment]/[id]/[type]` or `.../*`, with `/_search` when `search` is set
    Compartment {
        /// The compartment type (`Patient`).
        owner: &'static str,
        /// The compartment owner's id.
        id: &'p str,
        /// The searched type; `None` for `*`.
        target: Option<&'static str>,
        /// Whether the path ends in `/_search`.
        search: bool,
    },
}

/// Parses a FHIR path (`/Patient/123`, `/`, or empty for the base).
pub(super) fn parse(path: &str) -> Result<Target<'_>, ClassifyError> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let mut s = [""; 5];
    let mut n = 0;
    if !trimmed.is_empty() {
        for seg in trimmed.split('/') {
            if n == s.len() || seg.is_empty() {
                return Err(ClassifyError::InvalidPath);
            }
            s[n] = seg;
            n += 1;
        }
    }
    Ok(match &s[..n] {
        [] => Target::Base,
        // The server's capabilities: the CapabilityStatement, and SMART's discovery document
        // (SMART App Launch 2.0 §2.1, under the FHIR base).
        ["metadata"] | [".well-known", "smart-configuration"] => Target::Metadata,
        ["_history"] => Target::SystemHistory,
        ["_search"] => Target::SystemSearch,
        [op] if op.starts_with('$') => Target::SystemOp(op_name(op)?),
        [t] => Target::Type(ty(t)?),
        [t, "_search"] => Target::TypeSearch(ty(t)?),
        [t, "_history"] => Target::TypeHistory(ty(t)?),
        [t, op] if op.starts_with('$') => Target::TypeOp(ty(t)?, op_name(op)?),
        [t, i] => Target::Instance(ty(t)?, id(i)?),
        [t, i, "_history"] => Target::InstanceHistory(ty(t)?, id(i)?),
        [t, i, op] if op.starts_with('$') => Target::InstanceOp(ty(t)?, id(i)?, None, op_name(op)?),
        [t, i, "_history", v] => Target::Version(ty(t)?, id(i)?, id(v)?),
        [t, i, "_history", v, op] if op.starts_with('$') => {
            Target::InstanceOp(ty(t)?, id(i)?, Some(id(v)?), op_name(op)?)
        }
        [c, i, t] => compartment(c, i, t, false)?,
        [c, i, t, "_search"] => compartment(c, i, t, true)?,
        _ => return Err(ClassifyError::InvalidPath),
    })
}

fn compartment<'p>(c: &str, i: &'p str, t: &str, search: bool) -> Result<Target<'p>, ClassifyError> {
    let owner = ty(c)?;
    if !COMPARTMENT_TYPES.contains(&owner) {
        return Err(ClassifyError::InvalidPath);
    }
    let target = if t == "*" { None } else { Some(ty(t)?) };
    Ok(Target::Compartment { owner, id: id(i)?, target, search })
}

fn ty(s: &str) -> Result<&'static str, ClassifyError> {
    resource_type(s).ok_or(ClassifyError::UnknownResourceType)
}

fn id(s: &str) -> Result<&str, ClassifyError> {
    if is_fhir_id(s) {
        Ok(s)
    } else {
        Err(ClassifyError::InvalidId)
    }
}

/// An operation name without `$`: a FHIR `code`-like token (`everything`, `export`, `lastn`).
fn op_name(op: &str) -> Result<&str, ClassifyError> {
    let name = op.strip_prefix('$').unwrap_or("");
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(name)
    } else {
        Err(ClassifyError::InvalidPath)
    }
}
