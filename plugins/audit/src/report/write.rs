//! Writing a report: JSON lines, or a FHIR R4 `Bundle` of `AuditEvent` resources streamed entry
//! by entry (a six-year trail does not fit in memory as one document).
//!
//! The `AuditEvent` follows the shape IHE Basic Audit Log Patterns (BALP) gives RESTful
//! accesses: type `rest`, subtype the FHIR interaction, action C/R/U/D/E, outcome 0 (success),
//! 4 (refused or failed by the client's doing) or 8 (a server failure), the requesting user as
//! agent (identifier system = token issuer, value = subject) with the client's address, the
//! OAuth client as a second agent, the gateway as source, and each patient as an entity with
//! role "Patient". Break-glass accesses carry purpose of use `ETREAT` (emergency treatment) and
//! the justification as the agent's purpose text.

use std::io::{self, Write};

use serde_json::{json, Value};

use super::{Access, ReportFormat};

/// A report being written.
pub(super) struct Writer<'a> {
    format: ReportFormat,
    out: &'a mut dyn Write,
    first: bool,
}

impl<'a> Writer<'a> {
    pub(super) fn new(format: ReportFormat, out: &'a mut dyn Write) -> io::Result<Writer<'a>> {
        if format == ReportFormat::Fhir {
            out.write_all(b"{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"entry\":[")?;
        }
        Ok(Writer { format, out, first: true })
    }

    pub(super) fn write(&mut self, a: &Access) -> io::Result<()> {
        match self.format {
            ReportFormat::Jsonl => {
                serde_json::to_writer(&mut *self.out, a)?;
                self.out.write_all(b"\n")
            }
            ReportFormat::Fhir => {
                if !self.first {
                    self.out.write_all(b",")?;
                }
                self.first = false;
                serde_json::to_writer(&mut *self.out, &json!({"resource": audit_event(a)}))?;
                Ok(())
            }
        }
    }

    pub(super) fn finish(self) -> io::Result<()> {
        if self.format == ReportFormat::Fhir {
            self.out.write_all(b"]}\n")?;
        }
        self.out.flush()
    }
}

const AUDIT_EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const RESTFUL_INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const SOURCE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";
const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const PARTICIPATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";

/// The `AuditEvent` for one access.
pub(super) fn audit_event(a: &Access) -> Value {
    let interaction = a.interaction.as_deref();
    let mut event = json!({
        "resourceType": "AuditEvent",
        "type": {"system": AUDIT_EVENT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "action": action(interaction, &a.method),
        "recorded": a.ts,
        "outcome": outcome(a),
        "agent": agents(a),
        "source": {
            "observer": {"display": "phigate"},
            "type": [{"system": SOURCE_TYPE, "code": "3", "display": "Web Server"}],
        },
    });
    if let Some(id) = fhir_id(&a.request_id) {
        event["id"] = Value::from(id);
    }
    if let Some(code) = interaction.filter(|i| !i.is_empty()) {
        event["subtype"] = json!([{"system": RESTFUL_INTERACTION, "code": subtype(code)}]);
    }
    if let Some(desc) = outcome_desc(a) {
        event["outcomeDesc"] = Value::from(desc);
    }
    if a.break_glass {
        event["purposeOfEvent"] =
            json!([{"coding": [{"system": ACT_REASON, "code": "ETREAT", "display": "Emergency Treatment"}]}]);
    }
    let disclosed_only = a.disclosed.iter().filter(|p| !a.patients.contains(p));
    let entities: Vec<Value> = a
        .patients
        .iter()
        .chain(disclosed_only)
        .map(|p| {
            json!({
                "what": {"reference": format!("Patient/{p}")},
                "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            })
        })
        .collect();
    if !entities.is_empty() {
        event["entity"] = Value::from(entities);
    }
    event
}

/// FHIR ids are `[A-Za-z0-9\-.]{1,64}`: a request id that is not one is left out (it is still
/// in the trail; the report does not invent another).
fn fhir_id(id: &str) -> Option<&str> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    ok.then_some(id)
}

/// The interaction's code in the FHIR `restful-interaction` code system.
fn subtype(interaction: &str) -> &str {
    match interaction {
        "search-compartment" => "search-type",
        other => other,
    }
}

/// C/R/U/D/E from the interaction, or from the method off FHIR routes.
fn action(interaction: Option<&str>, method: &str) -> &'static str {
    match interaction {
        Some("create") => "C",
        Some(
            "read" | "vread" | "history" | "search-type" | "search-system" | "search-compartment"
            | "capabilities",
        ) => "R",
        Some("update" | "patch") => "U",
        Some("delete") => "D",
        Some(_) => "E",
        None => match method {
            "GET" | "HEAD" => "R",
            "POST" => "C",
            "PUT" | "PATCH" => "U",
            "DELETE" => "D",
            _ => "E",
        },
    }
}

/// 0 success, 4 refused or a client error, 8 a server failure; an access whose outcome was never
/// recorded is 4 as well (not known to have succeeded).
fn outcome(a: &Access) -> &'static str {
    match (a.outcome.as_str(), a.status) {
        ("forwarded", Some(s)) if s < 400 => "0",
        (_, Some(s)) if s >= 500 => "8",
        _ => "4",
    }
}

fn outcome_desc(a: &Access) -> Option<String> {
    match (&a.error, a.outcome.as_str(), a.withheld.filter(|n| *n > 0)) {
        (Some(code), _, _) => Some(code.clone()),
        (None, "incomplete", _) => Some("no outcome recorded".to_owned()),
        (None, _, Some(n)) => Some(format!("entries withheld for their security labels: {n}")),
        (None, _, None) => None,
    }
}

/// The user (requestor) and, when known, the OAuth client application.
fn agents(a: &Access) -> Value {
    let mut user = json!({
        "type": {"coding": [{"system": PARTICIPATION, "code": "IRCP", "display": "information recipient"}]},
        "requestor": true,
    });
    match (&a.issuer, &a.subject) {
        (Some(iss), Some(sub)) => user["who"] = json!({"identifier": {"system": iss, "value": sub}}),
        (None, Some(sub)) => user["who"] = json!({"identifier": {"value": sub}}),
        _ => user["who"] = json!({"display": "unauthenticated"}),
    }
    if let Some(sid) = &a.session_id {
        user["altId"] = Value::from(sid.as_str());
    }
    if let Some(ip) = &a.source_ip {
        // Network access point type 2: an IP address (v4 or v6).
        user["network"] = json!({"address": ip, "type": "2"});
    }
    if let Some(reason) = a.break_glass_reason.as_deref().filter(|_| a.break_glass) {
        user["purposeOfUse"] = json!([{"text": reason}]);
    }
    let mut agents = vec![user];
    if let Some(client) = &a.client_id {
        agents.push(json!({
            "type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110150", "display": "Application"}]},
            "who": {"display": client},
            "requestor": false,
        }));
    }
    Value::from(agents)
}
