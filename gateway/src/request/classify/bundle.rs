//! Batch and transaction Bundles: every entry is classified as a request of its own.
//!
//! A Bundle entry reaches the server exactly like a request would, so it gets the same hygiene
//! (its URL is normalized with the default limits) and the same classification. Entry URLs must
//! be relative to the base, as R4 requires for `Bundle.entry.request.url`; an absolute URL is
//! refused as ambiguous. A Bundle inside an entry is refused (`NestedBundle`).

use std::sync::LazyLock;

use http::Method;
use phigate_plugin::{FhirRequest, Interaction};

use super::body::{is_json, BundleIn};
use super::patients::Findings;
use super::{classify_at, ClassifyError, Payload};
use crate::request::{normalize_target, TargetLimits};

/// Bundle entry URLs are normalized with the default limits.
static ENTRY_LIMITS: LazyLock<TargetLimits> = LazyLock::new(TargetLimits::default);

/// A batch or transaction: each entry classified on its own, patients and unresolved unioned.
pub(super) fn classify_bundle(payload: Payload<'_>) -> Result<FhirRequest, ClassifyError> {
    let Payload::Raw { body, content_type } = payload else {
        return Err(ClassifyError::NestedBundle);
    };
    let body = body.ok_or(ClassifyError::BodyRequired)?;
    if !is_json(content_type) {
        return Err(ClassifyError::UnsupportedContentType);
    }
    let bundle: BundleIn<'_> = serde_json::from_slice(body).map_err(|_| ClassifyError::InvalidBody)?;
    if bundle.resource_type != "Bundle" {
        return Err(ClassifyError::InvalidBody);
    }
    let mut req = FhirRequest::new(match bundle.kind.as_deref() {
        Some("batch") => Interaction::Batch,
        Some("transaction") => Interaction::Transaction,
        _ => return Err(ClassifyError::BundleType),
    });
    let mut found = Findings::default();
    let mut target = String::new();
    for entry in &bundle.entry {
        let request = entry.request.as_ref().ok_or(ClassifyError::InvalidEntry)?;
        let method = entry_method(&request.method)?;
        target.clear();
        if !request.url.starts_with('/') {
            target.push('/');
        }
        target.push_str(&request.url);
        let t = normalize_target(target.as_bytes(), &ENTRY_LIMITS)?;
        let child = classify_at(&method, &t.path, &t.query, Payload::Entry(entry.resource.as_ref()))?;
        found.patients.extend(child.patients.iter().cloned());
        for u in &child.unresolved {
            found.unresolved(&u.name);
        }
        req.entries.push(child);
    }
    (req.patients, req.unresolved) = found.finish();
    Ok(req)
}

/// `Bundle.entry.request.method` (R4 `http-verb`).
fn entry_method(m: &str) -> Result<Method, ClassifyError> {
    Ok(match m {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "DELETE" => Method::DELETE,
        "PATCH" => Method::PATCH,
        _ => return Err(ClassifyError::InvalidEntry),
    })
}
