//! The phigate stage API.
//!
//! A *stage* is one step of the request pipeline (identity, rate limit, policy, pagination,
//! exfiltration watch, audit, or a custom one). The gateway owns the pingora side: it normalizes and
//! classifies the request once, builds a [`RequestCtx`], and calls each stage in a fixed order
//! (see [`Stage`]). A stage sees typed request data only, never pingora internals, and answers with
//! [`Flow::Continue`] or a [`Denial`] whose [`ErrorCode`] is stable and documented.
//!
//! Fail closed: a stage that cannot decide returns a denial. The gateway turns every denial into
//! one response shape (JSON or a FHIR `OperationOutcome`) in one place.

mod build;
mod change;
mod ctx;
mod error;
mod fhir;
mod principal;
mod stage;

pub use build::{read_secret_key, BackgroundTask, ConfigIssue, StageBuildCtx, MIN_SECRET_KEY_BYTES};
pub use change::{Change, ChangeEvent, ChangeSink, ChangeTrigger};
pub use ctx::{
    BulkAccess, BulkKind, ClientInfo, Decision, Obligations, QueryParam, RequestCtx, RequestId, RequestInfo,
    ResponseInfo, RouteMeta, ShadowDecision, ShadowOutcome, UpstreamEdits,
};
pub use error::{Denial, ErrorCode};
pub use fhir::{patient_of_reference, Compartment, FhirRequest, Interaction, UnresolvedParam};
pub use principal::{PatientId, Principal, Subject, TenantId};
pub use stage::{Flow, LocalResponse, PreRead, Readiness, ResponseHead, Stage};

/// Re-export of the `async_trait` attribute so stage crates implement [`Stage`] without naming the
/// crate themselves.
pub use async_trait::async_trait;
