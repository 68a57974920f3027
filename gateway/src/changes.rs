//! Changes to what the gateway enforces — the policy revision that decides, the certificate a
//! listener presents — routed into the audit trail, where an auditor finds which revision decided
//! from when and what changed a certificate (HIPAA 45 CFR 164.312(b)).
//!
//! Stages and the listener certificates report into a [`ChangeSink`] that only queues (bounded);
//! one background task appends each change to the trail through
//! [`AuditStage::record_change`]. So neither a reload nor a request worker ever waits for the
//! trail's disk. The change has already happened when it is recorded: a record that cannot be
//! made durable (queue full, audit unavailable) does not undo it; it is logged with fixed text and
//! counted in `phigate_change_records_failed_total{action,reason}`. Without audit configured no
//! sink is attached and nothing is reported.

use std::sync::Arc;

use phigate_audit::AuditStage;
use phigate_plugin::{BackgroundTask, ChangeEvent, ChangeSink};
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::metrics::Metrics;

/// Changes waiting for the trail: far more than the reloads of one burst of edits.
const QUEUE: usize = 256;

/// A sink whose changes the returned task appends to `audit`. Run the task for the life of the
/// process; changes reported before it starts wait in the queue.
pub fn route_to_audit(audit: Arc<AuditStage>, metrics: Arc<Metrics>) -> (ChangeSink, BackgroundTask) {
    let (tx, mut rx) = mpsc::channel::<ChangeEvent>(QUEUE);
    let on_drop = metrics.clone();
    let sink = ChangeSink::new(move |event| match tx.try_send(event) {
        Ok(()) => {}
        Err(TrySendError::Full(e)) => not_recorded(&on_drop, e.change.action(), "queue_full"),
        Err(TrySendError::Closed(e)) => not_recorded(&on_drop, e.change.action(), "router_stopped"),
    });
    let task = Box::pin(async move {
        while let Some(event) = rx.recv().await {
            if let Err(reason) = audit.record_change(&event).await {
                not_recorded(&metrics, event.change.action(), reason);
            }
        }
    });
    (sink, task)
}

/// A change took effect but is missing from the trail: alert on this.
fn not_recorded(metrics: &Metrics, action: &'static str, reason: &'static str) {
    metrics.change_records_failed.with_label_values(&[action, reason]).inc();
    log::error!(
        target: "phigate::audit",
        "change {action} took effect but could not be recorded in the audit trail: {reason}"
    );
}
