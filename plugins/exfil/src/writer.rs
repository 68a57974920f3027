//! The alert writer: a background task fed by a bounded channel.
//!
//! A request that raises an alert only serializes it and `try_send`s the line: it never waits for
//! the file, and when the queue is full the alert is dropped and counted rather than holding a
//! pingora worker (an alert storm must not become a denial of service). The task batches what is
//! queued into one append; `tokio::fs` runs the blocking writes on tokio's blocking pool.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
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
    stats: Arc<Stats>,
    healthy: Arc<AtomicBool>,
}

/// A queue of `capacity` alerts and the task draining it into `file`.
pub(crate) fn channel(
    capacity: usize,
    file: File,
    stats: Arc<Stats>,
    healthy: Arc<AtomicBool>,
) -> (AlertQueue, WriterTask) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (AlertQueue { tx, stats: stats.clone() }, WriterTask { rx, file, stats, healthy })
}

impl WriterTask {
    /// Runs until every sender is gone and the queue is drained.
    pub(crate) async fn run(self) {
        let WriterTask { mut rx, file, stats, healthy } = self;
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
            if !buf.is_empty() {
                let res = append(&mut file, &buf).await;
                failed_since_flush |= res.is_err();
                record(&stats, &healthy, res, lines);
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

async fn append(file: &mut tokio::fs::File, buf: &[u8]) -> io::Result<()> {
    file.write_all(buf).await?;
    // tokio's File finishes the write on the blocking pool; flush waits for it (and reports it).
    file.flush().await
}
