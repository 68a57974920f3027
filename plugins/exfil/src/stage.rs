//! The [`ExfilStage`]: refuses blocked principals in `on_request`, feeds the windows and raises
//! alerts in `on_complete`. Operators list and lift blocks through [`lift`].

mod lift;

pub use lift::{checked_reason, BlockView, MAX_REASON_BYTES};

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use phigate_plugin::{async_trait, BackgroundTask, Denial, ErrorCode, Flow, Readiness, RequestCtx, Stage};

use crate::alert::Origin;
use crate::clock::Clock;
use crate::config::{PagingMeasure, SharedSettings};
use crate::error::FlushError;
use crate::local::{key_of, Local};
use crate::metrics::{self, ExfilStats, Stats};
use crate::raise::Alerter;
use crate::response::{self, ResponseFacts};
use crate::rules::Rules;
use crate::shared::{Counting, Shared, SharedTask, WindowsTask};
use crate::state::{Observation, PrincipalState, Tally};
use crate::writer::{self, AlertQueue, WriterFlags, WriterTask};

/// The exfiltration watch stage. Built by [`ExfilConfig::build`](crate::ExfilConfig::build).
pub struct ExfilStage {
    rules: Rules,
    clock: Arc<dyn Clock>,
    /// This replica's windows and blocks (the Redis task lifts them too).
    local: Arc<Local>,
    queue: AlertQueue,
    task: Mutex<Option<WriterTask>>,
    /// Blocks shared with the other replicas (`shared:`), and its task until handed out.
    shared: Option<Shared>,
    shared_task: Mutex<Option<SharedTask>>,
    webhook_task: Mutex<Option<phigate_shipper::ShipperTask>>,
    /// Raises alerts (shared with the task counting over the replicas).
    alerter: Arc<Alerter>,
    /// Window additions to count over the replicas (`shared.windows`), and its task.
    counting: Option<Counting>,
    windows_task: Mutex<Option<WindowsTask>>,
    stats: Arc<Stats>,
    flags: WriterFlags,
    path: PathBuf,
}

impl std::fmt::Debug for ExfilStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExfilStage").field("alerts_path", &self.path).finish_non_exhaustive()
    }
}

impl ExfilStage {
    pub(crate) fn new(
        rules: Rules,
        (queue_capacity, max_principals): (usize, u64),
        (file, path): (File, PathBuf),
        shared: Option<SharedSettings>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let stats = Arc::new(Stats::default());
        let flags = WriterFlags { healthy: Arc::new(AtomicBool::new(true)), ..WriterFlags::default() };
        let (queue, task) = writer::channel(queue_capacity, (file, path.clone()), stats.clone(), &flags);
        let local = Arc::new(Local::new(max_principals, rules.longest_window() + Duration::from_secs(1)));
        let windows = shared.as_ref().and_then(|s| Some((s.client.clone(), s.windows.clone()?, s.timeout)));
        let (shared, shared_task) = match shared {
            Some(s) => {
                let (handle, task) = Shared::new(s, local.clone(), clock.clone(), stats.clone());
                (Some(handle), Some(task))
            }
            None => (None, None),
        };
        let alerter = Arc::new(Alerter {
            clock: clock.clone(),
            local: local.clone(),
            queue: queue.clone(),
            shared: shared.clone(),
            stats: stats.clone(),
        });
        let (counting, windows_task) = match windows {
            Some(settings) => {
                let (c, t) = WindowsTask::new(settings, rules.clone(), alerter.clone());
                (Some(c), Some(t))
            }
            None => (None, None),
        };
        ExfilStage {
            rules,
            clock,
            local,
            queue,
            task: Mutex::new(Some(task)),
            shared,
            shared_task: Mutex::new(shared_task),
            webhook_task: Mutex::new(None),
            alerter,
            counting,
            windows_task: Mutex::new(windows_task),
            stats,
            flags,
            path,
        }
    }

    /// The stage with alerts also handed to a webhook: the writer passes each batch on after
    /// appending it.
    pub(crate) fn with_webhook(
        self,
        webhook: Option<(phigate_shipper::Handoff, phigate_shipper::ShipperTask)>,
    ) -> Self {
        if let Some((handoff, task)) = webhook {
            if let Some(writer) = self.task.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                writer.webhook = Some(handoff);
            }
            *self.webhook_task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        }
        self
    }

    /// The resolved alerts file.
    pub fn alerts_path(&self) -> &Path {
        &self.path
    }

    /// This stage's counters.
    pub fn stats(&self) -> ExfilStats {
        self.stats.snapshot()
    }

    /// Waits until every alert raised before this call is appended and synced to the alerts file
    /// (for tests, and for a graceful shutdown).
    ///
    /// # Errors
    /// [`FlushError::WriterStopped`] when the writer task is not running, [`FlushError::Io`]
    /// when a line since the previous flush could not be written.
    pub async fn flush(&self) -> Result<(), FlushError> {
        self.queue.flush().await
    }
}

/// What `ctx` contributes to the windows; `off_hours` as judged by the caller.
fn observation(ctx: &RequestCtx, off_hours: bool) -> Observation<'_> {
    let fhir = ctx.fhir.as_ref();
    let facts = ctx.extensions.get::<ResponseFacts>();
    let read_id = fhir
        .filter(|f| {
            matches!(f.interaction, phigate_plugin::Interaction::Read | phigate_plugin::Interaction::Vread)
        })
        .and_then(|f| f.id.as_deref());
    // A bulk export's file holds the tenant's records by design: the export is watched when it
    // starts (`bulk_exports`), not again as patients touched and entries paged per file.
    let export_file = ctx.bulk.as_ref().is_some_and(|b| b.kind == phigate_plugin::BulkKind::File);
    Observation {
        patients: fhir.map_or(&[], |f| f.patients.as_slice()),
        // Recorded by a stage that already read the body (policy verification), else our own read.
        response_patients: match (&ctx.response.patients, facts) {
            _ if export_file => &[],
            (Some(p), _) => p.as_slice(),
            (None, f) => f.map_or(&[], |f| f.patients.as_slice()),
        },
        // 0: nothing was written (connection lost); the denial's status, if any, says more.
        status: ctx.response.status.filter(|s| *s != 0).or_else(|| ctx.error.map(|c| c.status().as_u16())),
        forwarded: ctx.response.forwarded,
        entries: ctx.response.entries.or_else(|| facts.and_then(|f| f.entries)).filter(|_| !export_file),
        interaction: fhir.map(|f| f.interaction),
        read_id,
        policy_alert: ctx.decision.as_ref().and_then(|d| d.obligations.alert.as_deref()),
        off_hours,
        withheld: u64::from(ctx.response.withheld.unwrap_or(0))
            + u64::from(ctx.error == Some(ErrorCode::SecurityLabelNotPermitted)),
        export_started: ctx.response.forwarded
            && ctx.response.status == Some(202)
            && fhir.and_then(|f| f.operation.as_deref()) == Some("export"),
    }
}

#[async_trait]
impl Stage for ExfilStage {
    fn name(&self) -> &'static str {
        "exfil"
    }

    /// Not ready while the alerts file cannot be written (alerts are being lost). While blocks
    /// are not shared through Redis the stage stays ready (each replica still blocks what it
    /// sees: this is detection, not authorization), with a detail saying so.
    fn readiness(&self) -> Readiness {
        if !self.flags.healthy.load(Ordering::Acquire) {
            return Readiness::NotReady(Cow::Borrowed("exfil alerts file not writable"));
        }
        Readiness::Ready(self.shared.as_ref().and_then(Shared::trouble).map(str::to_owned))
    }

    /// SIGHUP: the writer reopens `alerts_path` before its next write (log rotation by rename).
    fn reload(&self) {
        self.flags.reopen.store(true, Ordering::Release);
    }

    /// The alert writer and, with `shared`, the Redis link. Returned once; until they run,
    /// alerts and blocks to share wait in their bounded queues.
    fn background_tasks(&self) -> Vec<BackgroundTask> {
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        let shared = self.shared_task.lock().unwrap_or_else(|e| e.into_inner()).take();
        let webhook = self.webhook_task.lock().unwrap_or_else(|e| e.into_inner()).take();
        let windows = self.windows_task.lock().unwrap_or_else(|e| e.into_inner()).take();
        let writer = task.map(|t| -> BackgroundTask { Box::pin(t.run()) });
        writer
            .into_iter()
            .chain(shared.map(|t| -> BackgroundTask { Box::pin(t.run()) }))
            .chain(webhook.map(|t| -> BackgroundTask { Box::pin(t.run()) }))
            .chain(windows.map(|t| -> BackgroundTask { Box::pin(t.run()) }))
            .collect()
    }

    /// Refuses a principal blocked here or by another replica with 403 `principal_blocked`,
    /// before audit forwards anything. Never waits for Redis: both are in-memory lookups.
    async fn on_request(&self, ctx: &mut RequestCtx) -> Result<Flow, Denial> {
        let Some(p) = ctx.principal.as_deref() else {
            return Ok(Flow::Continue);
        };
        let now = self.clock.now();
        if self.local.blocks.is_blocked(&key_of(p), now)
            || self.shared.as_ref().is_some_and(|s| s.is_blocked(&p.issuer, p.subject.as_str(), now))
        {
            metrics::BLOCKED.inc();
            Stats::bump(&self.stats.blocked_requests, 1);
            return Err(Denial::new(ErrorCode::PrincipalBlocked)
                .with_cause("principal blocked after an exfiltration alert"));
        }
        Ok(Flow::Continue)
    }

    /// Notes the patients and Bundle entries a buffered response contained (only when another
    /// stage buffered it: this stage never asks for buffering, so it adds no latency), unless
    /// that stage already recorded them in `ctx.response`.
    fn on_buffered_response(&self, ctx: &mut RequestCtx, body: &[u8]) -> Result<(), Denial> {
        // A stage before this one may have read the body already (policy verification records
        // the patients and entries it saw): parse only for what is still missing.
        let patients = self.rules.distinct.is_some()
            && self.rules.count_response_patients
            && ctx.response.patients.is_none();
        let entries = self.rules.paging.is_some()
            && self.rules.measure == PagingMeasure::Entries
            && ctx.response.entries.is_none();
        if patients || entries {
            let mut found = response::facts(body);
            if !patients {
                found.patients.clear();
            }
            ctx.extensions.insert(found);
        }
        Ok(())
    }

    /// Feeds the windows with what the request did and raises the alerts that fire.
    async fn on_complete(&self, ctx: &RequestCtx) {
        let Some(principal) = ctx.principal.as_ref() else {
            return;
        };
        let p = &**principal;
        // A blocked principal's refused requests were counted in on_request; they must not
        // re-trigger the rules that blocked it.
        if ctx.error == Some(ErrorCode::PrincipalBlocked) {
            return;
        }
        let key = key_of(p);
        let now = self.clock.now();
        let state =
            self.local.principals.get_with_by_ref(&key, || Arc::new(Mutex::new(PrincipalState::default())));
        // Judged by the hours of the tenant whose data it is: the one the request addressed
        // (`routes[].tenant`), else the principal's.
        let tenant = ctx.tenant.as_ref().or(p.tenant.as_ref()).map(|t| t.as_str());
        let off_hours =
            self.rules.off_hours.as_ref().is_some_and(|o| o.fires_for(tenant, &p.roles, self.clock.wall()));
        let mut tally = self.counting.as_ref().map(|_| Tally::default());
        let found = {
            let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
            st.observe(&self.rules, now, &observation(ctx, off_hours), tally.as_mut())
        };
        for f in &found {
            self.alerter.raise(ctx, p, f, now);
        }
        if let (Some(counting), Some(tally)) = (&self.counting, tally) {
            if !tally.is_empty() {
                counting.add(Origin::of(ctx, principal), tally);
            }
        }
    }
}
