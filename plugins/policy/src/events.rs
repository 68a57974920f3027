//! Metrics and log events of the policy stage. Labels come from bounded sets (result, kind,
//! code); no subject, patient, query value or body is ever logged or labelled.

use std::sync::LazyLock;

use prometheus::{IntCounterVec, IntGaugeVec, Opts};

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|_| unreachable_metric(name));
    // A second registration (another stage instance in the same process) keeps the first.
    let _ = prometheus::default_registry().register(Box::new(c.clone()));
    c
}

#[cold]
fn unreachable_metric(name: &str) -> IntCounterVec {
    log::error!("policy metric {name} could not be created");
    IntCounterVec::new(Opts::new("phigate_policy_invalid", "invalid"), &[])
        .unwrap_or_else(|_| std::process::abort())
}

/// Decisions by result: `allow`, `deny`, `error`.
pub(crate) static DECISIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter("phigate_policy_decisions_total", "Policy decisions by result (allow, deny, error).", &["result"])
});

/// Evaluation failures (fail closed) by kind: `timeout`, `eval`, `output`.
pub(crate) static ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "phigate_policy_errors_total",
        "Policy evaluations that failed and denied with policy_error, by kind.",
        &["kind"],
    )
});

/// Reload attempts by result: `applied`, `unchanged`, `rejected`; for the shadow policy
/// `shadow_applied`, `shadow_rejected`.
pub(crate) static RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "phigate_policy_reloads_total",
        "Policy reload attempts by result (applied, unchanged, rejected).",
        &["result"],
    )
});

/// Responses replaced because they named a patient outside the permitted set, carried a
/// withheld security label, or could not be verified: `violation`, `security_label`,
/// `unreadable`.
pub(crate) static RESPONSE_CHECKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "phigate_policy_response_denials_total",
        "Responses replaced by response verification, by reason.",
        &["reason"],
    )
});

/// Bulk export URLs refused because another principal started the export, by URL kind.
pub(crate) static BULK_REFUSALS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "phigate_policy_bulk_not_owner_total",
        "Bulk export URLs (status, file) refused because they were issued to another principal.",
        &["url"],
    )
});

/// Search result entries (and bulk file lines) left out because they carried a withheld security
/// label.
pub(crate) static WITHHELD_ENTRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "phigate_policy_withheld_entries_total",
        "Search result entries left out because they carry a security label the caller is not cleared for.",
        &[],
    )
});

/// Bundles whose `total` or `last` link was removed because the caller has labels withheld.
pub(crate) static HIDDEN_COUNTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "phigate_policy_hidden_counts_total",
        "Bundles whose total or last link was removed because the caller has security labels withheld.",
        &[],
    )
});

/// Searches narrowed to the permitted patients, or refused because narrowing was not possible.
pub(crate) static NARROWING: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "phigate_policy_narrowing_total",
        "Searches narrowed (narrowed) or refused (refused) by the policy stage.",
        &["result"],
    )
});

/// Searches under a `max_page_size` obligation, by what the cap did.
pub(crate) static PAGE_CAPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "phigate_policy_page_caps_total",
        "Searches under a max_page_size obligation: _count within (within), added (added), lowered (clamped) or refused (refused).",
        &["result"],
    )
});

/// Pre-reads of the record a write by id changes, by result: `allowed` (every patient it names
/// is permitted), `denied` (it names another patient), `missing` (404/410: the write creates it),
/// `error` (any other answer, an unreadable body or no answer: the write is refused).
pub(crate) static PRE_READS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "phigate_policy_pre_reads_total",
        "Stored records read before a write by id, by result (allowed, denied, missing, error).",
        &["result"],
    )
});

/// Decision cache lookups: `hit`, `miss`.
pub(crate) static CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "phigate_policy_decision_cache_total",
        "Decision cache lookups by result (hit, miss).",
        &["result"],
    )
});

/// The active revision: one series with value 1, labelled with the content hash.
pub(crate) static REVISION: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    let g = IntGaugeVec::new(
        Opts::new("phigate_policy_revision_info", "The active policy revision (content hash) has value 1."),
        &["revision"],
    )
    .unwrap_or_else(|_| std::process::abort());
    let _ = prometheus::default_registry().register(Box::new(g.clone()));
    g
});

/// Marks `new` as the active revision in the gauge.
pub(crate) fn revision_active(old: Option<&str>, new: &str) {
    if let Some(old) = old.filter(|o| *o != new) {
        let _ = REVISION.remove_label_values(&[old]);
    }
    REVISION.with_label_values(&[new]).set(1);
}

/// A reload that was rejected: the reason is a load error (file names, Rego positions), never
/// request data.
pub(crate) fn reload_rejected(revision_attempted: Option<&str>, error: &crate::LoadError) {
    RELOADS.with_label_values(&["rejected"]).inc();
    log::error!(
        "policy reload rejected (attempted revision {}), keeping the active revision: {error}",
        revision_attempted.unwrap_or("unknown")
    );
}

/// A policy evaluation failure (the request is denied with `policy_error`).
pub(crate) fn eval_failed(revision: &str, request_id: &str, error: &crate::EvalError) {
    ERRORS.with_label_values(&[error.kind()]).inc();
    DECISIONS.with_label_values(&["error"]).inc();
    // The engine's message can quote values from the input: it is left out here and can be
    // reproduced offline with `phigate policy eval --input FILE`.
    log::warn!(
        "policy evaluation failed, denied with policy_error: revision={revision} request_id={request_id} kind={}",
        error.kind()
    );
}

/// Shadow policy decisions compared with the active ones: `agree`, `would_allow`, `would_deny`,
/// `would_differ`, `error`.
pub(crate) static SHADOW: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "phigate_policy_shadow_decisions_total",
        "Shadow policy decisions compared with the enforced ones, by outcome.",
        &["outcome"],
    )
});
