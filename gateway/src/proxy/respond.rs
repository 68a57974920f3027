//! Writing gateway-made responses (errors and stage-local responses) to the client.

use bytes::Bytes;
use http::{header, HeaderValue};
use phigate_plugin::{Denial, ErrorCode, LocalResponse};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::ctx::GatewayCtx;
use crate::cors::{CorsPolicy, PreflightRefusal};
use crate::error_response::error_body;

/// The `x-request-id` header name.
pub(super) const REQUEST_ID: &str = "x-request-id";

/// Writes the error response for a denial and records its code.
pub(super) async fn write_denial(session: &mut Session, ctx: &mut GatewayCtx, denial: &Denial) -> Result<()> {
    if let Some(cause) = &denial.cause {
        log::info!("request {} denied: {}: {cause}", ctx.request_id.as_str(), denial.code);
    }
    // The true code is recorded; the client gets the one the denial is answered with.
    ctx.error = Some(denial.code);
    if let Some(req) = ctx.req.as_mut() {
        req.error = Some(denial.code);
    }
    let shown = denial.shown();
    let (content_type, body) = error_body(shown, ctx.request_id.as_str(), ctx.fhir);
    let mut resp = ResponseHeader::build(shown.status(), Some(4 + denial.headers.len()))?;
    resp.insert_header(header::CONTENT_TYPE, content_type)?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(header::CACHE_CONTROL, "no-store")?;
    resp.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
    for (name, value) in &denial.headers {
        resp.append_header(name.clone(), value.clone())?;
    }
    if let Some(cors) = &ctx.cors {
        crate::cors::decorate(&mut resp, cors)?;
    }
    write(session, resp, body).await
}

/// Writes a stage's local response.
pub(super) async fn write_local(session: &mut Session, ctx: &GatewayCtx, local: LocalResponse) -> Result<()> {
    let mut resp = ResponseHeader::build(local.status, Some(3 + local.headers.len()))?;
    for (name, value) in local.headers {
        resp.append_header(name, value)?;
    }
    if resp.headers.get(header::CONTENT_TYPE).is_none() {
        resp.insert_header(header::CONTENT_TYPE, "application/json")?;
    }
    resp.insert_header(header::CONTENT_LENGTH, local.body.len())?;
    resp.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
    if let Some(cors) = &ctx.cors {
        crate::cors::decorate(&mut resp, cors)?;
    }
    write(session, resp, local.body).await
}

/// Answers a CORS preflight: `204` with the policy's allow headers, or the `cors_not_allowed`
/// refusal without any. Either way nothing is forwarded and no stage runs.
pub(super) async fn write_preflight(
    session: &mut Session,
    ctx: &mut GatewayCtx,
    policy: &CorsPolicy,
    judged: Result<HeaderValue, PreflightRefusal>,
) -> Result<()> {
    match judged {
        Ok(origin) => {
            let mut resp = crate::cors::preflight_response(policy, &origin)?;
            resp.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
            session.write_response_header(Box::new(resp), true).await
        }
        Err(refusal) => {
            let vary = HeaderValue::from_static(crate::cors::PREFLIGHT_VARY);
            let denial = Denial::new(ErrorCode::CorsNotAllowed)
                .with_header(header::VARY, vary)
                .with_cause(refusal.as_str());
            write_denial(session, ctx, &denial).await
        }
    }
}

async fn write(session: &mut Session, resp: ResponseHeader, body: Bytes) -> Result<()> {
    let head_only = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(resp), head_only).await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}
