//! One configured limit, resolved for the hot path: its rate as GCRA parameters, its filters and
//! its pre-resolved metric handles.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::Quota;
use http::Method;
use prometheus::IntCounter;

use crate::key::Dims;
use crate::metrics;

/// Fastest accepted rate: one request per microsecond (the Redis script works in microseconds).
const MIN_EMISSION_NANOS: u128 = 1_000;

/// A rate as GCRA parameters: one request per `emission` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    /// Requests per `period`.
    pub(crate) requests: u32,
    /// The period, in seconds.
    pub(crate) period_secs: u32,
    /// Requests allowed at once.
    pub(crate) burst: NonZeroU32,
    /// The emission interval `T` = period / requests.
    pub(crate) emission: Duration,
}

impl Rate {
    /// Validates a rate; the error names the offending field and what is wrong.
    pub(crate) fn new(
        requests: u32,
        period_secs: u32,
        burst: u32,
    ) -> Result<Rate, (&'static str, &'static str)> {
        if requests == 0 {
            return Err(("requests", "must be at least 1"));
        }
        if !(1..=86_400).contains(&period_secs) {
            return Err(("period_secs", "must be between 1 and 86400"));
        }
        let Some(burst) = NonZeroU32::new(burst) else {
            return Err(("burst", "must be at least 1"));
        };
        let nanos = u128::from(period_secs) * 1_000_000_000 / u128::from(requests);
        if nanos < MIN_EMISSION_NANOS {
            return Err(("requests", "is more than one per microsecond"));
        }
        let emission = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        Ok(Rate { requests, period_secs, burst, emission })
    }

    /// The governor quota for this rate.
    pub(crate) fn quota(&self) -> Quota {
        // `emission` is at least a microsecond (checked in `new`), so `with_period` is `Some`.
        Quota::with_period(self.emission)
            .unwrap_or_else(|| Quota::per_second(self.burst))
            .allow_burst(self.burst)
    }

    /// `T` in microseconds, for the Redis script.
    pub(crate) fn emission_micros(&self) -> u64 {
        u64::try_from(self.emission.as_micros()).unwrap_or(u64::MAX).max(1)
    }

    /// The GCRA tolerance `tau` = `T` × (`burst` − 1) in microseconds, for the Redis script.
    pub(crate) fn tolerance_micros(&self) -> u64 {
        self.emission_micros().saturating_mul(u64::from(self.burst.get() - 1))
    }

    /// Time until a bucket with `remaining` requests left is full again (within one `T`).
    pub(crate) fn reset_after(&self, remaining: u32) -> Duration {
        self.emission.saturating_mul(self.burst.get().saturating_sub(remaining))
    }
}

/// Per-limit decision counters, resolved once (label lookups are not free on the hot path).
#[derive(Debug, Clone)]
pub(crate) struct LimitMetrics {
    /// The limit let the request through.
    pub(crate) allowed: IntCounter,
    /// The limit refused the request.
    pub(crate) denied: IntCounter,
    /// The backend failed and `failure_mode: allow` let the request through.
    pub(crate) failure_allowed: IntCounter,
    /// The backend failed and the request was refused.
    pub(crate) failure_denied: IntCounter,
    /// The backend failed and the in-memory fallback decided (`failure_mode: local`).
    pub(crate) failure_local: IntCounter,
}

/// One limit, ready for the hot path.
#[derive(Debug)]
pub(crate) struct Limit {
    /// The configured name (a bounded set: safe as a metrics label).
    pub(crate) name: Arc<str>,
    /// What is counted separately.
    pub(crate) dims: Dims,
    /// The rate.
    pub(crate) rate: Rate,
    /// The route indices it is restricted to, if any.
    pub(crate) routes: Option<Vec<usize>>,
    /// The methods it is restricted to, if any.
    methods: Option<Vec<Method>>,
    /// Its decision counters.
    pub(crate) metrics: LimitMetrics,
}

impl Limit {
    /// A limit; registers its metric label values.
    pub(crate) fn new(
        name: &str,
        dims: Dims,
        rate: Rate,
        routes: Option<Vec<usize>>,
        methods: Option<Vec<Method>>,
    ) -> Limit {
        let counter = |result: &str| metrics::DECISIONS.with_label_values(&[name, result]);
        let metrics = LimitMetrics {
            allowed: counter("allowed"),
            denied: counter("denied"),
            failure_allowed: counter("failure_allowed"),
            failure_denied: counter("failure_denied"),
            failure_local: counter("failure_local"),
        };
        Limit { name: name.into(), dims, rate, routes, methods, metrics }
    }

    /// Whether the limit counts requests with this method.
    pub(crate) fn counts_method(&self, method: &Method) -> bool {
        self.methods.as_ref().is_none_or(|ms| ms.contains(method))
    }

    /// Whether the limit counts requests on the route with this index.
    pub(crate) fn counts_route(&self, index: usize) -> bool {
        self.routes.as_ref().is_none_or(|rs| rs.contains(&index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_derives_gcra_parameters() {
        let r = Rate::new(10, 60, 5).unwrap();
        assert_eq!(r.emission, Duration::from_secs(6));
        assert_eq!(r.emission_micros(), 6_000_000);
        assert_eq!(r.tolerance_micros(), 24_000_000);
        assert_eq!(r.quota().burst_size().get(), 5);
        assert_eq!(r.quota().replenish_interval(), Duration::from_secs(6));
        assert_eq!(r.reset_after(5), Duration::ZERO);
        assert_eq!(r.reset_after(0), Duration::from_secs(30));
    }

    #[test]
    fn rate_rejects_zero_and_sub_microsecond_rates() {
        assert_eq!(Rate::new(0, 1, 1).unwrap_err().0, "requests");
        assert_eq!(Rate::new(1, 0, 1).unwrap_err().0, "period_secs");
        assert_eq!(Rate::new(1, 1, 0).unwrap_err().0, "burst");
        assert_eq!(Rate::new(2_000_000, 1, 1).unwrap_err().0, "requests");
        assert!(Rate::new(1_000_000, 1, 1).is_ok());
    }
}
