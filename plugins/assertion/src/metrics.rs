//! Prometheus metrics (default registry). Labels come from bounded sets (algorithm, source,
//! reason, outcome): never a subject, tenant or audience.

use std::sync::LazyLock;

use prometheus::{IntCounterVec, Opts};

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|_| invalid(name));
    // A second registration (another stage instance in one process) keeps the first.
    let _ = prometheus::default_registry().register(Box::new(c.clone()));
    c
}

#[cold]
fn invalid(name: &str) -> IntCounterVec {
    log::error!("assertion metric {name} could not be created");
    IntCounterVec::new(Opts::new("phigate_assertion_invalid", "invalid"), &[])
        .unwrap_or_else(|_| std::process::abort())
}

/// Assertions attached to forwarded requests, by algorithm and source (`signed`: new signature,
/// `cached`: reused within its first half-life).
pub(crate) static ISSUED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "phigate_assertion_issued_total",
        "Identity assertions sent upstream, by algorithm and source (signed, cached).",
        &["alg", "source"],
    )
});

/// Requests refused because no assertion could be made (`token_expired`, `sign_error`).
pub(crate) static FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "phigate_assertion_failures_total",
        "Requests refused because no identity assertion could be made, by reason (token_expired, sign_error).",
        &["reason"],
    )
});

/// Key reloads (SIGHUP) by outcome: `rotated`, `unchanged`, `rejected` (the old keys stay).
pub(crate) static KEY_RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "phigate_assertion_key_reloads_total",
        "Assertion key reloads, by outcome (rotated, unchanged, rejected: the previous keys stay active).",
        &["outcome"],
    )
});
