//! Hot reload: a file watcher on the policy and data directories. Changes are debounced (editors
//! write several events per save), then the revision is rebuilt on a blocking thread, off the
//! request path, and swapped in only if it compiles and passes its tests. Each applied or
//! rejected revision is reported as a change (for the audit trail) once it happened: reporting
//! only queues, so neither a reload nor a request waits for the trail.

use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use phigate_plugin::{Change, ChangeEvent, ChangeTrigger};

use crate::events;
use crate::revision::{Revision, Sources};
use crate::stage::{Inner, ReloadOutcome};
use crate::LoadError;

/// Quiet period after the last file event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Runs for the life of the process.
pub(crate) async fn watch(inner: Arc<Inner>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let handler = move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if !matches!(ev.kind, EventKind::Access(_)) {
                let _ = tx.send(());
            }
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            log::error!("policy watcher could not start ({e}); reload on SIGHUP only");
            return;
        }
    };
    let s = &inner.settings;
    let mut dirs = vec![s.dir.clone()];
    if !s.data_dir.starts_with(&s.dir) && s.data_dir.is_dir() {
        dirs.push(s.data_dir.clone());
    }
    if let Some(sh) = &s.shadow {
        for d in [&sh.dir, &sh.data_dir] {
            if d.is_dir() && !dirs.iter().any(|w| d.starts_with(w)) {
                dirs.push(d.clone());
            }
        }
    }
    for d in &dirs {
        if let Err(e) = watcher.watch(d, RecursiveMode::Recursive) {
            log::error!("cannot watch {}: {e}; reload on SIGHUP only", d.display());
            return;
        }
    }
    inner.watching.send_replace(true);
    while rx.recv().await.is_some() {
        loop {
            match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let inner = inner.clone();
        // The outcome is logged and counted inside `reload`.
        let _ = tokio::task::spawn_blocking(move || inner.reload(ChangeTrigger::Watch)).await;
    }
    inner.watching.send_replace(false);
    drop(watcher);
}

impl Inner {
    /// Reads, tests and compiles the files; swaps the revision in when it changed and passes.
    /// Applied and rejected revisions are reported as changes set off by `trigger`, under the
    /// reload lock so that reports keep the order of the swaps.
    pub(crate) fn reload(&self, trigger: ChangeTrigger) -> Result<ReloadOutcome, LoadError> {
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.reload_shadow();
        self.reload_active(trigger)
    }

    /// The shadow policy, reloaded with the active one: a new revision that compiles and passes
    /// its tests replaces it; a broken one is logged and counted (`shadow_rejected`) and the
    /// previous shadow keeps being compared. Not an enforcement change: not reported as one.
    fn reload_shadow(&self) {
        let (Some(sh), Some(slot)) = (&self.settings.shadow, &self.shadow) else { return };
        let current = slot.load_full();
        match self.changed_revision(&sh.dir, &sh.data_dir, &sh.entrypoint, &current.id).1 {
            Ok(None) => {}
            Ok(Some(rev)) => {
                log::info!(
                    "policy shadow revision {} loaded (was {}; compared, not enforced)",
                    rev.id,
                    current.id
                );
                events::RELOADS.with_label_values(&["shadow_applied"]).inc();
                slot.store(Arc::new(rev));
            }
            Err(e) => {
                events::RELOADS.with_label_values(&["shadow_rejected"]).inc();
                log::error!("policy shadow reload rejected, keeping shadow revision {}: {e}", current.id);
            }
        }
    }

    fn reload_active(&self, trigger: ChangeTrigger) -> Result<ReloadOutcome, LoadError> {
        let current = self.active.load_full();
        let s = &self.settings;
        let (attempted, attempt) = self.changed_revision(&s.dir, &s.data_dir, &s.entrypoint, &current.id);
        match attempt {
            Ok(None) => {
                events::RELOADS.with_label_values(&["unchanged"]).inc();
                Ok(ReloadOutcome::Unchanged(current.id.to_string()))
            }
            Ok(Some(rev)) => {
                let id = rev.id.to_string();
                self.active.store(Arc::new(rev));
                if let Some(c) = &self.cache {
                    c.invalidate_all();
                }
                events::revision_active(Some(&current.id), &id);
                self.revisions.send_replace(id.clone());
                events::RELOADS.with_label_values(&["applied"]).inc();
                log::info!("policy revision {id} active (was {})", current.id);
                let previous = Some(current.id.to_string());
                self.report(trigger, Change::PolicyRevisionApplied { previous, revision: id.clone() });
                Ok(ReloadOutcome::Applied(id))
            }
            Err(e) => {
                events::reload_rejected(attempted.as_deref(), &e);
                let active = current.id.to_string();
                let attempted = attempted.map(|a| a.to_string());
                self.report(trigger, Change::PolicyRevisionRejected { active, attempted, reason: e.class() });
                Err(e)
            }
        }
    }

    /// Reads the policies in `dir` with `data_dir`; unless they are still revision `current`
    /// (`Ok(None)`), tests and compiles them. Also returns the revision read, when the files
    /// could be read and changed.
    fn changed_revision(
        &self,
        dir: &std::path::Path,
        data_dir: &std::path::Path,
        entrypoint: &str,
        current: &str,
    ) -> (Option<Arc<str>>, Result<Option<Revision>, LoadError>) {
        let src = match Sources::read(dir, data_dir, &self.settings.gateway) {
            Ok(src) => src,
            Err(e) => return (None, Err(e)),
        };
        if *src.revision == *current {
            return (None, Ok(None));
        }
        let outcome = crate::stage::prepare(&self.settings, &src, entrypoint).map(Some);
        (Some(src.revision.clone()), outcome)
    }

    /// Reports a change when a sink is attached (the gateway records changes).
    pub(crate) fn report(&self, trigger: ChangeTrigger, change: Change) {
        if let Some(sink) = self.changes.get() {
            sink.emit(ChangeEvent::now(trigger, change));
        }
    }
}
