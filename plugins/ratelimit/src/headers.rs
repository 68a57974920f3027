//! The IETF rate-limit headers (draft-ietf-httpapi-ratelimit-headers): `RateLimit-Policy` names
//! each limit that applied with its quota (`q` requests per `w` seconds); `RateLimit` says what
//! is left of it (`r`: requests that could be sent at once now) and when it is whole again (`t`,
//! seconds). Items are structured-field strings (RFC 9651); limit names are `[a-z0-9_]`, so
//! they need no escaping.

use std::fmt::Write;

use http::{HeaderName, HeaderValue};

use crate::limit::Limit;
use crate::stage::{retry_after_secs, Applied};

/// `RateLimit-Policy`: the quota of each limit that applied.
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: what is left of each.
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

fn policy_item(out: &mut String, l: &Limit) {
    let _ = write!(out, "\"{}\";q={};w={}", l.name, l.rate.requests, l.rate.period_secs);
}

fn value(s: String) -> Option<HeaderValue> {
    HeaderValue::try_from(s).ok()
}

/// Both headers for an allowed request, over every limit it passed.
pub(crate) fn for_allowed(limits: &[Limit], applied: &[Applied]) -> Vec<(HeaderName, HeaderValue)> {
    let (mut policy, mut state) = (String::new(), String::new());
    for (n, a) in applied.iter().enumerate() {
        let Some(l) = limits.get(a.limit) else { continue };
        if n > 0 {
            policy.push_str(", ");
            state.push_str(", ");
        }
        policy_item(&mut policy, l);
        let reset = if a.reset.is_zero() { 0 } else { retry_after_secs(a.reset) };
        let _ = write!(state, "\"{}\";r={};t={}", l.name, a.remaining, reset);
    }
    [(RATELIMIT_POLICY, value(policy)), (RATELIMIT, value(state))]
        .into_iter()
        .filter_map(|(n, v)| Some((n, v?)))
        .collect()
}

/// Both headers for a refusal by `l`, retryable after `retry_secs`.
pub(crate) fn for_denial(l: &Limit, retry_secs: u64) -> Vec<(HeaderName, HeaderValue)> {
    let mut policy = String::new();
    policy_item(&mut policy, l);
    let state = format!("\"{}\";r=0;t={retry_secs}", l.name);
    [(RATELIMIT_POLICY, value(policy)), (RATELIMIT, value(state))]
        .into_iter()
        .filter_map(|(n, v)| Some((n, v?)))
        .collect()
}
