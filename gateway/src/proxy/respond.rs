//! Writing gateway-made responses (errors and stage-local responses) to the client.

use std::time::Duration;

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
    linger(session).await;
    Ok(())
}

/// How long, and how many bytes, a refused request's unread body is read and discarded for.
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_BYTES: usize = 64 << 20;

/// Lingering close (as nginx does it): a response written before the request body was read
/// whole is followed by reading, and discarding, the rest of the body, bounded in time and bytes.
///
/// On HTTP/1.1 a connection closed with unread bytes in its receive buffer is reset, and a reset
/// can destroy a response the client has not read yet: a client that sends its whole body before
/// reading (most libraries do) would see a reset connection instead of the 401 or 413 written
/// for it. HTTP/2 ends just the stream, without this problem.
async fn linger(session: &mut Session) {
    let downstream = session.as_mut();
    if downstream.is_http2() || downstream.is_body_done() {
        return;
    }
    let drain = async {
        let mut read = 0usize;
        while read < LINGER_BYTES {
            match downstream.read_request_body().await {
                Ok(Some(chunk)) => read += chunk.len(),
                Ok(None) | Err(_) => break,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}
