//! Prometheus metrics of the rate-limit stage (default registry). Labels come from bounded sets
//! only: the configured limit names, fixed result and error kinds. Never principals or
//! addresses.

use std::sync::LazyLock;

use prometheus::{
    register_int_counter_vec, register_int_gauge, register_int_gauge_vec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts,
};

fn or_unregistered<T>(r: prometheus::Result<T>, fallback: impl FnOnce() -> prometheus::Result<T>) -> T {
    // A second registration (several stages in one test process) must not panic: fall back to
    // an unregistered collector rather than lose the counting on the hot path.
    match r {
        Ok(m) => m,
        Err(e) => {
            log::warn!("rate-limit metrics not registered: {e}");
            #[allow(clippy::unwrap_used)] // a fallback built from constant, valid options
            fallback().unwrap()
        }
    }
}

/// Decisions per limit: `allowed`, `denied`, `failure_allowed` (backend down,
/// `failure_mode: allow`), `failure_denied` (backend down, refused), `failure_local` (backend
/// down, the in-memory fallback decided: its `allowed`/`denied` are counted too).
pub(crate) static DECISIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let opts =
        || Opts::new("phigate_ratelimit_decisions_total", "Rate-limit decisions, by limit and result.");
    or_unregistered(register_int_counter_vec!(opts(), &["limit", "result"]), || {
        IntCounterVec::new(opts(), &["limit", "result"])
    })
});

/// Shared-backend failures, by kind: `unavailable` (no connection), `timeout`, `io`, `tls`
/// (handshake or certificate), `script`.
pub(crate) static BACKEND_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let opts = || {
        Opts::new("phigate_ratelimit_backend_errors_total", "Rate-limit backend (Redis) failures, by kind.")
    };
    or_unregistered(register_int_counter_vec!(opts(), &["kind"]), || IntCounterVec::new(opts(), &["kind"]))
});

/// Keys held in memory per limit, as of the last sweep.
pub(crate) static KEYS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    let opts =
        || Opts::new("phigate_ratelimit_keys", "Keys held by the in-memory backend after the last sweep.");
    or_unregistered(register_int_gauge_vec!(opts(), &["limit"]), || IntGaugeVec::new(opts(), &["limit"]))
});

/// 1 while the Redis backend answers, 0 while it does not.
pub(crate) static REDIS_UP: LazyLock<IntGauge> = LazyLock::new(|| {
    let (n, h) = ("phigate_ratelimit_redis_up", "1 while the rate-limit Redis backend answers, else 0.");
    or_unregistered(register_int_gauge!(n, h), || IntGauge::new(n, h))
});
