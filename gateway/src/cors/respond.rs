//! The CORS headers on response heads: the preflight answer, and the decoration of every other
//! response on a CORS route. Values are the policy's precomputed ones (cheap `Bytes` clones).

use http::{header, HeaderValue, StatusCode};
use pingora::http::ResponseHeader;
use pingora::Result;

use super::{CorsPolicy, CorsState};

/// What a preflight answer depends on besides the URL: shared caches must not serve one
/// origin's (or one method's) answer to another.
pub const PREFLIGHT_VARY: &str = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// The `204 No Content` answer to an allowed preflight from `origin`.
///
/// # Errors
/// Only if pingora refuses a header (it does not for these values).
pub fn preflight_response(policy: &CorsPolicy, origin: &HeaderValue) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(StatusCode::NO_CONTENT, Some(8))?;
    resp.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin(policy, origin))?;
    resp.insert_header(header::ACCESS_CONTROL_ALLOW_METHODS, policy.allow_methods.clone())?;
    if let Some(headers) = &policy.allow_headers {
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_HEADERS, headers.clone())?;
    }
    resp.insert_header(header::ACCESS_CONTROL_MAX_AGE, policy.max_age.clone())?;
    if policy.credentials {
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"))?;
    }
    resp.insert_header(header::VARY, HeaderValue::from_static(PREFLIGHT_VARY))?;
    Ok(resp)
}

/// Puts the route's policy, and only it, on a response: any `Access-Control-*` header already
/// there (the upstream's) is removed, so an upstream cannot widen the policy; `Vary: Origin` is
/// added; an allowed origin gets `Access-Control-Allow-Origin`, `-Expose-Headers` and, when
/// configured, `-Allow-Credentials`.
///
/// # Errors
/// Only if pingora refuses a header (it does not for these values).
pub fn decorate(resp: &mut ResponseHeader, state: &CorsState) -> Result<()> {
    // No allocation when the upstream sent none (the usual case).
    while let Some(name) = resp.headers.keys().find(|n| n.as_str().starts_with("access-control-")).cloned() {
        resp.remove_header(&name);
    }
    resp.append_header(header::VARY, HeaderValue::from_static("Origin"))?;
    let Some(origin) = &state.origin else { return Ok(()) };
    let policy = &state.policy;
    resp.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin(policy, origin))?;
    if let Some(expose) = &policy.expose_headers {
        resp.insert_header(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone())?;
    }
    if policy.credentials {
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"))?;
    }
    Ok(())
}

/// `*` for the any-origin policy, else the request's own (allowed) origin.
fn allow_origin(policy: &CorsPolicy, origin: &HeaderValue) -> HeaderValue {
    match policy.origins {
        None => HeaderValue::from_static("*"),
        Some(_) => origin.clone(),
    }
}
