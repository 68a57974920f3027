//! The stage list in its fixed order, and the dispatch of each phase to it. The pingora proxy
//! calls these; stage logic lives only in the stages.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use phigate_plugin::{
    BackgroundTask, ChangeSink, Denial, Flow, PreRead, Readiness, RequestCtx, ResponseHead, Stage,
};

/// The ordered stages of the pipeline: the deciding stages, then the recording ones (audit). The
/// gateway's pre-read runs after both, once the attempt record is durable.
#[derive(Clone, Default)]
pub struct Pipeline {
    stages: Vec<Arc<dyn Stage>>,
    /// Index of the first recording stage (`stages.len()` when there is none).
    record_from: usize,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.stages.iter().map(|s| s.name())).finish()
    }
}

impl Pipeline {
    /// A pipeline running `stages` in the given order.
    pub fn new(stages: Vec<Arc<dyn Stage>>) -> Self {
        Pipeline { record_from: stages.len(), stages }
    }

    /// A pipeline running `decide` then `record` (audit: its `on_request` runs after every
    /// deciding stage, before the pre-read and forwarding).
    pub fn with_record(decide: Vec<Arc<dyn Stage>>, record: Vec<Arc<dyn Stage>>) -> Self {
        let record_from = decide.len();
        Pipeline { stages: decide.into_iter().chain(record).collect(), record_from }
    }

    /// Whether there are no stages (pass-through).
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// Runs `on_request` of each stage in order; the first denial or local response stops it.
    ///
    /// # Errors
    /// The first stage's denial.
    pub async fn on_request(&self, ctx: &mut RequestCtx) -> Result<Flow, Denial> {
        match self.on_request_decide(ctx, None).await? {
            Flow::Continue => self.on_request_record(ctx, None).await,
            respond @ Flow::Respond(_) => Ok(respond),
        }
    }

    /// [`Pipeline::on_request`] of the deciding stages only (everything before audit). With
    /// `timings`, each stage that ran is added to it with its start and end (for tracing).
    ///
    /// # Errors
    /// The first stage's denial.
    pub async fn on_request_decide(
        &self,
        ctx: &mut RequestCtx,
        timings: Option<&mut Timings>,
    ) -> Result<Flow, Denial> {
        run_on_request(self.stages.get(..self.record_from).unwrap_or_default(), ctx, timings).await
    }

    /// [`Pipeline::on_request`] of the recording stages only (audit), before any pre-read.
    ///
    /// # Errors
    /// The first stage's denial.
    pub async fn on_request_record(
        &self,
        ctx: &mut RequestCtx,
        timings: Option<&mut Timings>,
    ) -> Result<Flow, Denial> {
        run_on_request(self.stages.get(self.record_from..).unwrap_or_default(), ctx, timings).await
    }

    /// Runs `on_pre_read` of each stage; the first denial refuses the request.
    ///
    /// # Errors
    /// The first stage's denial.
    pub fn on_pre_read(&self, ctx: &mut RequestCtx, read: PreRead<'_>) -> Result<(), Denial> {
        self.stages.iter().try_for_each(|s| s.on_pre_read(ctx, read))
    }

    /// Runs `on_response` of each stage; the first denial replaces the response.
    ///
    /// # Errors
    /// The first stage's denial.
    pub fn on_response(&self, ctx: &mut RequestCtx, head: &mut ResponseHead<'_>) -> Result<(), Denial> {
        self.stages.iter().try_for_each(|s| s.on_response(ctx, head))
    }

    /// Feeds a body chunk to every stage.
    pub fn on_response_body(&self, ctx: &mut RequestCtx, chunk: &[u8], end: bool) {
        for stage in &self.stages {
            stage.on_response_body(ctx, chunk, end);
        }
    }

    /// Passes a piece of a filtered body (`ctx.response.filter_body`) through every stage's
    /// `on_response_chunk`, in order: what is left to send.
    ///
    /// # Errors
    /// The first stage's denial: the response ends there.
    pub fn on_response_chunk(
        &self,
        ctx: &mut RequestCtx,
        mut chunk: Bytes,
        end: bool,
    ) -> Result<Bytes, Denial> {
        for stage in &self.stages {
            chunk = stage.on_response_chunk(ctx, chunk, end)?;
        }
        Ok(chunk)
    }

    /// Runs `on_buffered_response` of each stage; the first denial replaces the response. Returns
    /// the body to send: the upstream's, or what stages replaced it with.
    ///
    /// # Errors
    /// The first stage's denial.
    pub fn on_buffered_response(&self, ctx: &mut RequestCtx, mut body: Bytes) -> Result<Bytes, Denial> {
        for stage in &self.stages {
            stage.on_buffered_response(ctx, &body)?;
            if let Some(replaced) = ctx.response.replace_body.take() {
                body = replaced;
            }
        }
        Ok(body)
    }

    /// Runs `on_refused` of every stage (the request will be answered by the gateway, not
    /// forwarded), before the answer is written.
    pub async fn on_refused(&self, ctx: &mut RequestCtx) {
        for stage in &self.stages {
            stage.on_refused(ctx).await;
        }
    }

    /// Runs `on_complete` of every stage.
    pub async fn on_complete(&self, ctx: &RequestCtx) {
        for stage in &self.stages {
            stage.on_complete(ctx).await;
        }
    }

    /// Each stage's name and readiness.
    pub fn readiness(&self) -> Vec<(&'static str, Readiness)> {
        self.stages.iter().map(|s| (s.name(), s.readiness())).collect()
    }

    /// Asks every stage to reload its files.
    pub fn reload(&self) {
        for stage in &self.stages {
            stage.reload();
        }
    }

    /// Hands every stage the sink its changes are recorded through.
    pub fn attach_changes(&self, changes: &ChangeSink) {
        for stage in &self.stages {
            stage.attach_changes(changes.clone());
        }
    }

    /// Every stage's background tasks.
    pub fn background_tasks(&self) -> Vec<BackgroundTask> {
        self.stages.iter().flat_map(|s| s.background_tasks()).collect()
    }
}

/// Stages as they ran: name, start, end.
pub type Timings = Vec<(&'static str, Instant, Instant)>;

async fn run_on_request(
    stages: &[Arc<dyn Stage>],
    ctx: &mut RequestCtx,
    mut timings: Option<&mut Timings>,
) -> Result<Flow, Denial> {
    for stage in stages {
        let start = timings.is_some().then(Instant::now);
        let flow = stage.on_request(ctx).await;
        if let (Some(timings), Some(start)) = (timings.as_deref_mut(), start) {
            timings.push((stage.name(), start, Instant::now()));
        }
        match flow? {
            Flow::Continue => {}
            respond @ Flow::Respond(_) => return Ok(respond),
        }
    }
    Ok(Flow::Continue)
}
