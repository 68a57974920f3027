//! The request model of the gateway core: pure functions, no pingora types.
//!
//! Steps 1 and 2 of the request lifecycle (ARCHITECTURE §1), run once per request:
//! - [`normalize_target`]: the request target decoded into one canonical path and query, or an
//!   [`Ambiguity`] (400, or 414 for [`Ambiguity::TooLong`]). The forwarded target is rebuilt
//!   from the normalized form with [`rebuild_target`], so the upstream receives exactly what the
//!   stages judged.
//! - [`check_framing`], [`headers_to_strip`], [`x_forwarded_for`]: header hygiene (smuggling,
//!   hop-by-hop and spoofable identity headers).
//! - [`classify`]: on FHIR routes, the FHIR R4 REST interaction and every patient the request
//!   names, or the params that reach patients the gateway cannot name.
//!
//! None of these log or return request values: errors carry fixed reasons only.
//!
//! # Wiring (per request, in `request_filter`)
//! 1. [`check_framing`] on the request headers; an error is [`Ambiguity::error_code`].
//! 2. [`normalize_target`] on pingora's `RequestHeader::raw_path()` (the bytes as received;
//!    pingora has already dropped any `#fragment` there, so [`Ambiguity::Fragment`] fires only
//!    for Bundle entry URLs).
//! 3. Route on the normalized path; on FHIR routes, [`classify`] the path after the route's base
//!    (with the buffered body for `POST` to the base, `_search`, create and update).
//! 4. In `upstream_request_filter`: `remove_header` each of [`headers_to_strip`], set
//!    `X-Forwarded-For` from [`x_forwarded_for`], and `set_raw_path(rebuild_target(..))` from
//!    the (possibly stage-narrowed) normalized path and query.
//!
//! [`preload`] parses the embedded Patient CompartmentDefinition; call it once at startup.

mod ambiguity;
mod classify;
mod headers;
mod normalize;
pub mod resource_types;

#[cfg(test)]
mod tests;

pub use ambiguity::Ambiguity;
pub use classify::{classify, preload, ClassifyError, UNRESOLVED_BODY};
pub use headers::{check_framing, client_ip, headers_to_strip, single_value, x_forwarded_for};
pub use normalize::{
    normalize_target, rebuild_target, NormalizedTarget, TargetLimits, DEFAULT_SINGLETON_PARAMS,
};
pub use resource_types::{resource_type, R4_RESOURCE_TYPES};
