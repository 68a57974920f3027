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

mod ambiguity;
mod classify;
mod headers;
mod normalize;
pub mod resource_types;

#[cfg(test)]
mod tests;

pub use ambiguity::Ambiguity;
pub use classify::{classify, preload, ClassifyError, UNRESOLVED_BODY};
pub use headers::{check_framing, headers_to_strip, x_forwarded_for};
pub use normalize::{
    normalize_target, rebuild_target, NormalizedTarget, TargetLimits, DEFAULT_SINGLETON_PARAMS,
};
pub use resource_types::{resource_type, R4_RESOURCE_TYPES};
