//! Changes to what the gateway enforces — the policy revision that decides, the certificate a
//! listener presents — routed into the audit trail, where an auditor finds which revision decided
//! from when and what changed a certificate (HIPAA 45 CFR 164.312(b)).
//!
//! Stages and the listener certificates report into a [`ChangeSink`] that only queues (bounded);
//! one background task appends each change to the trail through
//! [`AuditStage::record_change`]. So neither a reload nor a request worker ever waits for the
//! trail's disk. The change has already happened when it is recorded: a record that cannot be
//! made durable (audit unavailable) does not undo it; it is logged with fixed text, counted in
//! `phigate_change_records_failed_total{action,reason}`, shown in `phigate_change_records_pending`,
//! and tried again with backoff (250 ms doubling to 30 s) until the trail takes it, keeping the
//! order of changes (later ones wait in the queue) and the time the change took effect (`at`). A
//! change that finds the queue full is counted and lost. Without audit configured no sink is
//! attached and nothing is reported.

use std::sync::Arc;
use std::time::Duration;

use phigate_audit::AuditStage;
use phigate_plugin::{BackgroundTask, ChangeEvent, ChangeSink};
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::metrics::Metrics;

/// Changes waiting for the trail: far more than the reloads of one burst of edits.
const QUEUE: usize = 256;
/// First and longest pause before a failed change record is tried again.
const RETRY: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(30));

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
            record(&audit, &metrics, &event).await;
        }
    });
    (sink, task)
}

/// Appends one change, retrying with backoff until the trail takes it (order is kept: the next
/// change waits).
async fn record(audit: &AuditStage, metrics: &Metrics, event: &ChangeEvent) {
    let action = event.change.action();
    let mut pause = RETRY.0;
    let mut failures = 0u32;
    loop {
        match audit.record_change(event).await {
            Ok(()) if failures == 0 => return,
            Ok(()) => {
                metrics.change_records_pending.dec();
                log::info!(target: "phigate::audit", "change {action} recorded in the audit trail after {failures} failed attempts");
                return;
            }
            Err(reason) => {
                if failures == 0 {
                    not_recorded(metrics, action, reason);
                    metrics.change_records_pending.inc();
                }
                failures += 1;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY.1);
            }
        }
    }
}

/// A change took effect but is missing from the trail (for now, or for good when the queue was
/// full): alert on this.
fn not_recorded(metrics: &Metrics, action: &'static str, reason: &'static str) {
    metrics.change_records_failed.with_label_values(&[action, reason]).inc();
    log::error!(
        target: "phigate::audit",
        "change {action} took effect but could not be recorded in the audit trail: {reason}"
    );
}
