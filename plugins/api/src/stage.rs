//! The [`Stage`] trait: the phases a pipeline stage may hook, each with a safe default.

use std::borrow::Cow;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::{BackgroundTask, ChangeSink, Denial, ErrorCode, RequestCtx};

/// What a stage tells the gateway after [`Stage::on_request`].
#[derive(Debug)]
pub enum Flow {
    /// Go on with the next stage (and, after the last, forward upstream).
    Continue,
    /// Answer the client with this response; no later stage runs and nothing is forwarded.
    Respond(LocalResponse),
}

/// A response a stage produces itself (not an error: errors are [`Denial`]s).
#[derive(Debug, Clone)]
pub struct LocalResponse {
    /// Status code.
    pub status: StatusCode,
    /// Extra headers (the gateway adds `content-type` when absent, and `x-request-id`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Body bytes.
    pub body: Bytes,
}

/// The upstream response head as a stage sees it in [`Stage::on_response`].
#[derive(Debug)]
pub struct ResponseHead<'a> {
    /// Status code the upstream answered with.
    pub status: StatusCode,
    /// Response headers as received from the upstream (read-only: add headers through
    /// `ctx.response.add_headers`).
    pub headers: &'a HeaderMap,
}

/// What the gateway's pre-read of the addressed resource got (see `UpstreamEdits::pre_read`), as
/// [`Stage::on_pre_read`] sees it.
#[derive(Debug, Clone, Copy)]
pub enum PreRead<'a> {
    /// The upstream answered with this status and this whole body (bounded).
    Answered {
        /// Status code of the upstream's answer.
        status: StatusCode,
        /// The complete body.
        body: &'a [u8],
    },
    /// No usable answer (connection, TLS, time-out, body over the cap). The gateway refuses the
    /// request with this code whatever the stages return.
    Failed(ErrorCode),
}

/// Whether a stage can serve traffic yet (its keys, policies or sinks are loaded and healthy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Ready. The optional detail (for example the active policy revision) shows in `/readyz`.
    Ready(Option<String>),
    /// Not ready, with a short reason for operators (never request data).
    NotReady(Cow<'static, str>),
}

/// One step of the request pipeline.
///
/// The gateway calls the built-in stages in this fixed order: identity, rate limit, policy
/// (with pagination), exfiltration watch, identity assertion, custom stages, audit. Audit is
/// always last so that the record it writes before forwarding describes the request exactly as
/// it will be sent.
///
/// Every phase has a default that does nothing, so a stage implements only what it needs.
#[async_trait]
pub trait Stage: Send + Sync + 'static {
    /// A short, stable name used in logs, metrics labels and `/readyz`.
    fn name(&self) -> &'static str;

    /// Readiness for `/readyz`. Default: ready, no detail.
    fn readiness(&self) -> Readiness {
        Readiness::Ready(None)
    }

    /// Long-running tasks this stage needs (key refresh, writers, reloaders). Called once by the
    /// gateway at start; each task is spawned on a background runtime. Default: none.
    fn background_tasks(&self) -> Vec<BackgroundTask> {
        Vec::new()
    }

    /// Hands the stage the gateway's [`ChangeSink`]: called once at start, before
    /// [`Stage::background_tasks`], and only when the gateway records changes (audit is
    /// configured). A stage that changes what it enforces while running (a policy reload) reports
    /// each change there, and what is in force at start (trigger `startup`). Default: ignore it.
    fn attach_changes(&self, _changes: ChangeSink) {}

    /// Re-reads whatever the stage loads from files (keys, policies), as on SIGHUP. Must not block:
    /// do the work on a background task and swap atomically. Default: nothing.
    fn reload(&self) {}

    /// Runs once per request after normalization, routing and (on FHIR routes) classification,
    /// before anything is sent upstream. Return a [`Denial`] to refuse the request (fail closed),
    /// [`Flow::Respond`] to answer it locally, or [`Flow::Continue`]. Default: continue.
    async fn on_request(&self, _ctx: &mut RequestCtx) -> Result<Flow, Denial> {
        Ok(Flow::Continue)
    }

    /// Runs when some stage set `ctx.upstream.pre_read` in `on_request`: after every stage ran
    /// `on_request` (audit's attempt record is durable: the read is PHI access too), the gateway
    /// reads the stored resource the request addresses and passes the answer here, before
    /// anything is forwarded. A denial refuses the request. The stage that asked judges the answer, status
    /// included (the gateway forwards on `Ok` from every stage). Default: accept.
    fn on_pre_read(&self, _ctx: &mut RequestCtx, _read: PreRead<'_>) -> Result<(), Denial> {
        Ok(())
    }

    /// Runs when the upstream response head arrives, before it is written to the client. A denial
    /// here replaces the upstream response entirely (the upstream body is discarded). Set
    /// `ctx.response.buffer_body = true` to have the whole body (bounded) passed to
    /// [`Stage::on_buffered_response`] before any byte of it reaches the client. Default: accept.
    fn on_response(&self, _ctx: &mut RequestCtx, _head: &mut ResponseHead<'_>) -> Result<(), Denial> {
        Ok(())
    }

    /// Runs for each chunk of the upstream response body as it streams to the client (sync: keep
    /// it cheap). `end` is true for the last call. Default: nothing.
    fn on_response_body(&self, _ctx: &mut RequestCtx, _chunk: &[u8], _end: bool) {}

    /// Runs for each piece of the upstream response body, in order, when some stage set
    /// `ctx.response.filter_body` (and before [`Stage::on_response_body`]): returns the bytes to
    /// pass on (the piece, part of it, bytes held back from earlier pieces, or nothing). `end` is
    /// true for the last call, whose piece may be empty: whatever is held back must be returned
    /// or refused then. A denial ends the response where it is. Default: pass the piece on.
    fn on_response_chunk(&self, _ctx: &mut RequestCtx, chunk: Bytes, _end: bool) -> Result<Bytes, Denial> {
        Ok(chunk)
    }

    /// Runs once with the complete response body when some stage asked for buffering. A denial
    /// replaces the response before any of the body left the gateway; a stage may instead set
    /// `ctx.response.replace_body` to leave out part of it. Default: accept.
    fn on_buffered_response(&self, _ctx: &mut RequestCtx, _body: &[u8]) -> Result<(), Denial> {
        Ok(())
    }

    /// Runs when the gateway is about to answer, itself, a request that passed admission but will
    /// not be forwarded (a stage's denial in `on_request`, or a stage's local response), before
    /// the answer is written: `ctx.error` (for a denial) and `ctx.response.status` are already
    /// set. A stage that must leave evidence before the client learns the outcome does it here
    /// (the audit stage makes the `denied` record durable). It cannot change the answer.
    /// [`Stage::on_complete`] still runs afterwards. Default: nothing.
    async fn on_refused(&self, _ctx: &mut RequestCtx) {}

    /// Runs exactly once per request after the response was sent, or after the request was refused
    /// or failed, whatever the path. Default: nothing.
    async fn on_complete(&self, _ctx: &RequestCtx) {}
}
