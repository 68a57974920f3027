//! Hot reload: a file watcher on the policy and data directories. Changes are debounced (editors
//! write several events per save), then the revision is rebuilt on a blocking thread, off the
//! request path, and swapped in only if it compiles and passes its tests.

use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};

use crate::stage::Inner;

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
        let _ = tokio::task::spawn_blocking(move || inner.reload()).await;
    }
    inner.watching.send_replace(false);
    drop(watcher);
}
