//! The access record (`kind: "access"`, format `v: 1`) built from a [`RequestCtx`].
//!
//! Allow-listed fields only: no header, body, token or raw query value is ever copied. Query
//! parameter names are kept; values are kept in clear only when they are the patient ids the
//! request already names (they are recorded in `patients` anyway); every other value is replaced
//! by a keyed HMAC-SHA256, so an investigator holding the key can correlate equal values without
//! the trail holding, say, a searched name or birth date.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use phigate_plugin::{
    ChangeEvent, Compartment, FhirRequest, Interaction, PatientId, QueryParam, RequestCtx, ShadowDecision,
};
use serde::Serialize;
use sha2::Sha256;

/// Which moment of a request a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Written before forwarding; durable before any byte goes upstream.
    Attempt,
    /// Written after a forwarded request completed (or failed upstream).
    Outcome,
    /// Written for a request refused or answered by the gateway without forwarding.
    Denied,
}

impl Phase {
    /// The label used in records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Attempt => "attempt",
            Phase::Outcome => "outcome",
            Phase::Denied => "denied",
        }
    }
}

/// RFC 3339 UTC with microseconds.
struct Ts(SystemTime);

impl Serialize for Ts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_micros(self.0))
    }
}

/// The current time as the record format writes it.
pub(crate) fn now_ts() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

#[derive(Serialize)]
struct FhirFields<'a> {
    interaction: Interaction,
    resource_type: Option<&'a str>,
    id: Option<&'a str>,
    version_id: Option<&'a str>,
    operation: Option<&'a str>,
    compartment: Option<&'a Compartment>,
    count: Option<u32>,
}

#[derive(Serialize)]
struct QueryField<'a> {
    name: &'a str,
    /// In clear: only patient ids the request names.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    /// Keyed HMAC-SHA256 of the value, base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    value_hmac: Option<String>,
}

#[derive(Serialize)]
struct DecisionFields<'a> {
    allow: bool,
    reasons: &'a [String],
    revision: &'a str,
    break_glass: bool,
    /// What a shadow policy decided for the same request (only when one is configured).
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow: Option<&'a ShadowDecision>,
}

/// The access record, field order as documented in the README.
#[derive(Serialize)]
struct Record<'a> {
    ts: Ts,
    phase: Phase,
    request_id: &'a str,
    trace_id: Option<&'a str>,
    tenant: Option<&'a str>,
    subject: Option<&'a str>,
    issuer: Option<&'a str>,
    session_id: Option<&'a str>,
    client_id: Option<&'a str>,
    source_ip: Option<IpAddr>,
    client_cert: Option<&'a str>,
    method: &'a str,
    route: &'a str,
    path: &'a str,
    fhir: Option<FhirFields<'a>>,
    /// Reached through a bulk export URL the gateway issued: `status` or `file`.
    bulk: Option<&'static str>,
    patients: &'a [PatientId],
    /// The patients the response body named, as a stage that read it recorded them (outcome).
    disclosed: Option<&'a [PatientId]>,
    query: Vec<QueryField<'a>>,
    decision: Option<DecisionFields<'a>>,
    break_glass_reason: Option<&'a str>,
    forwarded: bool,
    status: Option<u16>,
    bytes_out: Option<u64>,
    entries: Option<u32>,
    withheld: Option<u32>,
    upstream_latency_us: Option<u64>,
    gateway_latency_us: Option<u64>,
    error: Option<&'static str>,
}

/// Builds the kind-specific members of an access record (the object without its braces).
pub(crate) struct RecordBuilder {
    hmac: Option<Hmac<Sha256>>,
}

impl RecordBuilder {
    /// A builder; `hmac_key` keys the query-value HMAC (without it values are dropped).
    pub(crate) fn new(hmac_key: Option<&[u8]>) -> Self {
        RecordBuilder { hmac: hmac_key.and_then(|k| Hmac::<Sha256>::new_from_slice(k).ok()) }
    }

    fn value_hmac(&self, value: &str) -> Option<String> {
        let mut mac = self.hmac.clone()?;
        mac.update(value.as_bytes());
        Some(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    /// Query params: names in clear; values in clear only when they are patient ids the request
    /// names, else as keyed HMAC (or dropped without a key).
    fn query_fields<'a>(&self, query: &'a [QueryParam], patients: &[PatientId]) -> Vec<QueryField<'a>> {
        query
            .iter()
            .map(|p| {
                let clear = is_patient_value(&p.value, patients);
                QueryField {
                    name: &p.name,
                    value: clear.then_some(p.value.as_str()),
                    value_hmac: if clear { None } else { self.value_hmac(&p.value) },
                }
            })
            .collect()
    }

    /// The record members for `ctx` in `phase`. `completed` is the gateway latency (monotonic
    /// time from arrival to completion) for outcome and denied records.
    pub(crate) fn build(&self, ctx: &RequestCtx, phase: Phase, completed: Option<Duration>) -> Vec<u8> {
        let principal = ctx.principal.as_deref();
        let fhir = ctx.fhir.as_ref();
        let patients: &[PatientId] = fhir.map(|f| f.patients.as_slice()).unwrap_or(&[]);
        let query = self.query_fields(&ctx.request.query, patients);
        let done = phase != Phase::Attempt;
        let resp = &ctx.response;
        let record = Record {
            ts: Ts(SystemTime::now()),
            phase,
            request_id: ctx.request_id.as_str(),
            trace_id: ctx.trace_id.as_deref(),
            tenant: ctx.tenant.as_ref().or(principal.and_then(|p| p.tenant.as_ref())).map(|t| t.as_str()),
            subject: principal.map(|p| p.subject.as_str()),
            issuer: principal.map(|p| &*p.issuer),
            session_id: principal.and_then(|p| p.session_id.as_deref()),
            client_id: principal.and_then(|p| p.client_id.as_deref()),
            source_ip: ctx.client.ip,
            client_cert: ctx.client.cert_thumbprint.as_deref(),
            method: ctx.request.method.as_str(),
            route: &ctx.route.name,
            path: &ctx.request.path,
            fhir: fhir.map(fhir_fields),
            bulk: ctx.bulk.as_ref().map(|b| b.kind.as_str()),
            patients,
            disclosed: resp.patients.as_deref().filter(|_| done),
            query,
            decision: ctx.decision.as_ref().map(|d| DecisionFields {
                allow: d.allow,
                reasons: &d.reasons,
                revision: &d.revision,
                break_glass: d.obligations.break_glass,
                shadow: d.shadow.as_ref(),
            }),
            break_glass_reason: ctx.break_glass_reason.as_deref(),
            forwarded: resp.forwarded,
            status: resp.status.filter(|_| done),
            bytes_out: done.then_some(resp.bytes_out),
            entries: resp.entries.filter(|_| done),
            withheld: resp.withheld.filter(|_| done),
            upstream_latency_us: resp.upstream_latency.filter(|_| done).map(micros),
            gateway_latency_us: completed.map(micros),
            error: ctx.error.map(|e| e.as_str()),
        };
        let mut out = serde_json::to_vec(&record).unwrap_or_default();
        // Strip the braces: the chain writer wraps the members with v/kind/seq/prev/hash.
        if out.len() >= 2 {
            out.pop();
            out.remove(0);
        }
        out
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn fhir_fields(f: &FhirRequest) -> FhirFields<'_> {
    FhirFields {
        interaction: f.interaction,
        resource_type: f.resource_type,
        id: f.id.as_deref(),
        version_id: f.version_id.as_deref(),
        operation: f.operation.as_deref(),
        compartment: f.compartment.as_ref(),
        count: f.count,
    }
}

/// Whether every comma-separated item of `value` is (a reference to) a patient the request names.
fn is_patient_value(value: &str, patients: &[PatientId]) -> bool {
    !patients.is_empty()
        && !value.is_empty()
        && value.split(',').all(|item| {
            let id = item.strip_prefix("Patient/").unwrap_or(item);
            patients.iter().any(|p| p.as_str() == id)
        })
}

/// The members of an operator record: when, which action, and its details (allow-listed by the
/// caller: who was acted on and why, never a token or patient data).
pub(crate) fn operator_body(action: &str, details: &serde_json::Value) -> Vec<u8> {
    #[derive(Serialize)]
    struct Operator<'a> {
        ts: Ts,
        action: &'a str,
        details: &'a serde_json::Value,
    }
    let record = Operator { ts: Ts(SystemTime::now()), action, details };
    let mut out = serde_json::to_vec(&record).unwrap_or_default();
    // Strip the braces: the chain writer wraps the members with v/kind/seq/prev/hash.
    if out.len() >= 2 {
        out.pop();
        out.remove(0);
    }
    out
}

/// The `details` of a change's operator record: the change's own allow-listed fields (content
/// hashes, names, reason classes), then `trigger` and `at` (when it took effect, which may be a
/// little before the record's `ts`: recording is queued behind the change, never ahead of it).
pub(crate) fn change_details(event: &ChangeEvent) -> serde_json::Value {
    let mut tagged = serde_json::to_value(&event.change).unwrap_or_default();
    let mut details = tagged.get_mut("details").map(serde_json::Value::take).unwrap_or_default();
    if let Some(map) = details.as_object_mut() {
        map.insert("trigger".into(), serde_json::to_value(event.trigger).unwrap_or_default());
        let at = humantime::format_rfc3339_micros(event.at).to_string();
        map.insert("at".into(), serde_json::Value::String(at));
    }
    details
}
