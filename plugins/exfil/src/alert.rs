//! The alert line (`v: 1`), built from a finding and the request that tipped it.
//!
//! Allow-listed fields only. Principal and patient ids appear here and nowhere else (never in
//! logs or metric labels): the alerts file is the one place a SOC analyst needs them. The
//! break-glass justification is free text that may itself carry PHI, so only whether it was given
//! and its length are written.
//!
//! An operator's lift of a block (`ExfilStage::unblock`) is a line of the same shape (rule
//! `block_lifted`, action `lift`): the SOC's evidence of who was let through again, when and why.

use std::net::IpAddr;
use std::time::{Instant, SystemTime};

use phigate_plugin::{PatientId, Principal, RequestCtx};
use serde::Serialize;

use crate::state::Finding;

/// The alert format version.
pub const ALERT_VERSION: u8 = 1;

#[derive(Serialize)]
struct AlertV1<'a> {
    v: u8,
    ts: String,
    alert_id: String,
    rule: &'static str,
    policy_alert: Option<&'a str>,
    principal: PrincipalFields<'a>,
    tenant: Option<&'a str>,
    session_id: Option<&'a str>,
    client_id: Option<&'a str>,
    source_ip: Option<IpAddr>,
    route: Option<&'a str>,
    window_secs: u64,
    observed: u64,
    threshold: u64,
    sample_patient_ids: &'a [PatientId],
    action: &'static str,
    blocked_until: Option<String>,
    request_id: Option<&'a str>,
    break_glass: Option<BreakGlass>,
    lift_reason: Option<&'a str>,
    /// `replica` or `all_replicas`.
    counted_on: &'static str,
}

#[derive(Serialize)]
struct PrincipalFields<'a> {
    sub: &'a str,
    iss: &'a str,
}

#[derive(Serialize)]
struct BreakGlass {
    reason_given: bool,
    reason_bytes: usize,
}

/// The wall-clock time `later` (a monotonic instant) corresponds to.
fn wall_at(wall_now: SystemTime, now: Instant, later: Instant) -> SystemTime {
    wall_now + later.saturating_duration_since(now)
}

/// Where counted: this replica's windows, or all replicas' (`shared.windows`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CountedOn {
    Replica,
    AllReplicas,
}

impl CountedOn {
    fn as_str(self) -> &'static str {
        match self {
            CountedOn::Replica => "replica",
            CountedOn::AllReplicas => "all_replicas",
        }
    }
}

/// The request an alert names, owned (reference-counted parts only): kept by the task that
/// counts over the replicas, which raises the alert after the request is gone.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub(crate) principal: std::sync::Arc<Principal>,
    pub(crate) tenant: Option<phigate_plugin::TenantId>,
    pub(crate) source_ip: Option<IpAddr>,
    pub(crate) route: std::sync::Arc<str>,
    pub(crate) request_id: phigate_plugin::RequestId,
}

impl Origin {
    pub(crate) fn of(ctx: &RequestCtx, p: &std::sync::Arc<Principal>) -> Self {
        Origin {
            principal: p.clone(),
            tenant: ctx.tenant.clone().or_else(|| p.tenant.clone()),
            source_ip: ctx.client.ip,
            route: ctx.route.name.clone(),
            request_id: ctx.request_id.clone(),
        }
    }
}

/// The request a finding's line names.
struct Tipped<'a> {
    principal: &'a Principal,
    tenant: Option<&'a str>,
    source_ip: Option<IpAddr>,
    route: &'a str,
    request_id: &'a str,
    policy_alert: Option<&'a str>,
    break_glass: Option<BreakGlass>,
    counted_on: CountedOn,
}

/// Serializes one alert as a JSON line (with its `\n`). (Serializing these plain fields cannot
/// fail; a failure would be logged and the alert counted as dropped.)
pub(crate) fn line(
    f: &Finding,
    ctx: &RequestCtx,
    p: &Principal,
    at: (SystemTime, Instant),
    blocked_until: Option<Instant>,
) -> Option<Vec<u8>> {
    let decision = ctx.decision.as_ref();
    let policy_alert = match f.rule {
        crate::rules::RuleId::Policy => decision.and_then(|d| d.obligations.alert.as_deref()),
        _ => None,
    };
    let break_glass = (decision.is_some_and(|d| d.obligations.break_glass)
        || ctx.break_glass_reason.is_some())
    .then(|| BreakGlass {
        reason_given: ctx.break_glass_reason.as_deref().is_some_and(|r| !r.is_empty()),
        reason_bytes: ctx.break_glass_reason.as_deref().map_or(0, str::len),
    });
    let tipped = Tipped {
        principal: p,
        tenant: ctx.tenant.as_ref().or(p.tenant.as_ref()).map(|t| t.as_str()),
        source_ip: ctx.client.ip,
        route: &ctx.route.name,
        request_id: ctx.request_id.as_str(),
        policy_alert,
        break_glass,
        counted_on: CountedOn::Replica,
    };
    finding_line(f, tipped, at, blocked_until)
}

/// Serializes an alert of the windows counted over all replicas, naming the request whose
/// addition took the total over the threshold (this replica's, possibly some milliseconds ago).
pub(crate) fn shared_line(
    f: &Finding,
    o: &Origin,
    at: (SystemTime, Instant),
    blocked_until: Option<Instant>,
) -> Option<Vec<u8>> {
    let tipped = Tipped {
        principal: &o.principal,
        tenant: o.tenant.as_ref().map(|t| t.as_str()),
        source_ip: o.source_ip,
        route: &o.route,
        request_id: o.request_id.as_str(),
        policy_alert: None,
        break_glass: None,
        counted_on: CountedOn::AllReplicas,
    };
    finding_line(f, tipped, at, blocked_until)
}

fn finding_line(
    f: &Finding,
    t: Tipped<'_>,
    (wall, now): (SystemTime, Instant),
    blocked_until: Option<Instant>,
) -> Option<Vec<u8>> {
    let alert = AlertV1 {
        v: ALERT_VERSION,
        ts: humantime::format_rfc3339_millis(wall).to_string(),
        alert_id: uuid::Uuid::new_v4().to_string(),
        rule: f.rule.as_str(),
        policy_alert: t.policy_alert,
        principal: PrincipalFields { sub: t.principal.subject.as_str(), iss: &t.principal.issuer },
        tenant: t.tenant,
        session_id: t.principal.session_id.as_deref(),
        client_id: t.principal.client_id.as_deref(),
        source_ip: t.source_ip,
        route: Some(t.route),
        window_secs: f.window.as_secs(),
        observed: f.observed,
        threshold: f.threshold,
        sample_patient_ids: &f.samples,
        action: f.action.as_str(),
        blocked_until: blocked_until
            .map(|until| humantime::format_rfc3339_millis(wall_at(wall, now, until)).to_string()),
        request_id: Some(t.request_id),
        break_glass: t.break_glass,
        lift_reason: None,
        counted_on: t.counted_on.as_str(),
    };
    encode(&alert)
}

/// The rule and action of a lift line.
pub(crate) const LIFT_RULE: &str = "block_lifted";
const LIFT_ACTION: &str = "lift";

/// Serializes the record of an operator lifting the block of (issuer, subject), with the
/// operator's `reason` (checked by the caller: bounded, no control characters) and when the
/// block lifted would have ended, if one was in force here. No request, so no patient.
pub(crate) fn lift_line(
    (iss, sub): (&str, &str),
    reason: &str,
    wall: SystemTime,
    blocked_until: Option<SystemTime>,
) -> Option<Vec<u8>> {
    let alert = AlertV1 {
        v: ALERT_VERSION,
        ts: humantime::format_rfc3339_millis(wall).to_string(),
        alert_id: uuid::Uuid::new_v4().to_string(),
        rule: LIFT_RULE,
        policy_alert: None,
        principal: PrincipalFields { sub, iss },
        tenant: None,
        session_id: None,
        client_id: None,
        source_ip: None,
        route: None,
        window_secs: 0,
        observed: 0,
        threshold: 0,
        sample_patient_ids: &[],
        action: LIFT_ACTION,
        blocked_until: blocked_until.map(|t| humantime::format_rfc3339_millis(t).to_string()),
        request_id: None,
        break_glass: None,
        lift_reason: Some(reason),
        counted_on: CountedOn::Replica.as_str(),
    };
    encode(&alert)
}

fn encode(alert: &AlertV1<'_>) -> Option<Vec<u8>> {
    match serde_json::to_vec(alert) {
        Ok(mut out) => {
            out.push(b'\n');
            Some(out)
        }
        Err(e) => {
            log::error!("exfil alert not serialized: {e}");
            None
        }
    }
}
