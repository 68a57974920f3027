//! Prometheus metrics of the audit stage (default registry). Labels come from bounded sets:
//! phase, failure reason.

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_int_counter, register_int_counter_vec, register_int_gauge, Histogram,
    IntCounter, IntCounterVec, IntGauge,
};

fn or_unregistered<T>(r: prometheus::Result<T>, fallback: impl FnOnce() -> prometheus::Result<T>) -> T
where
    T: Clone,
{
    // A second registration (several stages in one test process) must not panic: fall back to
    // an unregistered collector rather than lose the counting on the hot path.
    match r {
        Ok(m) => m,
        Err(e) => {
            log::warn!("audit metrics not registered: {e}");
            #[allow(clippy::unwrap_used)] // a fallback built from constant, valid options
            fallback().unwrap()
        }
    }
}

/// Records made durable, by phase.
pub(crate) static RECORDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let opts =
        || prometheus::Opts::new("phigate_audit_records_total", "Audit records made durable, by phase.");
    or_unregistered(register_int_counter_vec!(opts(), &["phase"]), || IntCounterVec::new(opts(), &["phase"]))
});

/// Group commits (one `fdatasync` each).
pub(crate) static BATCHES: LazyLock<IntCounter> = LazyLock::new(|| {
    let (n, h) = ("phigate_audit_batches_total", "Audit group commits (one fdatasync each).");
    or_unregistered(register_int_counter!(n, h), || IntCounter::new(n, h))
});

/// Time to write and sync one batch.
pub(crate) static FSYNC_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    let opts = || {
        prometheus::HistogramOpts::new(
            "phigate_audit_fsync_seconds",
            "Time to write and fdatasync one audit batch.",
        )
        .buckets(vec![0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0])
    };
    or_unregistered(register_histogram!(opts()), || Histogram::with_opts(opts()))
});

/// Records refused, by reason (`unwritable`, `full`, `io`, `corrupt`, `writer_stopped`,
/// `queue_full`, `timeout`).
pub(crate) static FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let opts = || {
        prometheus::Opts::new("phigate_audit_failures_total", "Audit records not made durable, by reason.")
    };
    or_unregistered(register_int_counter_vec!(opts(), &["reason"]), || {
        IntCounterVec::new(opts(), &["reason"])
    })
});

/// Requests that gave up waiting for durability (`max_wait_ms`).
pub(crate) static WAIT_TIMEOUTS: LazyLock<IntCounter> = LazyLock::new(|| {
    let (n, h) = (
        "phigate_audit_wait_timeouts_total",
        "Requests refused because their audit record was not durable within max_wait_ms.",
    );
    or_unregistered(register_int_counter!(n, h), || IntCounter::new(n, h))
});

/// Forwarding POSTs by result (`delivered`, `connect`, `timeout`, `status`).
static FORWARD_POSTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let opts = || {
        prometheus::Opts::new(
            "phigate_audit_forward_posts_total",
            "POSTs of audit lines to the forwarding collector, by result (delivered, connect, timeout, status).",
        )
    };
    or_unregistered(register_int_counter_vec!(opts(), &["result"]), || {
        IntCounterVec::new(opts(), &["result"])
    })
});

/// Audit lines the forwarding collector accepted.
static FORWARD_LINES: LazyLock<IntCounter> = LazyLock::new(|| {
    let (n, h) = ("phigate_audit_forward_lines_total", "Audit lines the forwarding collector accepted.");
    or_unregistered(register_int_counter!(n, h), || IntCounter::new(n, h))
});

/// Bytes of the trail durable and not yet accepted by the collector.
pub(crate) static FORWARD_LAG: LazyLock<IntGauge> = LazyLock::new(|| {
    let (n, h) = (
        "phigate_audit_forward_lag_bytes",
        "Bytes of the audit trail made durable and not yet accepted by the forwarding collector.",
    );
    or_unregistered(register_int_gauge!(n, h), || IntGauge::new(n, h))
});

/// The forwarding poster's counters: POSTs by result, lines delivered.
pub(crate) fn forward() -> (IntCounterVec, IntCounter) {
    (FORWARD_POSTS.clone(), FORWARD_LINES.clone())
}
