//! The stage list in its fixed order, and the dispatch of each phase to it. The pingora proxy
//! calls these; stage logic lives only in the stages.

use std::sync::Arc;

use phigate_plugin::{BackgroundTask, Denial, Flow, Readiness, RequestCtx, ResponseHead, Stage};

/// The ordered stages of the pipeline.
#[derive(Clone, Default)]
pub struct Pipeline {
    stages: Vec<Arc<dyn Stage>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.stages.iter().map(|s| s.name())).finish()
    }
}

impl Pipeline {
    /// A pipeline running `stages` in the given order.
    pub fn new(stages: Vec<Arc<dyn Stage>>) -> Self {
        Pipeline { stages }
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
        for stage in &self.stages {
            match stage.on_request(ctx).await? {
                Flow::Continue => {}
                respond @ Flow::Respond(_) => return Ok(respond),
            }
        }
        Ok(Flow::Continue)
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

    /// Runs `on_buffered_response` of each stage; the first denial replaces the response.
    ///
    /// # Errors
    /// The first stage's denial.
    pub fn on_buffered_response(&self, ctx: &mut RequestCtx, body: &[u8]) -> Result<(), Denial> {
        self.stages.iter().try_for_each(|s| s.on_buffered_response(ctx, body))
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

    /// Every stage's background tasks.
    pub fn background_tasks(&self) -> Vec<BackgroundTask> {
        self.stages.iter().flat_map(|s| s.background_tasks()).collect()
    }
}
