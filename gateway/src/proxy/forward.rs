//! Shaping the request that goes upstream, shared by the streaming path (pingora's
//! `upstream_request_filter`), the verified-fetch path and the pre-read.

use std::time::Instant;

use http::header;
use pingora::http::RequestHeader;
use pingora::{Error, ErrorType, Result};

use super::ctx::GatewayCtx;
use super::respond::REQUEST_ID;
use crate::runtime::Runtime;

/// Rewrites `up` (a copy of the client's request head) into what the upstream receives: the
/// normalized target, no hop-by-hop or spoofable headers, the gateway's own forwarding headers,
/// and the stages' edits. Marks the request as forwarded.
pub(super) fn prepare(
    rt: &Runtime,
    authority: Option<&str>,
    up: &mut RequestHeader,
    ctx: &mut GatewayCtx,
) -> Result<()> {
    for name in &ctx.strip {
        up.remove_header(name);
    }
    if let Some(target) = &ctx.forward_target {
        let uri = target
            .parse::<http::Uri>()
            .map_err(|_| Error::explain(ErrorType::InternalError, "rebuilt target is not a URI"))?;
        up.set_uri(uri);
    }
    gateway_headers(rt, authority, up, ctx)?;
    if let Some(req) = ctx.req.as_mut() {
        req.response.forwarded = true;
    }
    let now = Instant::now();
    ctx.upstream_sent_at = Some(now);
    if let Some(trace) = ctx.trace.as_mut() {
        trace.upstream = Some((now, None));
    }
    Ok(())
}

/// With tracing on, the upstream continues the gateway's trace: the client's own context headers
/// are replaced (they were either continued by the gateway's span or not trusted).
fn trace_context(rt: &Runtime, up: &mut RequestHeader, ctx: &GatewayCtx) -> Result<()> {
    let (Some(telemetry), Some(trace)) = (&rt.telemetry, &ctx.trace) else {
        return Ok(());
    };
    for name in crate::telemetry::CONTEXT_HEADERS {
        up.remove_header(name);
    }
    let mut fields = Vec::with_capacity(2);
    trace.inject(telemetry, |name, value| fields.push((name, value)));
    for (name, value) in fields {
        up.insert_header(name, value)?;
    }
    Ok(())
}

/// The headers the gateway sets on everything it sends upstream, forwarded requests and its own
/// pre-reads alike: `Host` when absent, its forwarding headers (`X-Forwarded-Prefix` on a route
/// forwarded under another prefix), the request id, no `Accept-Encoding` (identity), and the
/// stages' header edits.
pub(super) fn gateway_headers(
    rt: &Runtime,
    authority: Option<&str>,
    up: &mut RequestHeader,
    ctx: &GatewayCtx,
) -> Result<()> {
    if up.headers.get(header::HOST).is_none() {
        let host = match authority {
            Some(a) => a.to_owned(),
            None => rt.upstreams.get(ctx.upstream).map(|u| u.sni.clone()).unwrap_or_default(),
        };
        up.insert_header(header::HOST, host)?;
    }
    if let Some(xff) = &ctx.forwarded_for {
        up.insert_header("x-forwarded-for", xff.as_str())?;
    }
    up.insert_header("x-forwarded-proto", "https")?;
    up.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
    // The gateway reads what it verifies (search results, records by id, export files and
    // manifests): the upstream is asked for identity, whatever the client accepts.
    up.remove_header(&header::ACCEPT_ENCODING);
    trace_context(rt, up, ctx)?;
    if let Some(req) = ctx.req.as_ref() {
        // Where the client reached a route forwarded under another prefix, for servers that
        // build their links from forwarding headers (HAPI's `ApacheProxyAddressStrategy`).
        if let Some(route) = rt.router.get(req.route.index).filter(|r| r.rewrites()) {
            let prefix = if route.prefix().is_empty() { "/" } else { route.prefix() };
            up.insert_header("x-forwarded-prefix", prefix)?;
        }
        for name in &req.upstream.remove_headers {
            up.remove_header(name);
        }
        for (name, value) in &req.upstream.set_headers {
            up.insert_header(name.clone(), value.clone())?;
        }
    }
    Ok(())
}
