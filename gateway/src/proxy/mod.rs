//! The pingora `ProxyHttp` implementation. It maps pingora's phases to the core (admission,
//! forwarding, error responses) and to the stage pipeline; it holds no stage logic itself.

mod admit;
mod bulk;
mod ctx;
mod exchange;
mod forward;
mod location;
mod pre_read;
mod respond;
mod verified;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use phigate_plugin::{Denial, ErrorCode, Flow, ResponseHead};
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

pub use ctx::GatewayCtx;
use respond::{write_denial, write_local, write_preflight, REQUEST_ID};

use crate::runtime::Runtime;

/// The error type of a response a stage refused while its body streamed.
const RESPONSE_REFUSED: &str = "response_refused";

/// The gateway's proxy logic.
#[derive(Clone)]
pub struct GatewayProxy {
    rt: Arc<Runtime>,
    /// Connector for verified fetches (its own pool; same peers).
    connector: Arc<Connector>,
}

impl std::fmt::Debug for GatewayProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayProxy").field("rt", &self.rt).finish_non_exhaustive()
    }
}

impl GatewayProxy {
    /// A proxy over a built runtime.
    pub fn new(rt: Arc<Runtime>) -> Self {
        GatewayProxy { rt, connector: Arc::new(Connector::new(None)) }
    }
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = GatewayCtx;

    fn new_ctx(&self) -> GatewayCtx {
        GatewayCtx::new()
    }

    /// Response compression for clients that accept it (`server.response_compression_level`;
    /// 0 leaves pingora's module off).
    fn init_downstream_modules(&self, modules: &mut pingora::modules::http::HttpModules) {
        modules.add_module(pingora::modules::http::compression::ResponseCompressionBuilder::enable(
            self.rt.response_compression_level,
        ));
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut GatewayCtx) -> Result<bool> {
        // Upstreams are asked for identity (`forward::gateway_headers`); a body one compresses
        // anyway is decompressed before any stage reads it, so nothing is passed on unread.
        session.upstream_compression.adjust_decompression(true);
        if let Some(telemetry) = &self.rt.telemetry {
            ctx.trace = Some(telemetry.start(&session.req_header().headers));
        }
        match admit::admit(&self.rt, session, ctx).await {
            Ok(admit::Admitted::Request) => {}
            Ok(admit::Admitted::Preflight(policy, judged)) => {
                let outcome = judged.as_ref().map_or_else(|r| r.as_str(), |_| "allowed");
                self.rt.metrics.cors_preflights.with_label_values(&[&*ctx.route_label, outcome]).inc();
                write_preflight(session, ctx, &policy, judged).await?;
                return Ok(true);
            }
            Err(denial) => {
                write_denial(session, ctx, &denial).await?;
                return Ok(true);
            }
        }
        match self.on_request(session, ctx).await {
            Ok(Flow::Continue) => {}
            Ok(Flow::Respond(local)) => {
                if let Some(req) = ctx.req.as_mut() {
                    req.response.status = Some(local.status.as_u16());
                    self.rt.pipeline.on_refused(req).await;
                }
                write_local(session, ctx, local).await?;
                return Ok(true);
            }
            Err(denial) => {
                if let Some(req) = ctx.req.as_mut() {
                    // The stages leave their evidence (the audit trail's `denied` record) before
                    // the client learns it was refused.
                    req.error = Some(denial.code);
                    req.response.status = Some(denial.shown().status().as_u16());
                    self.rt.pipeline.on_refused(req).await;
                }
                write_denial(session, ctx, &denial).await?;
                return Ok(true);
            }
        }
        let Some(req) = ctx.req.as_ref() else {
            write_denial(session, ctx, &Denial::new(ErrorCode::InternalError)).await?;
            return Ok(true);
        };
        // Rebuilt from the normalized (and possibly narrowed) form: what the stages judged is
        // exactly what the upstream receives.
        let buffer = req.response.buffer_body;
        ctx.forward_target =
            Some(crate::request::rebuild_target(&upstream_path(&self.rt, req), &req.request.query));
        if buffer {
            verified::fetch_verified(&self.rt, &self.connector, session, ctx).await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut GatewayCtx) -> Result<Box<HttpPeer>> {
        let upstream = self
            .rt
            .upstreams
            .get(ctx.upstream)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "upstream index out of range"))?;
        let failed = (ctx.tried != 0).then_some(ctx.endpoint);
        let Some(index) = upstream.select(ctx.tried, failed) else {
            // Every endpoint failed its health checks (or was tried): fail fast, try none.
            let labels = [&*upstream.name, "no_healthy_endpoint"];
            self.rt.metrics.upstream_connect_errors.with_label_values(&labels).inc();
            return Error::e_explain(ErrorType::ConnectNoRoute, "no healthy upstream endpoint");
        };
        ctx.endpoint = index;
        Ok(Box::new(HttpPeer::clone(&upstream.endpoints[index].peer.load())))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut GatewayCtx,
    ) -> Result<()> {
        let authority = session.req_header().uri.authority().map(|a| a.as_str().to_owned());
        forward::prepare(&self.rt, authority.as_deref(), up, ctx)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut GatewayCtx,
    ) -> Result<()> {
        resp.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        ctx.upstream_answered();
        location::map_to_route(&self.rt, ctx, resp);
        self.stage_response(resp, ctx)?;
        // Last, so that neither the upstream nor a stage's header edits can widen the policy.
        if let Some(cors) = &ctx.cors {
            crate::cors::decorate(resp, cors)?;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut GatewayCtx,
    ) -> Result<Option<std::time::Duration>> {
        if ctx.replace_body.is_some() {
            *body = if end_of_stream { ctx.replace_body.take() } else { None };
            return Ok(None);
        }
        if ctx.buffered.is_none() && ctx.req.as_ref().is_some_and(|r| r.response.filter_body) {
            self.filter_body(body, end_of_stream, ctx)?;
        }
        if let Some(buf) = ctx.buffered.as_mut() {
            if let Some(chunk) = body.take() {
                if buf.len() + chunk.len() > self.rt.limits.max_response_buffer_bytes {
                    return Error::e_explain(ErrorType::InternalError, "response too large to inspect");
                }
                buf.extend_from_slice(&chunk);
            }
            if !end_of_stream {
                return Ok(None);
            }
            let whole = ctx.buffered.take().map(|b| b.freeze()).unwrap_or_default();
            let whole = match ctx.req.as_mut() {
                Some(req) => match self.rt.pipeline.on_buffered_response(req, whole) {
                    Ok(sent) => sent,
                    Err(denial) => {
                        // Headers are already out: the client sees the refusal in the body only.
                        ctx.error = Some(denial.code);
                        req.error = Some(denial.code);
                        let (_, err) = crate::error_response::error_body(
                            denial.shown(),
                            ctx.request_id.as_str(),
                            ctx.fhir,
                        );
                        *body = Some(err);
                        return Ok(None);
                    }
                },
                None => whole,
            };
            *body = Some(whole);
        }
        if let (Some(req), Some(chunk)) = (ctx.req.as_mut(), body.as_ref()) {
            req.response.bytes_out += chunk.len() as u64;
            self.rt.pipeline.on_response_body(req, chunk, end_of_stream);
        } else if let (Some(req), true) = (ctx.req.as_mut(), end_of_stream) {
            self.rt.pipeline.on_response_body(req, &[], true);
        }
        Ok(None)
    }

    /// A connection to the chosen endpoint exists (new or pooled): its run of connect failures,
    /// if any, ends (passive health).
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut GatewayCtx,
    ) -> Result<()> {
        if let Some(u) = self.rt.upstreams.get(ctx.upstream) {
            u.connected(ctx.endpoint);
        }
        Ok(())
    }

    /// A connection to the chosen endpoint could not be established (nothing of the request was
    /// sent): another healthy endpoint is tried while `max_connect_retries` allows; with active
    /// health checks, `unhealthy_threshold` failures in a row take the endpoint out at once.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut GatewayCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let kind = match e.etype() {
            ErrorType::TLSHandshakeFailure | ErrorType::InvalidCert | ErrorType::HandshakeError => "tls",
            ErrorType::ConnectTimedout | ErrorType::TLSHandshakeTimedout => "timeout",
            _ => "connect",
        };
        if let Some(u) = self.rt.upstreams.get(ctx.upstream) {
            self.rt.metrics.upstream_connect_errors.with_label_values(&[&u.name, kind]).inc();
            // Only endpoints that failed to connect are excluded: pingora's own retry of a stale
            // pooled connection may pick the same endpoint again.
            ctx.tried |= crate::upstream::tried_bit(ctx.endpoint);
            if u.connect_failed(ctx.endpoint) {
                crate::upstream::health::published(u, &u.endpoints[ctx.endpoint], &self.rt.metrics);
            }
            let retry = u.may_retry(ctx.tried, ctx.connect_retries);
            if retry {
                ctx.connect_retries += 1;
            }
            e.set_retry(retry);
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut GatewayCtx) -> FailToProxy {
        if session.response_written().is_some() {
            // The head (and perhaps part of the body) is out: nothing may be spliced into the
            // body. The connection ends without the body's end, so the client sees a truncated
            // transfer, never a complete-looking one.
            return FailToProxy { error_code: 0, can_reuse_downstream: false };
        }
        // A stage refused the body before any of it went out: its code, not a proxy failure.
        let code = match (e.etype(), ctx.error) {
            (ErrorType::Custom(RESPONSE_REFUSED), Some(code)) => Some(code),
            _ => error_code_for(e),
        };
        let status = match code {
            Some(code) => {
                let denial = Denial::new(code).with_cause(e.etype().as_str().to_owned());
                match write_denial(session, ctx, &denial).await {
                    Ok(()) => code.status().as_u16(),
                    Err(_) => 0,
                }
            }
            None => 0,
        };
        FailToProxy { error_code: status, can_reuse_downstream: false }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut GatewayCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let code = ctx.error.map_or("ok", |c| c.as_str());
        let status_label = status.to_string();
        let m = &self.rt.metrics;
        m.requests.with_label_values(&[&*ctx.route_label, status_label.as_str(), code]).inc();
        m.request_duration
            .with_label_values(&[&*ctx.route_label])
            .observe(ctx.started.elapsed().as_secs_f64());
        if let Some(req) = ctx.req.as_mut() {
            req.response.status = Some(status);
            if req.error.is_none() {
                req.error = ctx.error;
            }
            self.rt.pipeline.on_complete(req).await;
        }
        if let (Some(telemetry), Some(trace)) = (&self.rt.telemetry, ctx.trace.take()) {
            let req = ctx.req.as_ref();
            let finish = crate::telemetry::Finish {
                method: session.req_header().method.as_str(),
                route: &ctx.route_label,
                status,
                error_code: ctx.error.map(|c| c.as_str()),
                request_id: ctx.request_id.as_str(),
                fhir: req.and_then(|r| r.fhir.as_ref()).map(|f| (f.interaction.as_str(), f.resource_type)),
                decision: req.and_then(|r| r.decision.as_ref()).map(|d| (d.allow, d.revision.as_str())),
                tenant: req.and_then(|r| r.tenant.as_ref()).map(|t| t.as_str()),
            };
            telemetry.finish(trace, finish);
        }
        crate::events::AccessLog {
            request_id: ctx.request_id.as_str(),
            route: &ctx.route_label,
            method: session.req_header().method.as_str(),
            status,
            code,
            duration_us: ctx.started.elapsed().as_micros(),
            trace_id: ctx.req.as_ref().and_then(|r| r.trace_id.as_deref()),
        }
        .emit();
    }
}

impl GatewayProxy {
    /// The stages' `on_request`: the deciding stages, then audit's attempt record, then the
    /// pre-read when a deciding stage asked for it. The pre-read is the first contact with the
    /// upstream and reads PHI on the principal's behalf, so it too comes after a durable attempt
    /// record (no upstream request unrecorded); a write it refuses ends with a `denied` record.
    async fn on_request(&self, session: &Session, ctx: &mut GatewayCtx) -> Result<Flow, Denial> {
        let internal = || Denial::new(ErrorCode::InternalError);
        let req = ctx.req.as_mut().ok_or_else(internal)?;
        let mut timings = ctx.trace.as_mut().filter(|t| t.times_stages()).map(|t| &mut t.stages);
        if let respond @ Flow::Respond(_) =
            self.rt.pipeline.on_request_decide(req, timings.as_deref_mut()).await?
        {
            return Ok(respond);
        }
        let flow = self.rt.pipeline.on_request_record(req, timings).await?;
        if matches!(flow, Flow::Continue) {
            // Before any upstream contact (the pre-read is one), after the attempt record: a
            // request refused for capacity is audited like any refusal.
            ctx.in_flight = self.admit(ctx.upstream).await?;
            if ctx.req.as_ref().is_some_and(|r| r.upstream.pre_read) {
                pre_read::pre_read(&self.rt, &self.connector, session, ctx).await?;
            }
        }
        Ok(flow)
    }

    /// A place among the upstream's `max_requests_in_flight`, or 503 `upstream_overloaded`.
    async fn admit(&self, upstream: usize) -> Result<Option<crate::upstream::InFlight>, Denial> {
        let Some(upstream) = self.rt.upstreams.get(upstream) else {
            return Ok(None);
        };
        upstream.admit().await.map_err(|crate::upstream::Overloaded| {
            self.rt.metrics.upstream_overloaded.with_label_values(&[&*upstream.name]).inc();
            Denial::new(ErrorCode::UpstreamOverloaded)
                .with_cause(format!("upstream {} at max_requests_in_flight", upstream.name))
                .with_header(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"))
        })
    }

    /// The stages' `on_response` on an upstream response head: their header edits, and the
    /// replacement of the response when one refuses it.
    fn stage_response(&self, resp: &mut ResponseHeader, ctx: &mut GatewayCtx) -> Result<()> {
        let Some(req) = ctx.req.as_mut() else {
            return Ok(());
        };
        if let Some(sent) = ctx.upstream_sent_at {
            req.response.upstream_latency = Some(sent.elapsed());
        }
        let mut head = ResponseHead { status: resp.status, headers: &resp.headers };
        let verdict = self.rt.pipeline.on_response(req, &mut head);
        for (name, value) in std::mem::take(&mut req.response.add_headers) {
            resp.insert_header(name, value)?;
        }
        if let Err(denial) = verdict {
            self.replace_response(resp, ctx, &denial)?;
            return Ok(());
        }
        bulk::seal_status_location(&self.rt, req, resp)?;
        if req.response.buffer_body || req.response.filter_body {
            // The body is held back until it has been inspected; its length may change.
            resp.remove_header(&header::CONTENT_LENGTH);
            resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
            if req.response.buffer_body {
                ctx.buffered = Some(bytes::BytesMut::new());
            }
        }
        Ok(())
    }

    /// A piece of a filtered body through the stages' `on_response_chunk`. A denial ends the
    /// response where it is (the head and the checked bytes before it are out): the connection is
    /// closed without the body's end, so the client sees a truncated transfer.
    fn filter_body(&self, body: &mut Option<Bytes>, end: bool, ctx: &mut GatewayCtx) -> Result<()> {
        let Some(req) = ctx.req.as_mut() else { return Ok(()) };
        let chunk = body.take().unwrap_or_default();
        match self.rt.pipeline.on_response_chunk(req, chunk, end) {
            Ok(sent) => {
                *body = (!sent.is_empty() || end).then_some(sent);
                Ok(())
            }
            Err(denial) => {
                req.error = Some(denial.code);
                ctx.error = Some(denial.code);
                log::warn!(
                    target: "phigate::proxy",
                    "request_id={} response ended mid-body: {}",
                    ctx.request_id.as_str(),
                    denial.code.as_str()
                );
                Error::e_explain(ErrorType::Custom(RESPONSE_REFUSED), "response refused mid-body by a stage")
            }
        }
    }

    /// Replaces an upstream response (head already received) with the error for `denial`.
    fn replace_response(
        &self,
        resp: &mut ResponseHeader,
        ctx: &mut GatewayCtx,
        denial: &Denial,
    ) -> Result<()> {
        let (content_type, body) =
            crate::error_response::error_body(denial.shown(), ctx.request_id.as_str(), ctx.fhir);
        resp.set_status(denial.shown().status())?;
        let names: Vec<_> = resp.headers.keys().cloned().collect();
        for name in names {
            if name.as_str() != REQUEST_ID {
                resp.remove_header(&name);
            }
        }
        resp.insert_header(header::CONTENT_TYPE, content_type)?;
        resp.insert_header(header::CONTENT_LENGTH, body.len())?;
        resp.insert_header(header::CACHE_CONTROL, "no-store")?;
        for (name, value) in &denial.headers {
            resp.append_header(name.clone(), value.clone())?;
        }
        ctx.error = Some(denial.code);
        if let Some(req) = ctx.req.as_mut() {
            req.error = Some(denial.code);
        }
        ctx.replace_body = Some(body);
        Ok(())
    }
}

/// The upstream path for the request's normalized path (the route's prefix rewrite applied).
fn upstream_path(rt: &Runtime, req: &phigate_plugin::RequestCtx) -> String {
    match rt.router.get(req.route.index) {
        Some(route) => route.upstream_path(&req.request.path),
        None => req.request.path.clone(),
    }
}

/// The stable code for a proxying failure, or `None` when the client is gone (no response).
pub(crate) fn error_code_for(e: &Error) -> Option<ErrorCode> {
    use ErrorType::*;
    match e.etype() {
        TLSHandshakeFailure | InvalidCert | HandshakeError | TLSHandshakeTimedout => {
            Some(ErrorCode::UpstreamTlsError)
        }
        ConnectTimedout | ReadTimedout | WriteTimedout if e.esource() == &ErrorSource::Upstream => {
            Some(ErrorCode::UpstreamTimeout)
        }
        ConnectTimedout => Some(ErrorCode::UpstreamTimeout),
        ConnectRefused | ConnectNoRoute | ConnectError | BindError | SocketError => {
            Some(ErrorCode::UpstreamUnavailable)
        }
        _ => match (e.esource(), e.etype()) {
            (ErrorSource::Upstream, _) => Some(ErrorCode::UpstreamError),
            // The client went away (a closed connection, a reset h2 stream): nobody to answer and
            // nothing the gateway did wrong. Pingora leaves some of these unattributed (an h2
            // write to a stream the client reset); upstream I/O goes through `exchange`, which
            // falls back to `upstream_error` itself.
            (ErrorSource::Downstream | ErrorSource::Unset, ReadError | WriteError | ConnectionClosed) => None,
            (ErrorSource::Downstream, _) => Some(ErrorCode::BadRequest),
            (ErrorSource::Internal | ErrorSource::Unset, _) => Some(ErrorCode::InternalError),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_that_went_away_is_no_error_of_the_gateway() {
        for etype in [ErrorType::WriteError, ErrorType::ReadError, ErrorType::ConnectionClosed] {
            assert_eq!(error_code_for(&Error::new_down(etype.clone())), None, "{etype:?} downstream");
            assert_eq!(error_code_for(&Error::new(etype.clone())), None, "{etype:?} unattributed");
        }
        assert_eq!(error_code_for(&Error::new_up(ErrorType::WriteError)), Some(ErrorCode::UpstreamError));
        assert_eq!(error_code_for(&Error::new(ErrorType::InternalError)), Some(ErrorCode::InternalError));
        assert_eq!(
            error_code_for(&Error::new_down(ErrorType::InvalidHTTPHeader)),
            Some(ErrorCode::BadRequest)
        );
    }
}
