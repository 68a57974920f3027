//! Raising an alert: the block it imposes (here, and shared with the other replicas), its
//! counters and log line, and its line in the alerts file. Used by the stage for what this
//! replica counted, and by the task that counts over all replicas.

use std::sync::Arc;
use std::time::Instant;

use phigate_plugin::{Principal, RequestCtx};

use crate::alert::{self, Origin};
use crate::clock::Clock;
use crate::config::Action;
use crate::local::{key_of, Local};
use crate::metrics::{self, Stats};
use crate::shared::Shared;
use crate::state::Finding;
use crate::writer::AlertQueue;

/// What raising an alert touches.
pub(crate) struct Alerter {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) local: Arc<Local>,
    pub(crate) queue: AlertQueue,
    pub(crate) shared: Option<Shared>,
    pub(crate) stats: Arc<Stats>,
}

impl Alerter {
    /// Raises a finding of this replica's windows, tipped by the request in `ctx`.
    pub(crate) fn raise(&self, ctx: &RequestCtx, p: &Principal, f: &Finding, now: Instant) {
        let until = self.block(p, f, now);
        self.count(f, ctx.request_id.as_str(), "replica");
        match alert::line(f, ctx, p, (self.clock.wall(), now), until) {
            Some(line) => self.queue.push(line),
            None => self.queue.dropped("unserializable"),
        }
    }

    /// Raises a finding of the windows counted over all replicas, tipped by `origin`.
    pub(crate) fn raise_shared(&self, origin: &Origin, f: &Finding) {
        let now = self.clock.now();
        let until = self.block(&origin.principal, f, now);
        self.count(f, origin.request_id.as_str(), "all_replicas");
        match alert::shared_line(f, origin, (self.clock.wall(), now), until) {
            Some(line) => self.queue.push(line),
            None => self.queue.dropped("unserializable"),
        }
    }

    /// For a `block` finding: blocks the principal here and announces it; returns the end.
    fn block(&self, p: &Principal, f: &Finding, now: Instant) -> Option<Instant> {
        let until = (f.action == Action::Block).then(|| now + f.block)?;
        if !self.local.blocks.block(&key_of(p), until, now) {
            metrics::BLOCKS_NOT_RECORDED.inc();
            log::error!("exfil block not recorded: max_principals blocks already in force");
        }
        if let Some(shared) = &self.shared {
            shared.publish(&p.issuer, p.subject.as_str(), until);
        }
        Some(until)
    }

    fn count(&self, f: &Finding, request_id: &str, counted_on: &str) {
        metrics::ALERTS.with_label_values(&[f.rule.as_str(), f.action.as_str()]).inc();
        Stats::bump(&self.stats.alerts, 1);
        log::warn!(
            "exfil alert rule={} action={} observed={} threshold={} counted_on={counted_on} request_id={request_id}",
            f.rule.as_str(),
            f.action.as_str(),
            f.observed,
            f.threshold,
        );
    }
}
