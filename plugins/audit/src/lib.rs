//! phigate's audit stage: a tamper-evident trail of every request, written durably **before**
//! the request is forwarded.
//!
//! * **Phase**: last in the pipeline. [`Stage::on_request`](phigate_plugin::Stage::on_request)
//!   appends an `attempt` record and returns only once it is on disk (group commit, `fdatasync`);
//!   [`Stage::on_refused`](phigate_plugin::Stage::on_refused) makes the `denied` record of a
//!   request a stage refused (or answered locally) durable **before** the answer is sent;
//!   [`Stage::on_complete`](phigate_plugin::Stage::on_complete) appends `outcome` (forwarded),
//!   or `denied` for a refusal not recorded yet (an upstream never reached after the attempt).
//! * **Decides**: nothing about access; it refuses a request only when it cannot record it.
//! * **Fails closed**: unwritable directory, full disk, a queue at capacity or a wait beyond
//!   `max_wait_ms` → 503 `audit_unavailable`, counted in `phigate_audit_failures_total`, and
//!   [`readiness`](phigate_plugin::Stage::readiness) is `NotReady` until the sink works again.
//! * **Never records**: tokens, headers, bodies, or query values in clear (values are keyed
//!   HMAC-SHA256, except patient ids the request names).
//! * **Tamper evidence**: SHA-256 hash chain across rotated segments, Ed25519-signed checkpoints
//!   in the segments and in a separate checkpoint log; [`verify`] re-checks it all.
//!
//! The record schema, file formats and operations advice are in the crate's `README.md`.

mod chain;
mod checkpoint;
mod config;
mod error;
mod forward;
mod keys;
mod metrics;
mod record;
mod report;
mod scan;
mod segment;
mod sink;
mod stage;
mod verify;
mod writer;

pub use chain::FORMAT_VERSION;
pub use checkpoint::CHECKPOINT_LOG;
pub use config::AuditConfig;
pub use error::{KeyError, SinkError};
pub use forward::CURSOR_FILE;
pub use keys::{
    generate_hmac_key, generate_signing_key, load_public_key, load_signing_key, write_public_key, PublicKey,
};
pub use record::Phase;
pub use report::{parse_time, report, Access, ReportError, ReportFormat, ReportQuery, ReportSummary};
pub use segment::SegmentStore;
pub use sink::{AuditSink, PendingRecord, RecordKind};
pub use stage::AuditStage;
pub use verify::{verify, verify_stream, Failure, VerifyReport, VerifyStatus};
