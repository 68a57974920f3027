//! The alert writer: a background task fed by a bounded channel.
//!
//! A request that raises an alert only serializes it and `try_send`s the line: it never waits for
//! the file, and when the queue is full the alert is dropped and counted rather than holding a
//! pingora worker (an alert storm must not become a denial of service). The task batches what is
//! queued into one append; `tokio::fs` runs the blocking writes on tokio's blocking pool.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use crate::error::FlushError;
use crate::metrics::{self, Stats};

/// Largest batch appended by one write, in bytes.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// What the queue carries.
#[derive(Debug)]
pub(crate) enum Msg {
    /// One alert: a JSON object followed by `\n`.
    Line(Vec<u8>),
    /// Answer once everything queued before is written and synced.
    Flush(oneshot::Sender<Result<(), FlushError>>),
}

/// Opens the alerts file for appending, creating it readable by the gateway only: alerts name
/// principals and patients.
pub(crate) fn open_alerts_file(path: &Path) -> io::Result<File> {
    // The directory is created like the audit trail's (owner only): alerts name principals and
    // patients.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

/// The request side of the queue.
#[derive(Debug, Clone)]
pub(crate) struct AlertQueue {
    tx: mpsc::Sender<Msg>,
    stats: Arc<Stats>,
}

impl AlertQueue {
    /// Queues one line without waiting; a full or closed queue drops it and counts the drop.
    pub(crate) fn push(&self, line: Vec<u8>) {
        let reason = match self.tx.try_send(Msg::Line(line)) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(_)) => "full",
            Err(mpsc::error::TrySendError::Closed(_)) => "closed",
        };
        self.dropped(reason);
    }

    /// Counts (and sometimes logs) one alert that will not reach the file.
    pub(crate) fn dropped(&self, reason: &'static str) {
        metrics::DROPPED.with_label_values(&[reason]).inc();
        let n = Stats::bump(&self.stats.dropped, 1);
        // Logged on the first drop and then at powers of two, so a storm cannot flood the log.
        if n.is_power_of_two() {
            log::warn!("exfil alert dropped (queue {reason}); {n} dropped so far");
        }
    }

    /// Waits until everything queued before this call is on disk.
    pub(crate) async fn flush(&self) -> Result<(), FlushError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Flush(tx)).await.map_err(|_| FlushError::WriterStopped)?;
        rx.await.map_err(|_| FlushError::WriterStopped)?
    }
}

/// The task side of the queue, until the gateway spawns it.
#[derive(Debug)]
pub(crate) struct WriterTask {
    rx: mpsc::Receiver<Msg>,
    file: File,
    path: PathBuf,
    reopen: Arc<AtomicBool>,
    stats: Arc<Stats>,
    healthy: Arc<AtomicBool>,
    /// Where each appended batch goes next (`webhook:`).
    pub(crate) webhook: Option<phigate_shipper::Handoff>,
}

/// Shared between the stage and its writer.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriterFlags {
    /// False while the alerts file cannot be written (readiness).
    pub(crate) healthy: Arc<AtomicBool>,
    /// Set by `reload()` (SIGHUP): reopen `path` before the next write, so that a file moved
    /// away by log rotation is replaced by a new one.
    pub(crate) reopen: Arc<AtomicBool>,
}

/// A queue of `capacity` alerts and the task draining it into `file` (opened at `path`).
pub(crate) fn channel(
    capacity: usize,
    (file, path): (File, PathBuf),
    stats: Arc<Stats>,
    flags: &WriterFlags,
) -> (AlertQueue, WriterTask) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let task = WriterTask {
        rx,
        file,
        path,
        reopen: flags.reopen.clone(),
        stats: stats.clone(),
        healthy: flags.healthy.clone(),
        webhook: None,
    };
    (AlertQueue { tx, stats }, task)
}

impl WriterTask {
    /// Runs until every sender is gone and the queue is drained.
    pub(crate) async fn run(self) {
        let WriterTask { mut rx, file, path, reopen, stats, healthy, webhook } = self;
        let mut file = tokio::fs::File::from_std(file);
        let mut buf = Vec::with_capacity(64 << 10);
        let mut waiters = Vec::new();
        // A write failure since the last flush, reported to the next flush.
        let mut failed_since_flush = false;
        while let Some(first) = rx.recv().await {
            let mut lines = 0u64;
            let mut msg = Some(first);
            while let Some(m) = msg.take() {
                match m {
                    Msg::Line(l) => {
                        buf.extend_from_slice(&l);
                        lines += 1;
                    }
                    Msg::Flush(w) => waiters.push(w),
                }
                if buf.len() < MAX_BATCH_BYTES {
                    msg = rx.try_recv().ok();
                }
            }
            if reopen.swap(false, Ordering::AcqRel) {
                reopen_file(&mut file, &path).await;
            }
            if !buf.is_empty() {
                let res = append(&mut file, &buf).await;
                failed_since_flush |= res.is_err();
                record(&stats, &healthy, res, lines);
                // Delivered even when the file failed: the SOC still hears of it.
                if let Some(handoff) = &webhook {
                    handoff.offer(&buf);
                }
                buf.clear();
            }
            if !waiters.is_empty() {
                let synced = file.sync_data().await;
                failed_since_flush |= synced.is_err();
                let answer = if failed_since_flush { Err(FlushError::Io) } else { Ok(()) };
                failed_since_flush = false;
                for w in waiters.drain(..) {
                    let _ = w.send(answer);
                }
            }
        }
        let _ = file.flush().await;
    }
}

fn record(stats: &Stats, healthy: &AtomicBool, res: io::Result<()>, lines: u64) {
    match res {
        Ok(()) => {
            Stats::bump(&stats.written, lines);
            if !healthy.swap(true, Ordering::AcqRel) {
                log::info!("exfil alerts file writable again");
            }
        }
        Err(e) => {
            Stats::bump(&stats.write_failures, lines);
            metrics::WRITE_FAILURES.inc_by(lines);
            if healthy.swap(false, Ordering::AcqRel) {
                log::error!("exfil alerts file not writable, {lines} alert lines lost: {e}");
            }
        }
    }
}

/// Replaces `file` with a fresh handle on `path`; on failure keeps writing to the old one.
async fn reopen_file(file: &mut tokio::fs::File, path: &Path) {
    let _ = file.flush().await;
    let p = path.to_path_buf();
    match tokio::task::spawn_blocking(move || open_alerts_file(&p)).await {
        Ok(Ok(f)) => *file = tokio::fs::File::from_std(f),
        Ok(Err(e)) => log::error!("exfil alerts file not reopened, keeping the old handle: {e}"),
        Err(e) => log::error!("exfil alerts file not reopened, keeping the old handle: {e}"),
    }
}

async fn append(file: &mut tokio::fs::File, buf: &[u8]) -> io::Result<()> {
    file.write_all(buf).await?;
    // tokio's File finishes the write on the blocking pool; flush waits for it (and reports it).
    file.flush().await
}
