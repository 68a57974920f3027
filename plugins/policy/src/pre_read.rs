//! Pre-reads: a write by id (`PUT`, `PATCH` or `DELETE Observation/123`) changes a record the
//! request does not describe. Its path names no patient and its body names only the patients the
//! record will have, not the one it has; so a care-team writer could overwrite or delete any
//! patient's Observation by guessing its id. Like a FHIR server's authorization interceptor, the
//! gateway reads the stored record first and the policy stage checks it with the same verifier
//! as responses (every patient it names must be permitted) before the write is audited or sent.
//!
//! Only for decisions that hold responses to permitted patients (a list, or a tenant's), and only on patient-compartment
//! types other than `Patient` (for `Patient/123` the path already names the patient). A record
//! that does not exist (404, 410) is an update-as-create: its body was already judged. Any other
//! answer, or none, refuses the write (fail closed). Every outcome is counted; no id or body is
//! ever logged.

use http::StatusCode;
use phigate_plugin::{Denial, ErrorCode, Interaction, PreRead, RequestCtx};

use crate::events::PRE_READS;
use crate::labels::Withheld;
use crate::permit::Permit;
use crate::revision::Revision;
use crate::verify::{verify_collect, Verdict};

/// Marks a request whose pre-read the policy stage asked for: another stage may ask for one too,
/// and the policy stage judges only its own.
#[derive(Debug, Clone, Copy)]
struct Asked;

/// Asks for a pre-read when `ctx`, allowed by a decision that holds it to permitted patients,
/// needs the stored record read before it is forwarded.
pub(crate) fn ask_if_wanted(ctx: &mut RequestCtx, revision: &Revision) {
    if wanted(ctx, revision) {
        ctx.upstream.pre_read = true;
        ctx.extensions.insert(Asked);
    }
}

fn wanted(ctx: &RequestCtx, revision: &Revision) -> bool {
    let Some(fhir) = ctx.fhir.as_ref() else { return false };
    let write = matches!(fhir.interaction, Interaction::Update | Interaction::Patch | Interaction::Delete);
    let Some(ty) = fhir.resource_type.filter(|ty| *ty != "Patient") else { return false };
    write && fhir.id.is_some() && revision.in_patient_compartment(ty)
}

/// Judges the pre-read's answer for the request in `ctx`, when the policy stage asked for it.
pub(crate) fn judge(ctx: &RequestCtx, read: PreRead<'_>) -> Result<(), Denial> {
    if ctx.extensions.get::<Asked>().is_none() {
        return Ok(());
    }
    let (result, verdict) = outcome(ctx, read);
    PRE_READS.with_label_values(&[result]).inc();
    verdict
}

fn outcome(ctx: &RequestCtx, read: PreRead<'_>) -> (&'static str, Result<(), Denial>) {
    let (status, body) = match read {
        PreRead::Failed(code) => return ("error", Err(Denial::new(code).with_cause("pre-read failed"))),
        PreRead::Answered { status, body } => (status, body),
    };
    if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
        return ("missing", Ok(()));
    }
    if !status.is_success() {
        let denial = Denial::new(ErrorCode::UpstreamError)
            .with_cause(format!("pre-read answered with status {}", status.as_u16()));
        return ("error", Err(denial));
    }
    let Some(permit) = ctx.extensions.get::<Permit>() else {
        // Asked for by a decision with a permitted set; without one nothing can be judged.
        return ("error", Err(Denial::new(ErrorCode::PolicyError).with_cause("pre-read without a decision")));
    };
    let unreadable = || Denial::new(ErrorCode::PolicyError).with_cause("pre-read body is not readable JSON");
    // An empty 2xx body shows no record at all: it cannot be told apart from one naming anybody.
    if body.iter().all(u8::is_ascii_whitespace) {
        return ("error", Err(unreadable()));
    }
    let checked = verify_collect(body, permit);
    match checked.verdict {
        // A record the writer may not read, it may not change either.
        Verdict::Clean if checked.withheld != Withheld::Nothing => (
            "denied",
            Err(Denial::new(ErrorCode::SecurityLabelNotPermitted)
                .with_cause("stored record carries a withheld security label")),
        ),
        Verdict::Clean => ("allowed", Ok(())),
        Verdict::Violation => (
            "denied",
            Err(Denial::new(ErrorCode::PatientNotPermitted).with_cause(if checked.unknown_patient {
                "stored record names a patient the policy data places in no tenant"
            } else {
                "stored record names a patient outside the permitted set"
            })),
        ),
        Verdict::Unreadable => ("error", Err(unreadable())),
    }
}
