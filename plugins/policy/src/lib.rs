//! The phigate policy stage (`policy:`): patient-level authorization with Rego, evaluated by
//! regorus before anything reaches an upstream.
//!
//! **Phase.** `on_request`, after identity and rate limiting: builds the versioned input
//! (`input.v == 1`: principal, request with its FHIR model and patients, client, time), evaluates
//! the active revision's entrypoint (`data.phigate.authz.decision` by default) and stores the
//! [`Decision`](phigate_plugin::Decision) in `ctx.decision`. A deny answers with the code of its
//! most specific reason (`tenant_mismatch`, `break_glass_not_permitted`, `scope_insufficient`,
//! `export_requires_async`, `patient_not_permitted`, else `policy_denied`). An allow may narrow a
//! search (a `patient=` parameter is added to `ctx.request.query`) and name the patients a
//! response may contain: `on_response` then asks for the body and `on_buffered_response`
//! replaces a response naming anyone else with `patient_not_permitted`.
//!
//! **Pre-reads.** A write by id on a patient-compartment type (`PUT`, `PATCH`, `DELETE
//! Observation/123`) by a principal held to a permitted set asks the gateway to read the stored
//! record first (`ctx.upstream.pre_read`); `on_pre_read` checks it like a response and refuses a
//! record naming another patient with `patient_not_permitted` (`phigate_policy_pre_reads_total`).
//!
//! **Fail closed.** An evaluation error, a time-out (regorus execution timer, `max_eval_ms`), a
//! malformed decision, an invalid break-glass header, a response that cannot be read: all deny,
//! and all are counted (`phigate_policy_errors_total`, `phigate_policy_response_denials_total`).
//!
//! **Revisions.** Policies and data are compiled once per revision (content hash), tested with
//! their own `*_test.rego`, and swapped atomically ([`arc_swap`]); a revision that fails to parse
//! or fails its tests is rejected and the old one keeps serving. The file watcher runs as a
//! background task; [`PolicyStage::reload_now`] reloads on demand (SIGHUP). With a change sink
//! attached ([`Stage::attach_changes`](phigate_plugin::Stage::attach_changes), audit configured),
//! the revision in force at start and each applied or rejected one are reported (content hashes,
//! a fixed reason class, the trigger) for the audit trail.
//!
//! **Never logged.** Inputs, query values, bodies, patient ids, the engine's error text for live
//! requests (it may quote input values), and the break-glass reason (that goes to audit only).
//!
//! **Tooling.** [`run_policy_tests`] and [`eval_input`] back `phigate policy test` and
//! `phigate policy eval`.

mod agreement;
mod bulk;
mod config;
mod created;
mod decision;
mod elements;
mod error;
mod events;
mod format;
mod input;
mod labels;
mod narrow;
mod oneshot;
mod page;
mod permit;
mod pre_read;
mod reload;
mod revision;
mod shadow;
mod stage;
mod testing;
mod verify;

pub use config::{DecisionCacheConfig, PolicyConfig, ShadowConfig};
pub use decision::deny_code;
pub use error::{EvalError, LoadError};
pub use input::INPUT_VERSION;
pub use labels::{
    without_counts, without_entries, Labels, NotAnObject, RootMembers, Withheld, WithheldNotice,
};
pub use oneshot::{diff_inputs, eval_input, DiffReport, Difference, EvalInputError};
pub use page::OversizedPage;
pub use permit::Permit;
pub use phigate_plugin::patient_of_reference as patient_of;
pub use stage::{PolicyStage, ReloadOutcome, BREAK_GLASS_HEADER};
pub use testing::{
    run_policy_tests, run_policy_tests_matching, run_policy_tests_with, FileCoverage, TestOutcome,
    TestReport, TestResult,
};
pub use verify::{verify as verify_response, verify_collect, Verdict, Verified};

/// The entrypoint evaluated when the config names none.
pub const DEFAULT_ENTRYPOINT: &str = "data.phigate.authz.decision";
