//! Admission: what the core does to every request before any stage runs. One normalization of
//! method, path and query; framing and size checks; routing; the stages' context; the bounded
//! request body read (for FHIR batch Bundles, `_search` forms and writes); FHIR classification.
//!
//! Ambiguous input is rejected, never guessed at: a proxy and the service behind it that parse
//! one request two ways are how access controls get bypassed (request smuggling, path confusion).

use std::sync::Arc;

use bytes::BytesMut;
use http::{header, HeaderMap, HeaderValue, Method};
use phigate_plugin::{ClientInfo, Denial, ErrorCode, RequestCtx, RequestInfo};
use pingora::proxy::Session;

use super::ctx::GatewayCtx;
use crate::cors::{self, CorsPolicy, CorsRequest, CorsState, PreflightRefusal};
use crate::request::{self, Ambiguity};
use crate::routing::Route;
use crate::runtime::Runtime;

/// What admission let through.
#[derive(Debug)]
pub(super) enum Admitted {
    /// A request for the stages: `ctx.req` is filled.
    Request,
    /// A CORS preflight on a route with a CORS policy, judged (on success, the origin to answer
    /// to). The core answers it: no stage runs, nothing is forwarded.
    Preflight(Arc<CorsPolicy>, Result<HeaderValue, PreflightRefusal>),
}

/// Admits a request: a request for the stages (`ctx.req` filled), or a CORS preflight. On a
/// route with a CORS policy, `ctx.cors` is set as soon as the route is known, so even the
/// refusals below carry the route's CORS headers.
///
/// # Errors
/// A denial for the client (400, 404, 405, 413, 414, 431).
pub(super) async fn admit(
    rt: &Runtime,
    session: &mut Session,
    ctx: &mut GatewayCtx,
) -> Result<Admitted, Denial> {
    let head = session.req_header();
    request::check_framing(&head.headers).map_err(ambiguous)?;
    let header_bytes: usize = head.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    if header_bytes > rt.limits.max_header_bytes {
        return Err(Denial::new(ErrorCode::HeadersTooLarge));
    }
    let method = head.method.clone();
    if !matches!(
        method,
        Method::GET
            | Method::HEAD
            | Method::POST
            | Method::PUT
            | Method::PATCH
            | Method::DELETE
            | Method::OPTIONS
    ) {
        return Err(Denial::new(ErrorCode::MethodNotAllowed));
    }
    let target = request::normalize_target(head.raw_path(), &rt.target_limits).map_err(|a| {
        // Only to choose the error format (OperationOutcome on FHIR routes) and its CORS
        // headers (so a browser app can read the 400): the raw path is trusted for nothing else.
        let raw = String::from_utf8_lossy(head.raw_path());
        let raw_path = raw.split('?').next().unwrap_or_default();
        let route = rt.router.find(raw_path);
        ctx.fhir = route.is_some_and(|r| r.meta.fhir);
        ctx.cors = route.and_then(|r| actual_cors(r, &head.headers));
        ambiguous(a)
    })?;
    let route = rt.router.find(&target.path).ok_or_else(|| Denial::new(ErrorCode::RouteNotFound))?;
    ctx.fhir = route.meta.fhir;
    ctx.route_label = route.meta.name.clone();
    ctx.upstream = route.upstream;
    if let Some(policy) = &route.cors {
        match cors::inspect(policy, &method, &head.headers) {
            CorsRequest::Preflight(judged) => return Ok(Admitted::Preflight(policy.clone(), judged)),
            CorsRequest::Actual(state) => ctx.cors = Some(state),
        }
    }
    ctx.strip = request::headers_to_strip(&head.headers);
    let mut client = client_info(session);
    if let Some(peer) = client.ip {
        let inbound = session.req_header().headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
        ctx.forwarded_for = Some(request::x_forwarded_for(peer, inbound, &rt.trusted_proxies));
        client.ip = Some(request::client_ip(peer, inbound, &rt.trusted_proxies));
    }
    let mut headers = session.req_header().headers.clone();
    // HTTP/2 names the host in `:authority` (RFC 9113 §8.3.1), which pingora has checked against
    // any `Host`: stages see one `Host` whatever the protocol (a DPoP proof's `htu` names it).
    if !headers.contains_key(header::HOST) {
        if let Some(authority) = session.req_header().uri.authority() {
            if let Ok(host) = http::HeaderValue::from_str(authority.as_str()) {
                headers.insert(header::HOST, host);
            }
        }
    }
    let (target, bulk) = match &rt.bulk {
        Some(b) if route.meta.fhir => b.admit(route, target, &method, &rt.target_limits)?,
        _ => (target, None),
    };
    let info = RequestInfo { method, path: target.path, query: target.query, headers, body: None };
    let mut req = RequestCtx::new(ctx.request_id.clone(), route.meta.clone(), info);
    if let Some(b) = &bulk {
        // A completed export's manifest is rewritten before it is sent: read it whole.
        req.response.buffer_body =
            b.kind == phigate_plugin::BulkKind::Status && req.request.method == Method::GET;
    }
    req.bulk = bulk;
    if let Some(source) = &route.tenant {
        req.tenant = Some(source.of(&req.request.headers)?);
    }
    req.trace_id = ctx.trace.as_ref().map(crate::telemetry::RequestTrace::trace_id);
    req.started = ctx.started;
    req.client = client;
    if route.meta.fhir {
        if wants_body(&req.request.method) {
            if encoded(&req.request.headers) {
                return Err(Denial::new(ErrorCode::ContentEncodingUnsupported)
                    .with_cause("request body with a content coding"));
            }
            req.request.body = read_body(session, ctx, rt.limits.max_body_inspect_bytes).await?;
        }
        let content_type = req.request.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        // Cancelling an export is a DELETE of its status URL (FHIR Bulk Data), an operation no
        // other FHIR request deletes: classified as the status request it cancels.
        let cancel = req.bulk.as_ref().is_some_and(|b| b.kind == phigate_plugin::BulkKind::Status)
            && req.request.method == Method::DELETE;
        let fhir = request::classify(
            if cancel { &Method::GET } else { &req.request.method },
            route.rest(&req.request.path),
            &req.request.query,
            req.request.body.as_deref(),
            content_type,
        )
        .map_err(|e| Denial::new(e.error_code()).with_cause(e.reason()))?;
        req.fhir = Some(fhir);
    }
    ctx.req = Some(req);
    Ok(Admitted::Request)
}

/// The CORS state of a request refused before normalization succeeded (never a preflight
/// answer: the target is ambiguous, so only the refusal is decorated).
fn actual_cors(route: &Route, headers: &HeaderMap) -> Option<CorsState> {
    match cors::inspect(route.cors.as_ref()?, &Method::GET, headers) {
        CorsRequest::Actual(state) => Some(state),
        CorsRequest::Preflight(_) => None,
    }
}

fn ambiguous(a: Ambiguity) -> Denial {
    Denial::new(a.error_code()).with_cause(a.reason())
}

/// Whether the request names a content coding other than `identity`: a body the gateway could
/// not read as sent.
fn encoded(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONTENT_ENCODING).iter().any(|v| {
        v.to_str().map_or(true, |v| {
            v.split(',').any(|c| !c.trim().is_empty() && !c.trim().eq_ignore_ascii_case("identity"))
        })
    })
}

fn wants_body(m: &Method) -> bool {
    matches!(*m, Method::POST | Method::PUT | Method::PATCH)
}

fn client_info(session: &Session) -> ClientInfo {
    let ip = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
    let cert_thumbprint =
        session.digest().and_then(|d| d.ssl_digest.as_ref()).filter(|s| !s.cert_digest.is_empty()).map(|s| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&s.cert_digest).into()
        });
    ClientInfo { ip, cert_thumbprint }
}

/// Reads the request body for inspection, bounded by `cap`. Pingora keeps what was read in its
/// retry buffer and replays it upstream, so the body forwarded is the body inspected.
///
/// A `Content-Length` over the cap is refused before a byte is read. A client that waits for
/// `100 Continue` (`Expect: 100-continue`, RFC 9110 §10.1.1) is sent one before the read, since
/// the gateway, not the upstream, reads the body: the upstream then gets the body without the
/// expectation.
async fn read_body(
    session: &mut Session,
    ctx: &mut GatewayCtx,
    cap: usize,
) -> Result<Option<bytes::Bytes>, Denial> {
    let headers = &session.req_header().headers;
    let announced = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|n| n > cap as u64) {
        return Err(Denial::new(ErrorCode::BodyTooLarge).with_cause("announced content-length over the cap"));
    }
    let expects_continue = headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
    if expects_continue {
        ctx.strip.push(header::EXPECT);
        if !session.as_mut().is_body_done() {
            session.as_mut().write_continue_response().await.map_err(|e| {
                Denial::new(ErrorCode::BadRequest).with_cause(format!("100 continue: {}", e.etype().as_str()))
            })?;
        }
    }
    session.as_mut().enable_retry_buffering();
    let mut buf = BytesMut::new();
    loop {
        match session.as_mut().read_request_body().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > cap {
                    return Err(Denial::new(ErrorCode::BodyTooLarge));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                return Err(Denial::new(ErrorCode::BadRequest)
                    .with_cause(format!("request body: {}", e.etype().as_str())))
            }
        }
    }
    if session.as_mut().retry_buffer_truncated() {
        return Err(Denial::new(ErrorCode::BodyTooLarge));
    }
    Ok((!buf.is_empty()).then(|| buf.freeze()))
}
