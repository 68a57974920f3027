//! Which patients a request names, and which params reach patients the gateway cannot name.
//!
//! # Rule for reference values
//! A param *names patients* when it is `patient`, `subject`, `_id` on a search that can return
//! Patients, or a Patient-compartment param of the searched type (R4 CompartmentDefinition).
//! Each comma-separated value is read as:
//! - `Patient/123`, `Patient/123/_history/2`, or an absolute URL ending in one of those: patient
//!   `123`.
//! - `Group/9` or another typed reference: not a patient.
//! - a bare id `123`: a patient only when the param is *Patient-only*: `patient` (every R4 search
//!   param named `patient` targets Patient alone), `_id` on a Patient-only search, or any param
//!   with the `:Patient` type modifier. On a multi-target param (`subject`, `performer`, ...)
//!   a server resolves a bare id against every target type, so the gateway cannot say whether a
//!   patient is meant: the param is flagged [`UnresolvedParam`] (fail closed for
//!   patient-restricted principals).
//! - `urn:uuid:` / `urn:oid:` and `#contained` references are bundle- or resource-local: they
//!   name resources being created in the same transaction, never an existing patient of the
//!   server, and are ignored (the entry creating that resource is classified on its own).
//! - an absolute URL that does not end in `Type/id`, or a conditional reference
//!   (`Patient?identifier=...`): flagged as unresolved.
//! - anything else (`Foo/1` with an unknown type, an id outside `[A-Za-z0-9-.]{1,64}`): 400.
//!
//! A modifier other than a resource type or `:missing` (`:identifier`, `:text`, ...) matches
//! patients by something other than their id: flagged as unresolved.

use phigate_plugin::{PatientId, QueryParam, UnresolvedParam};

use super::compartment::PatientCompartment;
use super::ClassifyError;
use crate::request::resource_types::resource_type;

/// Which resource types a search can return.
#[derive(Debug, Clone, Copy)]
pub(super) enum Scope<'a> {
    /// One type (type-level or compartment search, or an instance).
    Type(&'static str),
    /// The `_type` list of a system search.
    Types(&'a [&'static str]),
    /// Every type (system level without `_type`).
    Any,
}

/// How a param's values relate to patients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Values never name patients.
    None,
    /// A bare id is a Patient id.
    PatientOnly,
    /// Only typed references name patients; a bare id is unresolvable.
    MultiTarget,
}

/// Patients and unresolved params collected while classifying one request.
#[derive(Debug, Default)]
pub(super) struct Findings {
    pub(super) patients: Vec<PatientId>,
    pub(super) unresolved: Vec<UnresolvedParam>,
}

impl Findings {
    pub(super) fn patient(&mut self, id: &str) {
        self.patients.push(PatientId::from(id));
    }

    pub(super) fn unresolved(&mut self, name: &str) {
        if !self.unresolved.iter().any(|u| u.name == name) {
            self.unresolved.push(UnresolvedParam { name: name.to_owned() });
        }
    }

    /// Sorts and deduplicates the patients.
    pub(super) fn finish(mut self) -> (Vec<PatientId>, Vec<UnresolvedParam>) {
        self.patients.sort_unstable();
        self.patients.dedup();
        (self.patients, self.unresolved)
    }
}

/// Params the gateway cannot resolve to patients, whatever their value.
const ALWAYS_UNRESOLVED: &[&str] = &["_filter", "_query", "_contained"];

/// `_include` and `_revinclude` add the resources the matches reference, or that reference them.
/// A search of one patient-compartment type matches only the patients it names (or, for a
/// restricted principal, is narrowed to its own), so what it adds hangs off those patients'
/// records, and the response check holds every added entry to the permitted patients like the
/// matches. Anchored anywhere else (a system search, a non-compartment type such as
/// `Practitioner?_revinclude=Encounter:practitioner`), or walked on with `:iterate`, they reach
/// across the compartment to patients nobody named: unresolved.
const INCLUDES: &[&str] = &["_include", "_revinclude"];

/// Scans search params for patient ids and unresolvable params.
pub(super) fn scan_params<'q>(
    params: impl Iterator<Item = &'q QueryParam>,
    scope: Scope<'_>,
    compartment: &PatientCompartment,
    out: &mut Findings,
) -> Result<(), ClassifyError> {
    for p in params {
        let name = p.name.as_str();
        let (base, modifier) = match name.split_once(':') {
            Some((b, m)) => (b, Some(m)),
            None => (name, None),
        };
        // Chains (`subject:Patient.name`, `patient.name`) and reverse chains (`_has:`) select
        // patients by their attributes, not their ids.
        if name.contains('.') || base == "_has" || ALWAYS_UNRESOLVED.contains(&base) {
            out.unresolved(name);
            continue;
        }
        if INCLUDES.contains(&base) {
            let anchored = match scope {
                Scope::Type(t) => t == "Patient" || !compartment.params(t).is_empty(),
                Scope::Types(_) | Scope::Any => false,
            };
            if !anchored || modifier.is_some() {
                out.unresolved(name);
            }
            continue;
        }
        let role = match (role(base, scope, compartment), modifier) {
            (Role::None, _) => continue,
            (role, None) => role,
            (_, Some("Patient")) => Role::PatientOnly,
            (_, Some("missing")) => continue,
            (_, Some(m)) if resource_type(m).is_some() => continue,
            (_, Some(_)) => {
                out.unresolved(name);
                continue;
            }
        };
        for value in p.value.split(',') {
            reference(name, value, role == Role::PatientOnly, out)?;
        }
    }
    Ok(())
}

fn role(base: &str, scope: Scope<'_>, compartment: &PatientCompartment) -> Role {
    match base {
        "patient" => Role::PatientOnly,
        "subject" => Role::MultiTarget,
        "_id" => match scope {
            Scope::Type("Patient") => Role::PatientOnly,
            Scope::Types(["Patient"]) => Role::PatientOnly,
            Scope::Type(_) => Role::None,
            Scope::Types(ts) if !ts.contains(&"Patient") => Role::None,
            Scope::Types(_) | Scope::Any => Role::MultiTarget,
        },
        _ => {
            let listed = match scope {
                Scope::Type(t) => compartment.params(t).contains(&base),
                Scope::Types(ts) => ts.iter().any(|t| compartment.params(t).contains(&base)),
                Scope::Any => compartment.any_type_has(base),
            };
            if listed {
                Role::MultiTarget
            } else {
                Role::None
            }
        }
    }
}

/// Reads one reference value of param `name` (see the module docs for the rule).
pub(super) fn reference(
    name: &str,
    value: &str,
    patient_only: bool,
    out: &mut Findings,
) -> Result<(), ClassifyError> {
    let value = value.trim();
    if value.is_empty() || value.starts_with("urn:") || value.starts_with('#') {
        return Ok(());
    }
    if value.contains('?') {
        out.unresolved(name);
        return Ok(());
    }
    let (rel, absolute) = match value.split_once("://") {
        Some((_, rest)) => (rest, true),
        None => (value, false),
    };
    if !rel.contains('/') {
        if absolute {
            out.unresolved(name);
        } else if !is_fhir_id(value) {
            return Err(ClassifyError::InvalidReference);
        } else if patient_only {
            out.patient(value);
        } else {
            out.unresolved(name);
        }
        return Ok(());
    }
    match typed_tail(rel) {
        Some((ty, id)) if resource_type(ty).is_some() && is_fhir_id(id) => {
            if ty == "Patient" {
                out.patient(id);
            }
            Ok(())
        }
        // An absolute URL that is not `.../Type/id` (a canonical, another server's odd path).
        _ if absolute => {
            out.unresolved(name);
            Ok(())
        }
        _ => Err(ClassifyError::InvalidReference),
    }
}

/// The `Type` and `id` of `.../Type/id` or `.../Type/id/_history/vid`.
fn typed_tail(path: &str) -> Option<(&str, &str)> {
    let mut it = path.rsplit('/');
    let last = it.next()?;
    let before = it.next()?;
    if before == "_history" {
        let id = it.next()?;
        let ty = it.next()?;
        return is_fhir_id(last).then_some((ty, id));
    }
    Some((before, last))
}

/// FHIR R4 `id`: `[A-Za-z0-9\-\.]{1,64}`.
pub(super) fn is_fhir_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}
