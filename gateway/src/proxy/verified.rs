//! Verified fetch: for requests whose response must be inspected before any byte of it reaches
//! the client (a stage set `ctx.response.buffer_body` in `on_request`, for example to check that
//! a `GET /Observation/123` belongs to a permitted patient), the gateway fetches the whole
//! upstream response itself, through pingora's connector (same pool, same mTLS peer; see
//! [`super::exchange`]), runs the stages' response checks, and only then answers: with the
//! upstream response, or with a denial whose status replaces the upstream's. Pingora's streaming
//! path writes the response head as soon as it arrives, so it cannot do this.

use bytes::Bytes;
use http::header;
use phigate_plugin::{Denial, ErrorCode, ResponseHead};
use pingora::connectors::http::Connector;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::ctx::GatewayCtx;
use super::respond::{write_denial, REQUEST_ID};
use crate::runtime::Runtime;

/// Response headers that describe one hop only and must not be copied to the client.
const HOP_BY_HOP: [&str; 7] =
    ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"];

/// Fetches, verifies and answers. Returns `Err` only when writing to the client failed.
pub(super) async fn fetch_verified(
    rt: &Runtime,
    connector: &Connector,
    session: &mut Session,
    ctx: &mut GatewayCtx,
) -> pingora::Result<()> {
    match fetch(rt, connector, session, ctx).await {
        Ok((resp, body)) => match verify(rt, ctx, &resp, body) {
            Ok(body) => {
                let body = match super::location::map_bundle_links(rt, ctx, &body) {
                    Some(mapped) => Bytes::from(mapped),
                    None => body,
                };
                write_upstream(rt, session, ctx, resp, body).await
            }
            Err(denial) => write_denial(session, ctx, &denial).await,
        },
        Err(denial) => write_denial(session, ctx, &denial).await,
    }
}

async fn fetch(
    rt: &Runtime,
    connector: &Connector,
    session: &mut Session,
    ctx: &mut GatewayCtx,
) -> Result<(ResponseHeader, Bytes), Denial> {
    let upstream = rt.upstreams.get(ctx.upstream).ok_or_else(|| Denial::new(ErrorCode::InternalError))?;
    let mut head = session.req_header().clone();
    let authority = session.req_header().uri.authority().map(|a| a.as_str().to_owned());
    super::forward::prepare(rt, authority.as_deref(), &mut head, ctx)
        .map_err(|e| Denial::new(ErrorCode::InternalError).with_cause(e.etype().as_str().to_owned()))?;
    let body = ctx.req.as_ref().and_then(|r| r.request.body.clone());
    let answer = super::exchange::exchange(rt, connector, upstream, head, body).await;
    ctx.upstream_answered();
    let answer = answer?;
    if let (Some(req), Some(sent)) = (ctx.req.as_mut(), ctx.upstream_sent_at) {
        req.response.upstream_latency = Some(sent.elapsed());
    }
    let (mut resp, body) = answer;
    super::location::map_to_route(rt, ctx, &mut resp);
    Ok((resp, body))
}

/// The stages' checks of the whole response; the body to send (the upstream's, or what the
/// stages left of it).
fn verify(rt: &Runtime, ctx: &mut GatewayCtx, resp: &ResponseHeader, body: Bytes) -> Result<Bytes, Denial> {
    let Some(req) = ctx.req.as_mut() else { return Ok(body) };
    let mut head = ResponseHead { status: resp.status, headers: &resp.headers };
    rt.pipeline.on_response(req, &mut head)?;
    let body = rt.pipeline.on_buffered_response(req, body)?;
    super::bulk::rewrite_manifest(rt, req, resp.status, body)
}

async fn write_upstream(
    rt: &Runtime,
    session: &mut Session,
    ctx: &mut GatewayCtx,
    mut resp: ResponseHeader,
    body: Bytes,
) -> pingora::Result<()> {
    for name in HOP_BY_HOP {
        resp.remove_header(name);
    }
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
    if let Some(req) = ctx.req.as_mut() {
        super::bulk::seal_status_location(rt, req, &mut resp)?;
        for (name, value) in std::mem::take(&mut req.response.add_headers) {
            resp.insert_header(name, value)?;
        }
        req.response.bytes_out = body.len() as u64;
    }
    if let Some(cors) = &ctx.cors {
        crate::cors::decorate(&mut resp, cors)?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(resp), head_only || body.is_empty()).await?;
    if !head_only && !body.is_empty() {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}
