//! Prometheus metrics (default registry) and the stage's own counters. Labels come from bounded
//! sets (rule, action, reason): never a principal, tenant-user or patient id.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    // A second registration (another stage instance in one process) keeps the first.
    let _ = prometheus::default_registry().register(Box::new(c.clone()));
    c
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|_| invalid(name));
    register(c)
}

fn counter(name: &str, help: &str) -> IntCounter {
    register(IntCounter::new(name, help).unwrap_or_else(|_| invalid_counter(name)))
}

#[cold]
fn invalid(name: &str) -> IntCounterVec {
    log::error!("exfil metric {name} could not be created");
    IntCounterVec::new(Opts::new("phigate_exfil_invalid", "invalid"), &[])
        .unwrap_or_else(|_| std::process::abort())
}

#[cold]
fn invalid_counter(name: &str) -> IntCounter {
    log::error!("exfil metric {name} could not be created");
    IntCounter::new("phigate_exfil_invalid", "invalid").unwrap_or_else(|_| std::process::abort())
}

/// Alerts raised, by rule and action (queued for the alerts file; drops are counted apart).
pub(crate) static ALERTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "phigate_exfil_alerts_total",
        "Exfiltration alerts raised, by rule and action.",
        &["rule", "action"],
    )
});

/// Requests refused because their principal is blocked.
pub(crate) static BLOCKED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "phigate_exfil_blocked_requests_total",
        "Requests refused with principal_blocked because an exfiltration rule blocked the principal.",
    )
});

/// Alerts not written because the queue was full (`full`) or the writer had stopped (`closed`).
pub(crate) static DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "phigate_exfil_alerts_dropped_total",
        "Exfiltration alerts dropped before the writer, by reason (full, closed, unserializable).",
        &["reason"],
    )
});

/// Alert lines the writer failed to append.
/// Webhook POSTs by result: `delivered`, or why one failed (`connect`, `timeout`, `status`).
pub(crate) static WEBHOOK_POSTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "phigate_exfil_webhook_posts_total",
        "Alert POSTs to the webhook, by result (delivered, connect, timeout, status).",
        &["result"],
    )
});

/// Alert lines the webhook accepted.
pub(crate) static WEBHOOK_LINES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter("phigate_exfil_webhook_alerts_delivered_total", "Alert lines the webhook accepted (2xx).")
});

/// The webhook shipper's counters.
pub(crate) fn webhook() -> phigate_shipper::Metrics {
    phigate_shipper::Metrics {
        posts: WEBHOOK_POSTS.clone(),
        delivered: WEBHOOK_LINES.clone(),
        dropped: WEBHOOK_DROPPED.clone(),
    }
}

/// Alert lines that will not reach the webhook (hand-off full, or the oldest dropped while the
/// collector was down); they are in the alerts file.
pub(crate) static WEBHOOK_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "phigate_exfil_webhook_dropped_total",
        "Alert lines not delivered to the webhook (queue full while it was down); they are in the alerts file.",
    )
});

pub(crate) static WRITE_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "phigate_exfil_alert_write_failures_total",
        "Exfiltration alert lines that could not be appended to the alerts file.",
    )
});

/// Blocks that could not be recorded because `max_principals` blocks were already in force.
pub(crate) static BLOCKS_NOT_RECORDED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "phigate_exfil_blocks_not_recorded_total",
        "Block actions not applied because max_principals blocks were already in force.",
    )
});

/// Blocks lifted by an operator on this replica (`ExfilStage::unblock`).
pub(crate) static BLOCKS_LIFTED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "phigate_exfil_blocks_lifted_total",
        "Principals whose block an operator lifted on this replica (each also an alert line).",
    )
});

/// Failures of the Redis link of `shared`, by kind (`connect`, `timeout`, `io`, `tls`, `command`,
/// `malformed`, `queue_full`).
pub(crate) static SHARED_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "phigate_exfil_shared_errors_total",
        "Failures sharing exfiltration blocks through Redis, by kind.",
        &["kind"],
    )
});

/// 1 while blocks are shared through Redis, 0 while they are not.
pub(crate) static SHARED_UP: LazyLock<IntGauge> = LazyLock::new(|| {
    let g = IntGauge::new("phigate_exfil_shared_up", "1 while exfiltration blocks are shared through Redis.")
        .unwrap_or_else(|_| {
            log::error!("exfil metric phigate_exfil_shared_up could not be created");
            IntGauge::new("phigate_exfil_invalid_gauge", "invalid").unwrap_or_else(|_| std::process::abort())
        });
    register(g)
});

/// Requests' additions to the windows counted over the replicas (`shared.windows`), by result
/// (`counted`, or `dropped`: the queue to the task was full, or Redis was unavailable).
pub(crate) static SHARED_WINDOWS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "phigate_exfil_shared_windows_total",
        "Requests' additions to the exfiltration windows counted over all replicas through Redis, by result.",
        &["result"],
    )
});

/// Counters of one stage instance (the Prometheus ones are process-wide).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) alerts: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) blocked_requests: AtomicU64,
    pub(crate) written: AtomicU64,
    pub(crate) write_failures: AtomicU64,
    pub(crate) shared_published: AtomicU64,
    pub(crate) shared_received: AtomicU64,
    pub(crate) shared_errors: AtomicU64,
    pub(crate) shared_dropped: AtomicU64,
    pub(crate) blocks_lifted: AtomicU64,
    pub(crate) shared_lifts_published: AtomicU64,
    pub(crate) shared_lifts_received: AtomicU64,
    pub(crate) shared_window_batches: AtomicU64,
    pub(crate) shared_window_dropped: AtomicU64,
}

/// A snapshot of one stage's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExfilStats {
    /// Alerts raised (queued or dropped).
    pub alerts: u64,
    /// Alerts dropped because the queue was full or the writer had stopped.
    pub dropped: u64,
    /// Requests refused with `principal_blocked`.
    pub blocked_requests: u64,
    /// Alert lines appended to the file.
    pub written: u64,
    /// Alert lines the writer failed to append.
    pub write_failures: u64,
    /// Blocks of this replica recorded and announced in Redis (not counting those Redis already
    /// held as long).
    pub shared_published: u64,
    /// Blocks of other replicas applied here (announced or loaded at connection).
    pub shared_received: u64,
    /// Failed Redis connections or exchanges, and malformed announcements.
    pub shared_errors: u64,
    /// Blocks or lifts not shared because the queue to the Redis task was full.
    pub shared_dropped: u64,
    /// Lifts an operator asked of this replica (`unblock`), whether or not a block was in force.
    pub blocks_lifted: u64,
    /// Lifts of this replica recorded and announced in Redis.
    pub shared_lifts_published: u64,
    /// Lifts of other replicas applied here (announced, or recorded and loaded at connection).
    pub shared_lifts_received: u64,
    /// Batches of this replica's window additions counted in Redis (`shared.windows`).
    pub shared_window_batches: u64,
    /// Requests' window additions not counted over the replicas (queue full, Redis unavailable).
    pub shared_window_dropped: u64,
}

impl Stats {
    pub(crate) fn bump(c: &AtomicU64, n: u64) -> u64 {
        c.fetch_add(n, Ordering::Relaxed) + n
    }

    pub(crate) fn snapshot(&self) -> ExfilStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ExfilStats {
            alerts: get(&self.alerts),
            dropped: get(&self.dropped),
            blocked_requests: get(&self.blocked_requests),
            written: get(&self.written),
            write_failures: get(&self.write_failures),
            shared_published: get(&self.shared_published),
            shared_received: get(&self.shared_received),
            shared_errors: get(&self.shared_errors),
            shared_dropped: get(&self.shared_dropped),
            blocks_lifted: get(&self.blocks_lifted),
            shared_lifts_published: get(&self.shared_lifts_published),
            shared_lifts_received: get(&self.shared_lifts_received),
            shared_window_batches: get(&self.shared_window_batches),
            shared_window_dropped: get(&self.shared_window_dropped),
        }
    }
}
