//! `phigate audit report DIR`: who touched which patient, when, and with what outcome, read from
//! a verified trail. What a privacy officer answers a patient's request for an accounting of
//! disclosures with (HIPAA 45 CFR 164.528), and what a SOC analyst reads after an alert.
//!
//! The trail is verified first ([`crate::verify`]); a trail that is not intact gives no report,
//! so a report never looks authoritative over edited records. Only bytes that existed before
//! the verification are read, so records a running gateway appends meanwhile are not reported
//! unverified. One access is one request: its `attempt` and `outcome` records are merged (a
//! refused request has a single `denied` record; an `attempt` whose outcome was never written,
//! after a crash, is reported `incomplete`).

mod write;

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::scan::unskipped_lines;
use crate::segment::list_segments;
use crate::verify::{verify, VerifyReport, VerifyStatus};

/// Which accesses to report (every given filter must hold).
#[derive(Debug, Clone, Default)]
pub struct ReportQuery {
    /// Accesses that reached this patient: named in the request (path, query, Bundle entry) or in
    /// the response (a search result, an export file) as the gateway verified it.
    pub patient: Option<String>,
    /// Accesses by this subject (token `sub`).
    pub subject: Option<String>,
    /// Accesses in this tenant.
    pub tenant: Option<String>,
    /// Accesses that started at or after this time.
    pub since: Option<SystemTime>,
    /// Accesses that started before this time.
    pub until: Option<SystemTime>,
    /// Only emergency (break-glass) accesses.
    pub break_glass_only: bool,
    /// Only refused accesses.
    pub denied_only: bool,
    /// Only accesses that met records restricted by security labels the caller is not cleared
    /// for: search entries left out, or a read or write refused with
    /// `security_label_not_permitted`.
    pub restricted_only: bool,
    /// Only accesses a shadow policy compared with this outcome (`would_deny`, `would_allow`,
    /// `would_differ`, `agree`, `error`): what a candidate policy would have changed.
    pub shadow: Option<String>,
    /// Only bulk export accesses: kick-offs (`$export`), and the export's status and files
    /// reached through the URLs the gateway issued.
    pub bulk_only: bool,
}

/// How the report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// One JSON object per access and line ([`Access`]).
    Jsonl,
    /// One FHIR R4 `Bundle` (type `collection`) of `AuditEvent` resources.
    Fhir,
}

/// Why no report was written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The trail did not verify (tampered or unreadable): the verification report says where.
    #[error("the audit trail did not verify:\n{0}")]
    NotIntact(Box<VerifyReport>),
    /// A segment could not be read after it verified, or the output could not be written.
    #[error("report failed: {0}")]
    Io(#[from] io::Error),
}

impl ReportError {
    /// The exit code of `phigate audit report`: 1 tampered, 2 unreadable or failed.
    pub fn exit_code(&self) -> i32 {
        match self {
            ReportError::NotIntact(r) if r.status == VerifyStatus::Tampered => 1,
            _ => 2,
        }
    }
}

/// One access as reported: the request's records merged.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Access {
    /// When the request arrived at the audit stage (its first record), UTC RFC 3339.
    pub ts: String,
    /// `forwarded` (sent upstream; `status` says how it went), `denied` (refused by the gateway,
    /// never forwarded) or `incomplete` (no outcome
    /// recorded: the process stopped in between).
    pub outcome: String,
    /// The request id (`x-request-id`).
    pub request_id: String,
    /// Tenant.
    pub tenant: Option<String>,
    /// Token `sub`.
    pub subject: Option<String>,
    /// Token `iss`.
    pub issuer: Option<String>,
    /// OAuth client.
    pub client_id: Option<String>,
    /// Token `sid`.
    pub session_id: Option<String>,
    /// The client's address.
    pub source_ip: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Route name.
    pub route: String,
    /// FHIR interaction (`read`, `search-type`, ...), on FHIR routes.
    pub interaction: Option<String>,
    /// FHIR resource type.
    pub resource_type: Option<String>,
    /// FHIR operation (`everything`, `export`, ...).
    pub operation: Option<String>,
    /// Reached through a bulk export URL the gateway issued: `status` or `file`.
    pub bulk: Option<String>,
    /// Every patient the request named.
    pub patients: Vec<String>,
    /// The patients the response named (verified responses: a search, an export file), whether
    /// the request named them or not.
    pub disclosed: Vec<String>,
    /// The status sent to the client.
    pub status: Option<u16>,
    /// The stable error code the request ended with.
    pub error: Option<String>,
    /// Search result entries left out for their security labels.
    pub withheld: Option<u32>,
    /// The policy decision's reasons.
    pub reasons: Vec<String>,
    /// How a shadow policy compared (`would_deny`, ...), when one was configured.
    pub shadow: Option<String>,
    /// For `would_differ`: what differed (`code`, or obligation names such as
    /// `narrow_patients`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shadow_differs: Vec<String>,
    /// Emergency access.
    pub break_glass: bool,
    /// The emergency-access justification.
    pub break_glass_reason: Option<String>,
}

/// What the report covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportSummary {
    /// Accesses in the trail.
    pub accesses: u64,
    /// Accesses written (matching the query).
    pub reported: u64,
}

/// Verifies the trail in `dir` (checkpoints under `public_key` when given, as
/// [`crate::verify`]), then writes every access matching `query` to `out`.
///
/// # Errors
/// [`ReportError::NotIntact`] when the trail does not verify (nothing is written), or an I/O
/// failure.
pub fn report(
    dir: &Path,
    public_key: Option<&Path>,
    query: &ReportQuery,
    format: ReportFormat,
    out: &mut dyn Write,
) -> Result<ReportSummary, ReportError> {
    // Lengths before verifying: everything up to them is what verify then read and checked.
    let segments = list_segments(dir)?;
    let lengths =
        segments.iter().map(|(_, p)| fs::metadata(p).map(|m| m.len())).collect::<io::Result<Vec<_>>>()?;
    let verified = verify(dir, public_key);
    if verified.status != VerifyStatus::Intact {
        return Err(ReportError::NotIntact(Box::new(verified)));
    }
    let mut writer = write::Writer::new(format, out)?;
    let mut summary = ReportSummary { accesses: 0, reported: 0 };
    let mut open: HashMap<String, Access> = HashMap::new();
    let mut emit = |a: Access, w: &mut write::Writer<'_>| -> io::Result<()> {
        summary.accesses += 1;
        if query.matches(&a) {
            summary.reported += 1;
            w.write(&a)?;
        }
        Ok(())
    };
    for ((_, path), len) in segments.iter().zip(lengths) {
        let mut data = fs::read(path)?;
        data.truncate(usize::try_from(len).unwrap_or(usize::MAX));
        for line in unskipped_lines(&data).iter().filter(|l| l.complete) {
            let Ok(record) = serde_json::from_slice::<Record>(line.bytes) else { continue };
            if record.kind != "access" {
                continue;
            }
            match record.phase.as_str() {
                "attempt" => {
                    open.insert(record.request_id.clone(), record.into_access("incomplete"));
                }
                phase => {
                    let outcome = if phase == "outcome" { "forwarded" } else { "denied" };
                    // `denied` may follow an `attempt` too: refused after the attempt was
                    // recorded (a pre-read that failed, an upstream never reached).
                    let started = open.remove(&record.request_id).map(|a| a.ts);
                    let mut access = record.into_access(outcome);
                    if let Some(ts) = started {
                        access.ts = ts;
                    }
                    emit(access, &mut writer)?;
                }
            }
        }
    }
    let mut incomplete: Vec<Access> = open.into_values().collect();
    incomplete.sort_by(|a, b| a.ts.cmp(&b.ts));
    for access in incomplete {
        emit(access, &mut writer)?;
    }
    writer.finish()?;
    Ok(summary)
}

impl Access {
    /// Whether the access met records restricted by security labels (left out or refused).
    fn met_restricted_records(&self) -> bool {
        self.withheld.is_some_and(|n| n > 0) || self.error.as_deref() == Some("security_label_not_permitted")
    }
}

impl ReportQuery {
    fn matches(&self, a: &Access) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| want.is_none() || want == have;
        eq(&self.subject, &a.subject)
            && eq(&self.tenant, &a.tenant)
            && self.patient.as_ref().is_none_or(|p| a.patients.contains(p) || a.disclosed.contains(p))
            && (!self.break_glass_only || a.break_glass)
            && (!self.denied_only || a.outcome == "denied")
            && (!self.restricted_only || a.met_restricted_records())
            && eq(&self.shadow, &a.shadow)
            && (!self.bulk_only || a.bulk.is_some() || a.operation.as_deref() == Some("export"))
            && self.since.is_none_or(|t| a.ts.as_str() >= rfc3339(t).as_str())
            && self.until.is_none_or(|t| a.ts.as_str() < rfc3339(t).as_str())
    }
}

/// A time bound for [`ReportQuery`], in UTC like the records: RFC 3339
/// (`2026-11-01T08:00:00Z`, fractional seconds allowed) or a date (`2026-11-01`, midnight UTC).
///
/// # Errors
/// A fixed message naming the accepted forms.
pub fn parse_time(s: &str) -> Result<SystemTime, String> {
    let full = if s.len() == 10 { format!("{s}T00:00:00Z") } else { s.to_owned() };
    humantime::parse_rfc3339_weak(&full)
        .map_err(|_| "expected a UTC time (2026-11-01T08:00:00Z) or a date (2026-11-01)".to_owned())
}

/// The records' own timestamp format (microseconds, `Z`), so that comparing the strings compares
/// the times.
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// The members of an access record the report reads.
#[derive(Deserialize)]
struct Record {
    kind: String,
    #[serde(default)]
    phase: String,
    #[serde(default)]
    ts: String,
    #[serde(default)]
    request_id: String,
    tenant: Option<String>,
    subject: Option<String>,
    issuer: Option<String>,
    session_id: Option<String>,
    client_id: Option<String>,
    source_ip: Option<String>,
    #[serde(default)]
    method: String,
    #[serde(default)]
    route: String,
    fhir: Option<FhirPart>,
    bulk: Option<String>,
    #[serde(default)]
    patients: Vec<String>,
    disclosed: Option<Vec<String>>,
    decision: Option<DecisionPart>,
    break_glass_reason: Option<String>,
    status: Option<u16>,
    error: Option<String>,
    withheld: Option<u32>,
}

#[derive(Deserialize)]
struct FhirPart {
    interaction: Option<String>,
    resource_type: Option<String>,
    operation: Option<String>,
}

#[derive(Deserialize)]
struct DecisionPart {
    #[serde(default)]
    reasons: Vec<String>,
    #[serde(default)]
    break_glass: bool,
    shadow: Option<ShadowPart>,
}

#[derive(Deserialize)]
struct ShadowPart {
    outcome: String,
    #[serde(default)]
    differs: Vec<String>,
}

impl Record {
    fn into_access(self, outcome: &str) -> Access {
        let (interaction, resource_type, operation) =
            self.fhir.map_or((None, None, None), |f| (f.interaction, f.resource_type, f.operation));
        let (reasons, break_glass, shadow) =
            self.decision.map_or((Vec::new(), false, None), |d| (d.reasons, d.break_glass, d.shadow));
        let (shadow, shadow_differs) = shadow.map_or((None, Vec::new()), |s| (Some(s.outcome), s.differs));
        Access {
            ts: self.ts,
            outcome: outcome.to_owned(),
            request_id: self.request_id,
            tenant: self.tenant,
            subject: self.subject,
            issuer: self.issuer,
            client_id: self.client_id,
            session_id: self.session_id,
            source_ip: self.source_ip,
            method: self.method,
            route: self.route,
            interaction,
            resource_type,
            operation,
            bulk: self.bulk,
            patients: self.patients,
            disclosed: self.disclosed.unwrap_or_default(),
            status: self.status,
            error: self.error,
            withheld: self.withheld,
            reasons,
            shadow,
            shadow_differs,
            break_glass,
            break_glass_reason: self.break_glass_reason,
        }
    }
}
