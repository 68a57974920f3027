//! Prometheus metrics of the identity stage (default registry). Labels come from bounded sets:
//! result codes and configured issuers, never subjects or tokens.
//!
//! Metric definitions are constants; should one ever fail to build, the metric is absent and the
//! request path is unaffected (metrics never decide anything).

use std::sync::LazyLock;

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

fn counter(name: &str, help: &str, labels: &[&str]) -> Option<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels).ok()?;
    // A failed registration (already registered by an embedding binary) still counts locally.
    let _ = prometheus::register(Box::new(c.clone()));
    Some(c)
}

static VALIDATIONS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter(
        "phigate_identity_validations_total",
        "Bearer token validations by result (ok or error code).",
        &["result"],
    )
});

static TOKEN_CACHE: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter(
        "phigate_identity_token_cache_total",
        "Validated-token cache lookups by outcome (hit or miss).",
        &["outcome"],
    )
});

static JWKS_REFRESH: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter(
        "phigate_identity_jwks_refresh_total",
        "JWKS fetches by issuer and result (success or failure).",
        &["issuer", "result"],
    )
});

static JWKS_KEYS: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    let g = IntGaugeVec::new(
        Opts::new("phigate_identity_jwks_keys", "Usable signing keys currently loaded per issuer."),
        &["issuer"],
    )
    .ok()?;
    let _ = prometheus::register(Box::new(g.clone()));
    Some(g)
});

static REPLAY_CHECKS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter(
        "phigate_identity_dpop_shared_replay_total",
        "DPoP proofs claimed in the shared replay memory, by outcome (new, replayed, \
         failed_denied, failed_local).",
        &["outcome"],
    )
});

static REPLAY_REDIS_ERRORS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter(
        "phigate_identity_dpop_replay_redis_errors_total",
        "Failures reaching the shared DPoP replay memory, by kind (unavailable, timeout, io, tls, reply).",
        &["kind"],
    )
});

static REPLAY_REDIS_UP: LazyLock<Option<IntGauge>> = LazyLock::new(|| {
    let g = IntGauge::new(
        "phigate_identity_dpop_replay_redis_up",
        "1 while the shared DPoP replay memory (Redis) answers, else 0.",
    )
    .ok()?;
    let _ = prometheus::register(Box::new(g.clone()));
    Some(g)
});

static INTROSPECTIONS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter(
        "phigate_identity_introspection_total",
        "Token introspection calls (RFC 7662) by issuer and outcome (active, inactive, timeout, \
         connect, status, body, stopped).",
        &["issuer", "outcome"],
    )
});

static INTROSPECTION_SECONDS: LazyLock<Option<HistogramVec>> = LazyLock::new(|| {
    let h = HistogramVec::new(
        HistogramOpts::new(
            "phigate_identity_introspection_duration_seconds",
            "Time from asking the introspection endpoint to its answer (or failure), by issuer.",
        )
        .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
        &["issuer"],
    )
    .ok()?;
    let _ = prometheus::register(Box::new(h.clone()));
    Some(h)
});

/// Counts one introspection call and observes its duration.
pub(crate) fn introspection(issuer: &str, outcome: &str, took: std::time::Duration) {
    if let Some(v) = INTROSPECTIONS.as_ref() {
        v.with_label_values(&[issuer, outcome]).inc();
    }
    if let Some(h) = INTROSPECTION_SECONDS.as_ref() {
        h.with_label_values(&[issuer]).observe(took.as_secs_f64());
    }
}

/// Sets whether the shared replay memory answers.
pub(crate) fn replay_redis_up(up: bool) {
    if let Some(g) = REPLAY_REDIS_UP.as_ref() {
        g.set(i64::from(up));
    }
}

/// Counts a shared replay claim by outcome.
pub(crate) fn replay_check(outcome: &str) {
    if let Some(v) = REPLAY_CHECKS.as_ref() {
        v.with_label_values(&[outcome]).inc();
    }
}

/// Counts a failure reaching the shared replay memory.
pub(crate) fn replay_redis_error(why: phigate_redis::Failure) {
    let kind = match why {
        phigate_redis::Failure::Unavailable => "unavailable",
        phigate_redis::Failure::Timeout => "timeout",
        phigate_redis::Failure::Io => "io",
        phigate_redis::Failure::Tls => "tls",
        phigate_redis::Failure::Reply => "reply",
    };
    if let Some(v) = REPLAY_REDIS_ERRORS.as_ref() {
        v.with_label_values(&[kind]).inc();
    }
}

/// The counter for one validation result, resolved once (hot path: no label lookup).
pub(crate) fn validation(result: &str) -> Option<IntCounter> {
    VALIDATIONS.as_ref().map(|v| v.with_label_values(&[result]))
}

/// The counter for one cache outcome (`hit`, `miss`), resolved once.
pub(crate) fn cache(outcome: &str) -> Option<IntCounter> {
    TOKEN_CACHE.as_ref().map(|v| v.with_label_values(&[outcome]))
}

/// Counts a JWKS fetch (`success`, `failure`).
pub(crate) fn jwks_refresh(issuer: &str, result: &str) {
    if let Some(v) = JWKS_REFRESH.as_ref() {
        v.with_label_values(&[issuer, result]).inc();
    }
}

/// Sets the usable key count of an issuer.
pub(crate) fn jwks_keys(issuer: &str, n: usize) {
    if let Some(v) = JWKS_KEYS.as_ref() {
        v.with_label_values(&[issuer]).set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// Increments an optional counter.
pub(crate) fn inc(c: &Option<IntCounter>) {
    if let Some(c) = c {
        c.inc();
    }
}
