//! The shadow policy: a candidate revision evaluated beside the active one and compared, never
//! enforced. What a security team reads before promoting it: how many decisions would change,
//! and which requests (by request id, to find in the audit trail).

use phigate_plugin::{Decision, RequestCtx, ShadowDecision, ShadowOutcome as Outcome};

use crate::decision::deny_code;
use crate::events;

/// Compares what the shadow decided with what is enforced.
pub(crate) fn compare(active: &Decision, shadow: &Decision) -> Outcome {
    match (active.allow, shadow.allow) {
        (true, false) => Outcome::WouldDeny,
        (false, true) => Outcome::WouldAllow,
        (true, true) if active.obligations == shadow.obligations => Outcome::Agree,
        (false, false) if deny_code(&active.reasons) == deny_code(&shadow.reasons) => Outcome::Agree,
        _ => Outcome::WouldDiffer,
    }
}

/// Counts the comparison and logs a disagreement: request id, route, FHIR interaction and type,
/// both revisions, verdicts and reasons (policy identifiers). Never patients, claims or values.
/// Returns the comparison for the request's audit record.
pub(crate) fn record(
    ctx: &RequestCtx,
    active: &Decision,
    shadow: Result<&Decision, &crate::EvalError>,
    revision: &str,
) -> ShadowDecision {
    let verdict = |d: &Decision| if d.allow { "allow" } else { deny_code(&d.reasons).as_str() };
    let shadow = match shadow {
        Ok(s) => s,
        Err(e) => {
            events::SHADOW.with_label_values(&["error"]).inc();
            log::warn!(
                target: "phigate::policy::shadow",
                "request_id={} shadow policy failed ({}); the active decision stands",
                ctx.request_id.as_str(),
                e.kind()
            );
            return ShadowDecision {
                revision: revision.to_owned(),
                outcome: Outcome::Error,
                verdict: None,
                differs: Vec::new(),
            };
        }
    };
    let outcome = compare(active, shadow);
    events::SHADOW.with_label_values(&[outcome.as_str()]).inc();
    let decided = ShadowDecision {
        revision: shadow.revision.clone(),
        outcome,
        verdict: Some(verdict(shadow)),
        differs: differs(outcome, active, shadow),
    };
    if outcome == Outcome::Agree {
        return decided;
    }
    let fhir = ctx.fhir.as_ref();
    log::info!(
        target: "phigate::policy::shadow",
        "request_id={} outcome={} route={} interaction={} resource_type={} active={} ({}) reasons=[{}] shadow={} ({}) reasons=[{}] differs=[{}]",
        ctx.request_id.as_str(),
        outcome.as_str(),
        ctx.route.name,
        fhir.map_or("-", |f| f.interaction.as_str()),
        fhir.and_then(|f| f.resource_type).unwrap_or("-"),
        verdict(active),
        active.revision,
        active.reasons.join(","),
        verdict(shadow),
        shadow.revision,
        shadow.reasons.join(","),
        decided.differs.join(","),
    );
    decided
}

/// What makes a `would_differ`: the error code of two denials, or the obligations of two allows
/// (by name).
fn differs(outcome: Outcome, active: &Decision, shadow: &Decision) -> Vec<&'static str> {
    match outcome {
        Outcome::WouldDiffer if !active.allow => vec!["code"],
        Outcome::WouldDiffer => active.obligations.differing(&shadow.obligations),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phigate_plugin::PatientId;

    fn d(allow: bool, reasons: &[&str]) -> Decision {
        Decision { allow, reasons: reasons.iter().map(|r| (*r).to_owned()).collect(), ..Decision::default() }
    }

    #[test]
    fn verdicts_codes_and_obligations_are_compared() {
        assert_eq!(compare(&d(true, &["fhir"]), &d(true, &["fhir", "care_team"])), Outcome::Agree);
        assert_eq!(compare(&d(true, &[]), &d(false, &["patient_not_permitted"])), Outcome::WouldDeny);
        assert_eq!(compare(&d(false, &["tenant_mismatch"]), &d(true, &[])), Outcome::WouldAllow);
        assert_eq!(
            compare(
                &d(false, &["patient_not_permitted", "unresolved_params"]),
                &d(false, &["patient_not_permitted"])
            ),
            Outcome::Agree,
            "same code: detail reasons do not count"
        );
        assert_eq!(
            compare(&d(false, &["patient_not_permitted"]), &d(false, &["scope_insufficient"])),
            Outcome::WouldDiffer
        );
        let mut narrowed = d(true, &[]);
        narrowed.obligations.narrow_patients = Some(vec![PatientId::new("p1")]);
        assert_eq!(compare(&d(true, &[]), &narrowed), Outcome::WouldDiffer);
        assert_eq!(differs(Outcome::WouldDiffer, &d(true, &[]), &narrowed), ["narrow_patients"]);
        let (denied, other) = (d(false, &["patient_not_permitted"]), d(false, &["scope_insufficient"]));
        assert_eq!(differs(Outcome::WouldDiffer, &denied, &other), ["code"]);
        assert!(differs(Outcome::WouldDeny, &d(true, &[]), &denied).is_empty());
    }
}
