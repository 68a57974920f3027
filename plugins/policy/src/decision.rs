//! The decision document a policy returns, read strictly into [`Decision`], and the mapping of
//! deny reasons to stable error codes.

use std::sync::Arc;

use phigate_plugin::{Decision, ErrorCode, Obligations, PatientId, TenantId};
use regorus::Value;

use crate::error::EvalError;
use crate::revision::Revision;

/// Most reasons kept from one decision (a policy bug must not grow audit records without bound).
const MAX_REASONS: usize = 16;
/// Longest reason string kept.
const MAX_REASON_BYTES: usize = 64;

/// Deny reasons with their own public code, most specific first. Any other reason is
/// `policy_denied`.
const CODED_REASONS: &[(&str, ErrorCode)] = &[
    ("tenant_mismatch", ErrorCode::TenantMismatch),
    ("break_glass_not_permitted", ErrorCode::BreakGlassNotPermitted),
    ("scope_insufficient", ErrorCode::ScopeInsufficient),
    ("export_requires_async", ErrorCode::ExportRequiresAsync),
    ("patient_not_permitted", ErrorCode::PatientNotPermitted),
];

/// The code a deny decision answers with.
pub fn deny_code(reasons: &[String]) -> ErrorCode {
    CODED_REASONS
        .iter()
        .find(|(r, _)| reasons.iter().any(|x| x == r))
        .map_or(ErrorCode::PolicyDenied, |(_, c)| *c)
}

fn patients(v: &Value) -> Result<Option<Vec<PatientId>>, EvalError> {
    match v {
        Value::Null | Value::Undefined => Ok(None),
        Value::Array(a) => a
            .iter()
            .map(|p| match p {
                Value::String(s) => Ok(PatientId::new(s.clone())),
                _ => Err(EvalError::Output("patient ids must be strings")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => Err(EvalError::Output("patient lists must be arrays or null")),
    }
}

fn obligations(v: &Value, enforced: &Arc<[String]>) -> Result<Obligations, EvalError> {
    if matches!(v, Value::Undefined | Value::Null) {
        return Ok(Obligations::default());
    }
    if !matches!(v, Value::Object(_)) {
        return Err(EvalError::Output("obligations must be an object"));
    }
    let max_page_size = match &v["max_page_size"] {
        Value::Null | Value::Undefined => None,
        n => Some(n.as_u32().map_err(|_| EvalError::Output("max_page_size must be a u32"))?),
    };
    let permitted_tenant = match &v["permitted_tenant"] {
        Value::Null | Value::Undefined => None,
        Value::String(s) if !s.is_empty() => Some(TenantId::new(s.clone())),
        _ => return Err(EvalError::Output("permitted_tenant must be a non-empty string or null")),
    };
    let alert = match &v["alert"] {
        Value::Null | Value::Undefined => None,
        Value::String(s) if s.len() <= MAX_REASON_BYTES => Some(s.to_string()),
        _ => return Err(EvalError::Output("alert must be a short string")),
    };
    let permitted_patients = patients(&v["permitted_patients"])?;
    // Labels are withheld where responses are verified, and only there.
    let verified = permitted_patients.is_some() || permitted_tenant.is_some();
    let withheld_labels = if verified { withheld(&v["cleared_labels"], enforced)? } else { None };
    Ok(Obligations {
        narrow_patients: patients(&v["narrow_patients"])?,
        permitted_patients,
        permitted_tenant,
        max_page_size,
        break_glass: matches!(v["break_glass"], Value::Bool(true)),
        alert,
        withheld_labels,
    })
}

/// The enforced labels (the revision's `data.security_labels`) the policy's `cleared_labels` (a
/// set or array of label tokens, or absent: nothing cleared) does not clear; `None` when that
/// leaves none. Clearing nothing (the common case) shares the revision's list.
fn withheld(cleared: &Value, enforced: &Arc<[String]>) -> Result<Option<Arc<[String]>>, EvalError> {
    let tokens: Vec<&str> = match cleared {
        Value::Null | Value::Undefined => Vec::new(),
        Value::Set(s) => s.iter().map(token).collect::<Result<_, _>>()?,
        Value::Array(a) => a.iter().map(token).collect::<Result<_, _>>()?,
        _ => return Err(EvalError::Output("cleared_labels must be a set or array of strings")),
    };
    if enforced.is_empty() {
        return Ok(None);
    }
    if tokens.is_empty() {
        return Ok(Some(enforced.clone()));
    }
    let left: Vec<String> = enforced.iter().filter(|l| !tokens.contains(&l.as_str())).cloned().collect();
    Ok((!left.is_empty()).then(|| left.into()))
}

fn token(v: &Value) -> Result<&str, EvalError> {
    match v {
        Value::String(s) => Ok(s),
        _ => Err(EvalError::Output("cleared_labels must be a set or array of strings")),
    }
}

/// Reads a decision value made by `revision`. Anything malformed is an error (and so a
/// `policy_error` deny).
pub(crate) fn parse(v: &Value, revision: &Revision) -> Result<Decision, EvalError> {
    let allow = match &v["allow"] {
        Value::Bool(b) => *b,
        _ => return Err(EvalError::Output("`allow` must be a boolean")),
    };
    let reasons = match &v["reasons"] {
        Value::Undefined | Value::Null => Vec::new(),
        Value::Array(a) => a
            .iter()
            .take(MAX_REASONS)
            .map(|r| match r {
                Value::String(s) if s.len() <= MAX_REASON_BYTES => Ok(s.to_string()),
                _ => Err(EvalError::Output("reasons must be short strings")),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(EvalError::Output("`reasons` must be an array")),
    };
    Ok(Decision {
        allow,
        reasons,
        revision: revision.id.to_string(),
        obligations: obligations(&v["obligations"], &revision.security_labels)?,
        shadow: None,
    })
}
