//! The [`AuditStage`]: the pipeline's last stage, writing `attempt` records before forwarding and
//! `outcome`/`denied` records on completion.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use phigate_plugin::{async_trait, ChangeEvent, Denial, ErrorCode, Flow, Readiness, RequestCtx, Stage};

use crate::config::AuditConfig;
use crate::metrics;
use crate::record::{Phase, RecordBuilder};
use crate::segment::{SegmentStore, StoreSettings};
use crate::sink::{PendingRecord, RecordKind};
use crate::writer::{BatchLimits, Writer};

/// Marks a request whose `denied` record `on_refused` already made durable.
#[derive(Debug, Clone, Copy)]
struct DeniedRecorded;

/// The audit stage. Built by [`AuditConfig::build`]; owns the writer thread, which stops once
/// the stage is dropped and every queued record is written.
pub struct AuditStage {
    writer: Writer,
    /// The forwarding task (`forward:`) until the gateway spawns it.
    forward_task: std::sync::Mutex<Option<crate::forward::Forwarder>>,
    records: RecordBuilder,
    max_wait: Duration,
    dir: PathBuf,
}

impl std::fmt::Debug for AuditStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditStage").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl AuditStage {
    pub(crate) fn start(
        cfg: AuditConfig,
        settings: StoreSettings,
        hmac_key: Option<Vec<u8>>,
        forward: Option<phigate_shipper::Poster>,
    ) -> std::io::Result<Self> {
        let dir = settings.dir.clone();
        let (publisher, forward_task) = forward
            .map(|poster| crate::forward::Forwarder::new(dir.clone(), settings.file_mode, poster))
            .unzip();
        let limits = BatchLimits {
            max_records: cfg.max_batch_records.get() as usize,
            max_bytes: cfg.max_batch_bytes.get() as usize,
            queue: cfg.queue_capacity.get() as usize,
        };
        let writer = Writer::spawn(Box::new(SegmentStore::new(settings).forwarding(publisher)), limits)?;
        Ok(AuditStage {
            writer,
            forward_task: std::sync::Mutex::new(forward_task),
            records: RecordBuilder::new(hmac_key.as_deref()),
            max_wait: Duration::from_millis(cfg.max_wait_ms.get().into()),
            dir,
        })
    }

    /// The resolved audit directory (what `phigate audit verify` should be pointed at).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends an operator record (`kind: "operator"`: `ts`, `action`, `details`) and returns once
    /// it is durable, in the same hash chain as the access records: an operator's action that
    /// changes what the gateway enforces (lifting an exfiltration block) is as tamper-evident
    /// as the accesses it concerns. Call it before acting, and do not act on an error.
    ///
    /// # Errors
    /// The record could not be made durable within `max_wait_ms` (the reason, as in metrics).
    pub async fn record_operator_action(
        &self,
        action: &str,
        details: &serde_json::Value,
    ) -> Result<(), &'static str> {
        let body = crate::record::operator_body(action, details);
        self.append(RecordKind::Operator, body).await
    }

    /// Appends a change that already took effect (a policy revision applied or refused, a
    /// listener certificate reloaded or refused) as an operator record whose `action` is the
    /// change's name and whose `details` are its allow-listed fields plus `trigger` and `at` (when
    /// it took effect). Returns once it is durable. Unlike [`AuditStage::record_operator_action`]
    /// the change is not held back: an error means the trail lacks it, not that it was undone.
    ///
    /// # Errors
    /// The record could not be made durable within `max_wait_ms` (the reason, as in metrics).
    pub async fn record_change(&self, event: &ChangeEvent) -> Result<(), &'static str> {
        let details = crate::record::change_details(event);
        let body = crate::record::operator_body(event.change.action(), &details);
        self.append(RecordKind::Operator, body).await
    }

    async fn write(&self, ctx: &RequestCtx, phase: Phase) -> Result<(), &'static str> {
        let completed = (phase != Phase::Attempt).then(|| ctx.started.elapsed());
        let body = self.records.build(ctx, phase, completed);
        self.append(RecordKind::Access(phase), body).await
    }

    async fn append(&self, kind: RecordKind, body: Vec<u8>) -> Result<(), &'static str> {
        let res = self.writer.append(PendingRecord { kind, body }, self.max_wait).await;
        if let Err(reason) = res {
            // Sink failures are counted by the writer, per record; these never reached it.
            if matches!(reason, "timeout" | "queue_full" | "writer_stopped") {
                metrics::FAILURES.with_label_values(&[reason]).inc();
            }
            if reason == "timeout" && matches!(kind, RecordKind::Access(_)) {
                metrics::WAIT_TIMEOUTS.inc();
            }
        }
        res
    }
}

#[async_trait]
impl Stage for AuditStage {
    fn name(&self) -> &'static str {
        "audit"
    }

    /// Not ready while the sink cannot make records durable; ready again after the next
    /// successful write or probe (the writer probes every second while broken).
    fn readiness(&self) -> Readiness {
        match self.writer.health.broken_reason() {
            None => Readiness::Ready(None),
            Some(reason) => Readiness::NotReady(Cow::Owned(reason)),
        }
    }

    /// The forwarding task (`forward:`), once.
    fn background_tasks(&self) -> Vec<phigate_plugin::BackgroundTask> {
        let task = self.forward_task.lock().unwrap_or_else(|e| e.into_inner()).take();
        task.map(|t| -> phigate_plugin::BackgroundTask { Box::pin(t.run()) }).into_iter().collect()
    }

    /// Appends the `attempt` record and returns only once it is durable: the gateway forwards
    /// after this returns, so no request reaches an upstream unrecorded (HIPAA 45 CFR
    /// 164.312(b)). Any failure, including waiting longer than `max_wait_ms`, is 503
    /// `audit_unavailable`.
    async fn on_request(&self, ctx: &mut RequestCtx) -> Result<Flow, Denial> {
        match self.write(ctx, Phase::Attempt).await {
            Ok(()) => Ok(Flow::Continue),
            Err(reason) => Err(Denial::new(ErrorCode::AuditUnavailable)
                .with_cause(format!("attempt record not durable: {reason}"))),
        }
    }

    /// Makes the `denied` record durable before the refusal (or local answer) is sent, so a
    /// process killed right after answering cannot lose the evidence of a refused access
    /// attempt. The answer is a refusal either way: a failure is logged and counted, and the
    /// record is then tried again in `on_complete`.
    async fn on_refused(&self, ctx: &mut RequestCtx) {
        match self.write(ctx, Phase::Denied).await {
            Ok(()) => {
                ctx.extensions.insert(DeniedRecorded);
            }
            Err(reason) => log::error!(
                "audit denied record for request {} not durable before the answer: {reason}",
                ctx.request_id.as_str()
            ),
        }
    }

    /// Appends `outcome` for forwarded requests and `denied` for the others (unless
    /// `on_refused` already made it durable). The response is already sent: a failure here can
    /// only be logged and counted.
    async fn on_complete(&self, ctx: &RequestCtx) {
        let phase = if ctx.response.forwarded { Phase::Outcome } else { Phase::Denied };
        if phase == Phase::Denied && ctx.extensions.get::<DeniedRecorded>().is_some() {
            return;
        }
        if let Err(reason) = self.write(ctx, phase).await {
            log::error!(
                "audit {} record for request {} not durable: {reason}",
                phase.as_str(),
                ctx.request_id.as_str()
            );
        }
    }
}
