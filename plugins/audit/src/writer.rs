//! Group commit on a dedicated writer thread.
//!
//! Why a thread and not a task: `write` + `fdatasync` block for as long as the disk takes, and
//! must never run on an async worker. One long-lived thread also owns the chain head, so records
//! are chained without a lock. It is started when the stage is built, so it is running before the
//! gateway calls `on_request`, whether or not background tasks were spawned yet.
//!
//! Requests hand their serialized record to a bounded queue and await a oneshot. The thread takes
//! everything queued (up to the batch limits), makes it durable with one `fdatasync`, and answers
//! every waiter with that result: while one sync is running, the next batch fills up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::SinkError;
use crate::metrics;
use crate::record::Phase;
use crate::sink::{AuditSink, PendingRecord, RecordKind};

/// How often an idle writer ticks the sink (time-based checkpoints, probes while broken).
const TICK: Duration = Duration::from_secs(1);

/// Limits of one group commit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    pub(crate) max_records: usize,
    pub(crate) max_bytes: usize,
    pub(crate) queue: usize,
}

struct Job {
    record: PendingRecord,
    done: oneshot::Sender<Result<(), &'static str>>,
}

/// Sink health, shared with `readiness()`.
#[derive(Default)]
pub(crate) struct Health {
    broken: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Health {
    fn set(&self, res: &Result<(), SinkError>) {
        match res {
            Ok(()) => {
                if self.broken.swap(false, Ordering::AcqRel) {
                    log::info!("audit sink writable again");
                }
            }
            Err(e) => {
                if !self.broken.swap(true, Ordering::AcqRel) {
                    log::error!("audit sink broken, refusing requests: {e}");
                }
                if let Ok(mut r) = self.reason.lock() {
                    *r = Some(format!("audit sink {}", e.reason()));
                }
            }
        }
    }

    /// `None` when healthy, else a short operator-facing reason.
    pub(crate) fn broken_reason(&self) -> Option<String> {
        if !self.broken.load(Ordering::Acquire) {
            return None;
        }
        Some(
            self.reason.lock().ok().and_then(|r| r.clone()).unwrap_or_else(|| "audit sink broken".to_owned()),
        )
    }
}

/// The request side of the writer thread.
pub(crate) struct Writer {
    tx: SyncSender<Job>,
    pub(crate) health: Arc<Health>,
}

impl Writer {
    /// Probes the sink once (start-up recovery happens here, before any request), then starts
    /// the thread.
    pub(crate) fn spawn(mut sink: Box<dyn AuditSink>, limits: BatchLimits) -> std::io::Result<Self> {
        let health = Arc::new(Health::default());
        health.set(&sink.tick());
        let (tx, rx) = mpsc::sync_channel::<Job>(limits.queue);
        let h = Arc::clone(&health);
        std::thread::Builder::new()
            .name("phigate-audit-writer".into())
            .spawn(move || run(sink.as_mut(), &rx, limits, &h))?;
        Ok(Writer { tx, health })
    }

    /// Queues a record and waits, at most `max_wait`, until it is durable.
    ///
    /// # Errors
    /// The failure reason label: `queue_full`, `timeout`, `writer_stopped` or the sink's reason.
    pub(crate) async fn append(&self, record: PendingRecord, max_wait: Duration) -> Result<(), &'static str> {
        let (done, rx) = oneshot::channel();
        match self.tx.try_send(Job { record, done }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err("queue_full"),
            Err(TrySendError::Disconnected(_)) => return Err("writer_stopped"),
        }
        match tokio::time::timeout(max_wait, rx).await {
            Ok(Ok(res)) => res,
            Ok(Err(_)) => Err("writer_stopped"),
            Err(_) => Err("timeout"),
        }
    }
}

fn run(sink: &mut dyn AuditSink, rx: &mpsc::Receiver<Job>, limits: BatchLimits, health: &Health) {
    let by_phase = [Phase::Attempt, Phase::Outcome, Phase::Denied]
        .map(|p| metrics::RECORDS.with_label_values(&[p.as_str()]));
    let operator = metrics::RECORDS.with_label_values(&["operator"]);
    let mut jobs: Vec<Job> = Vec::with_capacity(limits.max_records);
    let mut records: Vec<PendingRecord> = Vec::with_capacity(limits.max_records);
    loop {
        match rx.recv_timeout(TICK) {
            Ok(job) => jobs.push(job),
            Err(RecvTimeoutError::Timeout) => {
                health.set(&sink.tick());
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let mut bytes = jobs[0].record.body.len();
        while jobs.len() < limits.max_records && bytes < limits.max_bytes {
            match rx.try_recv() {
                Ok(job) => {
                    bytes += job.record.body.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        // Move the records out so the sink sees a plain slice; the senders stay in `jobs`.
        let mut senders = Vec::with_capacity(jobs.len());
        for job in jobs.drain(..) {
            records.push(job.record);
            senders.push(job.done);
        }
        let started = Instant::now();
        let res = sink.append_batch(&records);
        metrics::FSYNC_SECONDS.observe(started.elapsed().as_secs_f64());
        health.set(&res);
        let answer = match &res {
            Ok(()) => {
                metrics::BATCHES.inc();
                for r in &records {
                    match r.kind {
                        RecordKind::Access(phase) => by_phase[phase as usize].inc(),
                        RecordKind::Operator => operator.inc(),
                    }
                }
                Ok(())
            }
            Err(e) => {
                metrics::FAILURES.with_label_values(&[e.reason()]).inc_by(records.len() as u64);
                Err(e.reason())
            }
        };
        records.clear();
        for done in senders {
            // A waiter that timed out has dropped its receiver: nothing to tell it.
            let _ = done.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{Receiver, Sender};

    use super::*;

    /// A sink that holds every batch until the test releases it: the writer's view of a disk
    /// that stopped answering.
    struct StuckSink {
        entered: Sender<()>,
        release: Receiver<()>,
    }

    impl AuditSink for StuckSink {
        fn name(&self) -> &'static str {
            "stuck"
        }
        fn append_batch(&mut self, _batch: &[PendingRecord]) -> Result<(), SinkError> {
            let _ = self.entered.send(());
            self.release.recv().map_err(|_| SinkError::WriterStopped)
        }
        fn tick(&mut self) -> Result<(), SinkError> {
            Ok(())
        }
    }

    fn stuck(queue: usize) -> (Writer, Receiver<()>, Sender<()>) {
        let (entered, entered_rx) = mpsc::channel();
        let (release_tx, release) = mpsc::channel();
        let limits = BatchLimits { max_records: 1, max_bytes: 1 << 20, queue };
        let w = Writer::spawn(Box::new(StuckSink { entered, release }), limits).unwrap();
        (w, entered_rx, release_tx)
    }

    fn record() -> PendingRecord {
        PendingRecord { kind: RecordKind::Access(Phase::Attempt), body: b"\"x\":1".to_vec() }
    }

    #[tokio::test]
    async fn wait_beyond_max_wait_is_a_timeout() {
        let (w, _entered, release) = stuck(8);
        assert_eq!(w.append(record(), Duration::from_millis(20)).await, Err("timeout"));
        release.send(()).unwrap();
    }

    #[tokio::test]
    async fn full_queue_refuses_at_once() {
        let (w, entered, release) = stuck(1);
        let first = w.append(record(), Duration::from_secs(60));
        tokio::pin!(first);
        // Poll once: the first record is queued, then taken by the (now stuck) writer.
        tokio::select! { biased; _ = &mut first => panic!("stuck sink answered"), () = async {} => {} }
        tokio::task::spawn_blocking(move || entered.recv().unwrap()).await.unwrap();
        let second = w.append(record(), Duration::from_secs(60));
        tokio::pin!(second);
        tokio::select! { biased; _ = &mut second => panic!("stuck sink answered"), () = async {} => {} }
        assert_eq!(w.append(record(), Duration::from_secs(60)).await, Err("queue_full"));
        release.send(()).unwrap();
        release.send(()).unwrap();
        assert_eq!(first.await, Ok(()));
        assert_eq!(second.await, Ok(()));
    }
}
