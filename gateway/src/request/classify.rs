//! FHIR R4 request classification: method + path + params (+ body) → [`FhirRequest`].
//!
//! Policy decides on this model, so it must name every patient a request reaches or say that it
//! cannot (HIPAA minimum necessary, 45 CFR 164.502(b): a principal restricted to some patients
//! must not reach others through a search the gateway misread). The rule for reference values
//! is documented in the `patients` submodule: typed references to `Patient` count, other typed
//! references do not, bare ids count only on Patient-only params and are otherwise flagged
//! unresolved, `urn:uuid:` references are bundle-local and ignored.
//!
//! Bodies: `POST _search` form bodies are parsed like a query. For create and update, every
//! `reference` in a JSON body counts, at any depth (`subject`, `performer`, `beneficiary`, an
//! extension's `valueReference`, contained resources): any of them can place the written resource
//! in a patient's compartment. Under `patient` a bare id is a Patient id; under `subject` or
//! elsewhere it is unresolved. A JSON Patch or a FHIRPath Patch counts the references its values
//! write. A body the gateway does not interpret (XML, an operation's `Parameters`) is flagged
//! with the unresolved name [`UNRESOLVED_BODY`]. A batch or
//! transaction needs its JSON Bundle: each entry is classified like a request of its own, and the
//! entries' patients and unresolved names are unioned into the Bundle's.

mod body;
mod bundle;
mod compartment;
mod error;
mod path;
mod patients;

use std::borrow::Cow;

use http::Method;
use phigate_plugin::{Compartment, FhirRequest, Interaction, QueryParam};

pub use self::error::ClassifyError;

use self::body::{fhirpath_patch_refs, is_form, is_json, is_json_patch, patch_refs, ResourceRefs};
use self::bundle::classify_bundle;
use self::compartment::PatientCompartment;
use self::path::Target;
use self::patients::{scan_params, Findings, Scope};
use super::normalize::{check_singletons, parse_query, DEFAULT_SINGLETON_PARAMS};
use super::resource_types::resource_type;

/// The unresolved name flagged when a request carries a body that may name patients but that the
/// gateway does not interpret (not a request parameter name: it cannot collide with one).
pub const UNRESOLVED_BODY: &str = "(body)";

/// Parses the embedded Patient CompartmentDefinition now rather than on the first request; call
/// at startup so a corrupt build fails there.
pub fn preload() -> Result<(), ClassifyError> {
    PatientCompartment::get().map(|_| ()).ok_or(ClassifyError::CompartmentUnavailable)
}

/// Classifies a FHIR R4 request. `fhir_path` is the path after the route's FHIR base
/// (`/Patient/123/$everything`; `/` or empty for the base); `query` the normalized params;
/// `body` the buffered body, when the gateway read it.
pub fn classify(
    method: &Method,
    fhir_path: &str,
    query: &[QueryParam],
    body: Option<&[u8]>,
    content_type: Option<&str>,
) -> Result<FhirRequest, ClassifyError> {
    classify_at(method, fhir_path, query, Payload::Raw { body, content_type })
}

/// A request body: as received, or already parsed (a Bundle entry's resource).
#[derive(Clone, Copy)]
enum Payload<'a> {
    Raw { body: Option<&'a [u8]>, content_type: Option<&'a str> },
    Entry(Option<&'a ResourceRefs<'a>>),
}

impl Payload<'_> {
    fn raw_body(&self) -> Option<&[u8]> {
        match self {
            Payload::Raw { body, .. } => body.filter(|b| !b.is_empty()),
            Payload::Entry(_) => None,
        }
    }
}

fn classify_at(
    method: &Method,
    fhir_path: &str,
    query: &[QueryParam],
    payload: Payload<'_>,
) -> Result<FhirRequest, ClassifyError> {
    let compartment = PatientCompartment::get().ok_or(ClassifyError::CompartmentUnavailable)?;
    let target = path::parse(fhir_path)?;
    if target == Target::Base && method == Method::POST {
        return classify_bundle(payload);
    }
    let mut req = shape(method, target)?;
    // HAPI's paging links name the stored search on the base: `[base]?_getpages=<id>&...`.
    req.continuation = target == Target::Base
        && req.interaction == Interaction::SearchSystem
        && query.iter().any(|q| q.name == "_getpages");
    let params = search_params(target, query, payload)?;
    req.count = count(&params)?;
    // `_type` narrows a system-level request; compartment `*` searches span every type.
    let types = match (req.resource_type, &req.compartment) {
        (None, None) => type_list(&params)?,
        _ => Vec::new(),
    };
    let scope = match req.resource_type {
        Some(t) => Scope::Type(t),
        None if types.is_empty() => Scope::Any,
        None => Scope::Types(&types),
    };
    let mut found = Findings::default();
    scan_params(params.iter(), scope, compartment, &mut found)?;
    read_body(&req, payload, &mut found)?;
    path_patients(target, &mut found);
    (req.patients, req.unresolved) = found.finish();
    Ok(req)
}

/// The interaction and addressed resource of a path under a method.
fn shape(method: &Method, target: Target<'_>) -> Result<FhirRequest, ClassifyError> {
    use Interaction as I;
    let read = method == Method::GET || method == Method::HEAD;
    let read_or_post = read || method == Method::POST;
    let interaction = match target {
        Target::Base if read => I::SearchSystem,
        Target::Metadata if read => I::Capabilities,
        Target::SystemHistory | Target::TypeHistory(_) | Target::InstanceHistory(..) if read => I::History,
        Target::SystemSearch if read_or_post => I::SearchSystem,
        Target::TypeSearch(_) if read_or_post => I::SearchType,
        Target::SystemOp(_) | Target::TypeOp(..) | Target::InstanceOp(..) if read_or_post => I::Operation,
        Target::Compartment { search, .. } if read || (search && method == Method::POST) => {
            I::SearchCompartment
        }
        Target::Version(..) if read => I::Vread,
        Target::Type(_) if read => I::SearchType,
        Target::Type(_) if method == Method::POST => I::Create,
        Target::Instance(..) if read => I::Read,
        // Without an id these are the conditional forms (`PUT Patient?identifier=...`).
        Target::Type(_) | Target::Instance(..) if method == Method::PUT => I::Update,
        Target::Type(_) | Target::Instance(..) if method == Method::PATCH => I::Patch,
        Target::Type(_) | Target::Instance(..) if method == Method::DELETE => I::Delete,
        _ => return Err(ClassifyError::MethodNotAllowed),
    };
    let mut req = FhirRequest::new(interaction);
    match target {
        Target::SystemOp(op) => req.operation = Some(op.to_owned()),
        Target::Type(t) | Target::TypeSearch(t) | Target::TypeHistory(t) => req.resource_type = Some(t),
        Target::TypeOp(t, op) => {
            req.resource_type = Some(t);
            req.operation = Some(op.to_owned());
        }
        Target::Instance(t, id) | Target::InstanceHistory(t, id) => {
            req.resource_type = Some(t);
            req.id = Some(id.to_owned());
        }
        Target::Version(t, id, vid) => {
            req.resource_type = Some(t);
            req.id = Some(id.to_owned());
            req.version_id = Some(vid.to_owned());
        }
        Target::InstanceOp(t, id, vid, op) => {
            req.resource_type = Some(t);
            req.id = Some(id.to_owned());
            req.version_id = vid.map(str::to_owned);
            req.operation = Some(op.to_owned());
        }
        Target::Compartment { owner, id, target, .. } => {
            req.resource_type = target;
            req.compartment = Some(Compartment { resource_type: owner, id: id.to_owned() });
        }
        Target::Base | Target::Metadata | Target::SystemHistory | Target::SystemSearch => {}
    }
    Ok(req)
}

/// The patient the path itself names (`Patient/X`, `Patient/X/...`).
fn path_patients(target: Target<'_>, found: &mut Findings) {
    match target {
        Target::Instance("Patient", id)
        | Target::InstanceHistory("Patient", id)
        | Target::Version("Patient", id, _)
        | Target::InstanceOp("Patient", id, ..)
        | Target::Compartment { owner: "Patient", id, .. } => found.patient(id),
        _ => {}
    }
}

/// Patients named by a create or update body; bodies the gateway cannot read are flagged.
fn read_body(req: &FhirRequest, payload: Payload<'_>, found: &mut Findings) -> Result<(), ClassifyError> {
    let creates = matches!(req.interaction, Interaction::Create | Interaction::Update);
    match payload {
        Payload::Entry(Some(refs)) if creates => refs.collect(found),
        Payload::Entry(Some(_)) if !is_search(req.interaction) => {
            found.unresolved(UNRESOLVED_BODY);
            Ok(())
        }
        Payload::Entry(_) => Ok(()),
        Payload::Raw { content_type, .. } => {
            let Some(body) = payload.raw_body() else {
                return Ok(());
            };
            if creates && is_json(content_type) {
                let refs: ResourceRefs<'_> =
                    serde_json::from_slice(body).map_err(|_| ClassifyError::InvalidBody)?;
                refs.collect(found)
            } else if req.interaction == Interaction::Patch && is_json_patch(content_type) {
                patch_refs(body)?.collect(found)
            } else if req.interaction == Interaction::Patch && is_json(content_type) {
                fhirpath_patch_refs(body)?.collect(found)
            } else {
                if !is_search(req.interaction) {
                    found.unresolved(UNRESOLVED_BODY);
                }
                Ok(())
            }
        }
    }
}

fn is_search(i: Interaction) -> bool {
    matches!(i, Interaction::SearchSystem | Interaction::SearchType | Interaction::SearchCompartment)
}

/// The query params, plus the form body params of a `POST .../_search` (singletons checked
/// across both, so a `_count` in the body cannot shadow the one in the URL).
fn search_params<'q>(
    target: Target<'_>,
    query: &'q [QueryParam],
    payload: Payload<'_>,
) -> Result<Cow<'q, [QueryParam]>, ClassifyError> {
    let form = match target {
        Target::SystemSearch | Target::TypeSearch(_) | Target::Compartment { search: true, .. } => {
            read_form(payload)?
        }
        _ => return Ok(Cow::Borrowed(query)),
    };
    if form.is_empty() {
        return Ok(Cow::Borrowed(query));
    }
    let combined = [query, &form[..]].concat();
    check_singletons(&combined, DEFAULT_SINGLETON_PARAMS)?;
    Ok(Cow::Owned(combined))
}

/// The params of a `POST _search` form body.
fn read_form(payload: Payload<'_>) -> Result<Vec<QueryParam>, ClassifyError> {
    let mut form = Vec::new();
    if let Some(body) = payload.raw_body() {
        let Payload::Raw { content_type, .. } = payload else {
            return Ok(form);
        };
        if !is_form(content_type) {
            return Err(ClassifyError::UnsupportedContentType);
        }
        parse_query(body, &mut form)?;
    }
    Ok(form)
}

/// `_count` as a u32: digits only (no sign, no spaces).
fn count(params: &[QueryParam]) -> Result<Option<u32>, ClassifyError> {
    let Some(p) = params.iter().find(|p| p.name == "_count") else {
        return Ok(None);
    };
    if p.value.is_empty() || !p.value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ClassifyError::InvalidCount);
    }
    p.value.parse().map(Some).map_err(|_| ClassifyError::InvalidCount)
}

/// The `_type` list of a system-level request (every `_type` param, comma-separated).
fn type_list(params: &[QueryParam]) -> Result<Vec<&'static str>, ClassifyError> {
    let mut types = Vec::new();
    for p in params.iter().filter(|p| p.name == "_type") {
        for t in p.value.split(',') {
            types.push(resource_type(t.trim()).ok_or(ClassifyError::UnknownResourceType)?);
        }
    }
    Ok(types)
}
