//! Prometheus metrics of the identity stage (default registry). Labels come from bounded sets:
//! result codes and configured issuers, never subjects or tokens.

use std::sync::LazyLock;

use prometheus::{IntCounterVec, IntGaugeVec, Opts};

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|_| unreachable_metric(labels));
    // A second registration (another build in the same process) keeps the first one exported.
    let _ = prometheus::register(Box::new(c.clone()));
    c
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|_| unreachable_gauge(labels));
    let _ = prometheus::register(Box::new(g.clone()));
    g
}

// Metric names above are constants; these only exist so that no path panics.
fn unreachable_metric(labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new("phigate_identity_invalid", "invalid"), labels)
        .unwrap_or_else(|_| unreachable_metric(&[]))
}

fn unreachable_gauge(labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new("phigate_identity_invalid_g", "invalid"), labels)
        .unwrap_or_else(|_| unreachable_gauge(&[]))
}

/// Token validations by result (`ok` or the error code).
pub(crate) static VALIDATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "phigate_identity_validations_total",
        "Bearer token validations by result (ok or error code).",
        &["result"],
    )
});

/// Validated-token cache lookups by outcome (`hit`, `miss`).
pub(crate) static TOKEN_CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "phigate_identity_token_cache_total",
        "Validated-token cache lookups by outcome (hit or miss).",
        &["outcome"],
    )
});

/// JWKS fetches by issuer and result (`success`, `failure`).
pub(crate) static JWKS_REFRESH: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "phigate_identity_jwks_refresh_total",
        "JWKS fetches by issuer and result (success or failure).",
        &["issuer", "result"],
    )
});

/// Usable signing keys per issuer.
pub(crate) static JWKS_KEYS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "phigate_identity_jwks_keys",
        "Usable signing keys currently loaded per issuer.",
        &["issuer"],
    )
});
