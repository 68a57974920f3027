//! phigate's rate-limit stage (`rate_limits:`): GCRA limits per principal, tenant, client
//! address and route, in memory or shared by every replica through Redis.
//!
//! * **Phase**: `on_request`, after identity (so limits can key on the verified principal) and
//!   before policy (so a flood is refused before it costs a Rego evaluation).
//! * **Decides**: every limit that applies to the request (route and method filters) counts it,
//!   in the configured order; the first one exceeded refuses it with 429 `rate_limited` and
//!   `Retry-After` (seconds, rounded up). Requests without a principal are keyed by client
//!   address instead, so anonymous traffic is limited too. Optionally adds the IETF
//!   `RateLimit-Policy` / `RateLimit` headers.
//! * **Backends**: in memory (governor: GCRA in a sharded map, swept so it stays bounded), or
//!   Redis (the same GCRA in one atomic Lua script per request, on Redis server time), over TLS
//!   1.3 with `rediss://` (rustls on the process-default provider; optional client certificate),
//!   set up by `phigate-redis` like every Redis client of the gateway.
//! * **Fails closed**: when Redis cannot answer in `timeout_ms`, `failure_mode: deny` (default)
//!   refuses with 503 `not_ready`; `allow` forwards unlimited; `local` limits with this
//!   instance's memory. All are counted (`phigate_ratelimit_decisions_total{result="failure_*"}`,
//!   `phigate_ratelimit_backend_errors_total`). Up/down transitions are logged once each.
//!   The Redis backend is not ready until Redis first answers `PING`. A failed TLS handshake
//!   (untrusted or expired certificate, client certificate refused) is a Redis failure like any
//!   other, counted as `kind="tls"`.
//! * **Never logged or labelled**: principals, tenants, addresses, the Redis URL. Metric labels
//!   are limit names; Redis keys carry a hash of the request's key, not the key: SHA-256, or
//!   HMAC-SHA256 with `redis.hmac_key_path` (so that a guessed caller cannot be confirmed).
//! * **Signals**: a refusal leaves a [`RateLimitEvent`] in `ctx.extensions`.
//!
//! Config, semantics and the Redis algorithm are described in the crate's `README.md`.

mod config;
mod error;
mod headers;
mod key;
mod limit;
mod memory;
mod metrics;
mod redis_backend;
mod stage;
#[cfg(test)]
mod tests;

pub use config::{BackendKind, FailureMode, LimitConfig, RateLimitConfig, RedisConfig, RedisTlsConfig};
pub use stage::{RateLimitEvent, RateLimitStage};
