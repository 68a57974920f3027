//! The pre-read: when a stage set `ctx.upstream.pre_read` (the policy stage does for a write by
//! id, `PUT`/`PATCH`/`DELETE Observation/123`, by a principal held to a set of patients), the
//! gateway reads the stored resource the request addresses after the durable `attempt` audit
//! record (the read is PHI access on the principal's behalf) and before anything is forwarded,
//! and hands the answer to the stages' `on_pre_read`. A write is
//! judged by the record it changes, not only by what its path and body name: otherwise a care-team
//! writer could overwrite or delete any patient's record by its id (HIPAA minimum necessary,
//! 45 CFR 164.502(b)); FHIR servers' own authorization layers load the record for the same reason.
//!
//! The read is `GET` of the path the write goes to (without its query), on the same connector and
//! mTLS peer as forwarded traffic, with `Accept: application/fhir+json`. Of the client's headers it
//! carries only `Host` and `Authorization`, under the same stripping and stage edits as the write
//! itself (an upstream that authorizes per user must let that user read the record). The body is
//! bounded by the verified-fetch cap. Any failure refuses the write (fail closed).

use http::{header, Method};
use phigate_plugin::{Denial, ErrorCode, PreRead};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};

use super::ctx::GatewayCtx;
use crate::runtime::Runtime;

/// Reads the addressed resource and lets the stages judge it.
///
/// # Errors
/// The stages' denial, or the upstream error code when the read failed.
pub(super) async fn pre_read(
    rt: &Runtime,
    connector: &Connector,
    session: &Session,
    ctx: &mut GatewayCtx,
) -> Result<(), Denial> {
    let upstream = rt.upstreams.get(ctx.upstream).ok_or_else(|| Denial::new(ErrorCode::InternalError))?;
    let head = head(rt, session, ctx)
        .map_err(|e| Denial::new(ErrorCode::InternalError).with_cause(e.etype().as_str().to_owned()))?;
    let started = std::time::Instant::now();
    let answer = super::exchange::exchange(rt, connector, upstream, head, None).await;
    if let Some(trace) = ctx.trace.as_mut().filter(|t| t.times_stages()) {
        trace.stages.push(("pre_read", started, std::time::Instant::now()));
    }
    let req = ctx.req.as_mut().ok_or_else(|| Denial::new(ErrorCode::InternalError))?;
    match answer {
        Ok((resp, body)) => {
            rt.pipeline.on_pre_read(req, PreRead::Answered { status: resp.status, body: &body })
        }
        Err(failed) => {
            // The stages see the failure (to count it); the write is refused whatever they say.
            let _ = rt.pipeline.on_pre_read(req, PreRead::Failed(failed.code));
            Err(failed)
        }
    }
}

fn head(rt: &Runtime, session: &Session, ctx: &GatewayCtx) -> pingora::Result<RequestHeader> {
    let req = ctx.req.as_ref().ok_or_else(|| Error::explain(ErrorType::InternalError, "no request"))?;
    let path = super::upstream_path(rt, req);
    let target = crate::request::rebuild_target(&path, &[]);
    let mut head = RequestHeader::build(Method::GET, target.as_bytes(), Some(8))?;
    head.insert_header(header::ACCEPT, "application/fhir+json")?;
    let client = &session.req_header().headers;
    for name in [header::HOST, header::AUTHORIZATION] {
        if let Some(value) = client.get(&name).filter(|_| !ctx.strip.contains(&name)) {
            head.insert_header(name, value.clone())?;
        }
    }
    let authority = session.req_header().uri.authority().map(|a| a.as_str().to_owned());
    super::forward::gateway_headers(rt, authority.as_deref(), &mut head, ctx)?;
    Ok(head)
}
