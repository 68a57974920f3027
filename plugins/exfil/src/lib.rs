//! phigate's exfiltration watch: per-principal sliding windows that spot a principal reading far
//! more than its work needs, and alerts a SOC can ingest.
//!
//! * **Phase**: after policy (and pagination), before audit.
//!   [`on_request`](phigate_plugin::Stage::on_request) refuses a principal blocked by an earlier
//!   alert with 403 `principal_blocked` (so audit records the refusal and nothing is forwarded);
//!   [`on_complete`](phigate_plugin::Stage::on_complete) sees the final status, the Bundle entries
//!   counted on the response path and, when another stage buffered the body, the patients the
//!   response contained, and feeds the detectors.
//! * **Detects** (each with `threshold`, `window_secs`, `action: alert|block`, `enabled`):
//!   `distinct_patients` (one principal touching more than N patients), `bulk_paging` (more than N
//!   Bundle entries or search pages), `id_enumeration` (reads that miss with 404/403/410, or walk
//!   adjacent numeric ids), `rate_denials` (storms of 429/403), `restricted_records` (records
//!   withheld for security labels the principal is not cleared for), `bulk_exports` (`$export`
//!   kick-offs the upstream accepted), plus alerts the policy asks for
//!   (`obligations.alert`, for example `break_glass_access`). One alert per principal, rule and
//!   window.
//! * **Never blocks a worker**: alerts go through a bounded queue to a background writer; a full
//!   queue drops the alert and counts it (`phigate_exfil_alerts_dropped_total`).
//! * **Never logs or labels** principal or patient ids: they appear only in the alerts file
//!   (mode 0600). The break-glass justification is never copied, only whether it was given and
//!   its length.
//! * **Shared across replicas** (optional `shared:`): a block is recorded in Redis under a keyed
//!   hash of the principal (never its identity) and announced on a pub/sub channel; every
//!   replica's background task applies the announcements and, on (re)connect, the recorded
//!   blocks. Requests never wait on Redis; without it each replica still blocks what it sees.
//!   `rediss://` (TLS 1.3, optional `tls:` block with a CA and a client certificate) is set up by
//!   `phigate-redis`, as for the rate-limit stage; a TLS failure counts as `kind="tls"`.
//! * **Lifting a block** ([`ExfilStage::unblock`], listed by [`ExfilStage::blocks`]): an operator
//!   who confirmed a false positive ends the block at once, on every replica with `shared`; the
//!   principal's windows are reset and the lift is an alert line (`block_lifted`) with the reason.
//! * **SIGHUP** ([`reload`](phigate_plugin::Stage::reload)) reopens the alerts file (rotation).
//! * **Memory**: windows live in a moka cache bounded by `max_principals` and expiring after the
//!   longest window of idleness; each window keeps at most `threshold + 1` elements.
//!
//! The alert schema (for SIEM ingestion) is in the crate's `README.md`.

mod alert;
mod blocks;
mod clock;
mod config;
mod error;
mod hours;
mod local;
mod metrics;
mod raise;
mod response;
mod rules;
mod shared;
mod stage;
mod state;
mod window;
mod writer;

pub use alert::ALERT_VERSION;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    Action, BulkExportsConfig, BulkPagingConfig, DistinctPatientsConfig, ExfilConfig, IdEnumerationConfig,
    OffHoursConfig, PagingMeasure, PolicyAlertsConfig, RateDenialsConfig, RestrictedRecordsConfig,
    SharedConfig, TenantHoursConfig,
};
pub use error::{FlushError, UnblockError};
pub use metrics::ExfilStats;
pub use phigate_redis::RedisTlsConfig;
pub use phigate_shipper::ShipperConfig;
pub use stage::{checked_reason, BlockView, ExfilStage, MAX_REASON_BYTES};
