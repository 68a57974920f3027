//! FHIR Bulk Data Access (v2) export with HAPI FHIR's URLs, so the gateway's handling of the
//! asynchronous flow can be tested end to end:
//!
//! ```text
//! GET    {base}/$export?_type=…&_outputFormat=…       kick-off (needs Prefer: respond-async):
//! GET    {base}/Patient/$export?…                       202, Content-Location: the status URL
//! GET    {base}/Group/{tenant}-cohort/$export?…
//! POST   any of the three, with a `Parameters` body (`_type`, `_outputFormat` as valueString)
//! GET    {base}/$export-poll-status?_jobId=job-N       1st poll 202 (X-Progress, Retry-After),
//!                                                       later polls 200 with the manifest
//! DELETE {base}/$export-poll-status?_jobId=job-N       202; the job and its files are gone
//! GET    {base}/Binary/job-N-{Type}                     one type's resources as NDJSON
//! ```
//!
//! `Patient/$export` covers Patient and the Patient compartment types (not Practitioner), and
//! so does a Group's export, for the Group's members only: the sample upstream has one cohort per
//! tenant, `Group/<tenant>-cohort`, its first two patients (the Group resources themselves are
//! not served). With
//! `X-Phigate-Tenant: t` only resources whose `meta.tag` carries system [`TENANT_TAG_SYSTEM`] and
//! code `t` are exported, like a partitioned server; without it, the whole store. Any parameter
//! other than `_type` and `_outputFormat` (`_since`, `_typeFilter`, …) is refused rather than
//! ignored, as search does. The selection is made at kick-off; the data is immutable, so the store
//! indexes kept per type are a snapshot, rendered to NDJSON on download.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::{BufMut as _, Bytes, BytesMut};
use http::header::{CONTENT_LOCATION, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::json;

use super::fhir::{outcome, ApiRequest, Reply};
use super::search::Params;
use crate::demo::data::{resource_type, SampleData, COMPARTMENT_TYPES, RESOURCE_TYPES, TENANT_TAG_SYSTEM};

/// Export jobs kept at once; starting one more drops the oldest.
pub const MAX_EXPORT_JOBS: usize = 16;
/// The media type of export files.
pub const FHIR_NDJSON: &str = "application/fhir+ndjson";
/// The request header that limits an export to one tenant's resources.
pub const TENANT_HEADER: &str = "x-phigate-tenant";

/// The media type of the completion manifest (plain JSON, not a FHIR resource).
const MANIFEST_JSON: &str = "application/json";
/// `_outputFormat` values accepted (all mean NDJSON).
const OUTPUT_FORMATS: &[&str] = &["application/fhir+ndjson", "application/ndjson", "ndjson"];
const X_PROGRESS: HeaderName = HeaderName::from_static("x-progress");
/// Job ids are `job-1`, `job-2`, …; export file names are `{job id}-{type}`.
const JOB_PREFIX: &str = "job-";

/// What a kick-off exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExportLevel {
    /// `GET [base]/$export`: every type.
    System,
    /// `GET [base]/Patient/$export`: Patient and the Patient compartment types.
    Patient,
    /// `GET [base]/Group/[id]/$export`: the same types, of the Group's members.
    Group,
}

impl ExportLevel {
    /// The types this level exports when `_type` names none, and the only ones it may name.
    fn types(self) -> Vec<&'static str> {
        match self {
            ExportLevel::System => RESOURCE_TYPES.to_vec(),
            ExportLevel::Patient | ExportLevel::Group => {
                std::iter::once("Patient").chain(COMPARTMENT_TYPES.iter().copied()).collect()
            }
        }
    }
}

/// The export jobs of one upstream, oldest first, behind a lock that is never held across an
/// await (every caller is synchronous).
#[derive(Debug, Default)]
pub(crate) struct Exports {
    state: Mutex<State>,
    /// Each resource's line appears this many times in a row in the files (0 and 1: once).
    copies: usize,
}

#[derive(Debug, Default)]
struct State {
    /// Number of the last job started.
    last: u64,
    jobs: VecDeque<Job>,
}

/// One export: what was asked, when, and the selected store indexes.
#[derive(Debug)]
struct Job {
    id: String,
    /// The kick-off URL, echoed in the manifest.
    request: String,
    /// RFC 3339 UTC time of the kick-off.
    transaction_time: String,
    /// Whether the status has been polled (the first poll answers "in progress").
    polled: bool,
    /// Store indexes per type, sorted by type; types without a resource are left out.
    outputs: Vec<(&'static str, Vec<u32>)>,
}

impl Exports {
    /// Export files with each resource `copies` times in a row: a larger export, for tests of
    /// files streamed in many pieces.
    pub(crate) fn with_copies(copies: usize) -> Self {
        Exports { copies, ..Exports::default() }
    }

    /// `GET [base]/$export`, `GET [base]/Patient/$export` or `GET [base]/Group/[id]/$export`
    /// (`group`: the id): validates, snapshots the selection and answers 202 with the status URL
    /// in `Content-Location`. A Group not found, or of another tenant than `X-Phigate-Tenant`
    /// names, is 404.
    pub(crate) fn kick_off(
        &self,
        data: &SampleData,
        level: ExportLevel,
        group: Option<&str>,
        req: &ApiRequest<'_>,
    ) -> Reply {
        if !respond_async(req.headers) {
            return bad("Bulk export requires the header Prefer: respond-async.");
        }
        let tenant = match tenant(req.headers) {
            Ok(t) => t,
            Err(reply) => return reply,
        };
        let members = match group.map(|id| cohort(data, id)) {
            None => None,
            Some(Some((of, members))) if tenant.is_none_or(|t| t == of) => Some(members),
            Some(_) => return outcome(StatusCode::NOT_FOUND, "not-found", "Unknown Group."),
        };
        let types = match requested_types(level, req.query) {
            Ok(t) => t,
            Err(reply) => return reply,
        };
        let mut outputs = select(data, &types, tenant, members.as_deref());
        if self.copies > 1 {
            for (_, indexes) in &mut outputs {
                *indexes = indexes.iter().flat_map(|i| std::iter::repeat_n(*i, self.copies)).collect();
            }
        }
        let mut state = self.lock();
        let id = format!("{JOB_PREFIX}{}", state.last.saturating_add(1));
        let Ok(location) =
            HeaderValue::from_str(&format!("{}/$export-poll-status?_jobId={id}", req.base_url))
        else {
            return outcome(
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                "The base URL cannot be sent in a header.",
            );
        };
        state.last = state.last.saturating_add(1);
        if state.jobs.len() >= MAX_EXPORT_JOBS {
            state.jobs.pop_front();
        }
        state.jobs.push_back(Job {
            id,
            request: kick_off_url(req),
            transaction_time: now_rfc3339(),
            polled: false,
            outputs,
        });
        drop(state);
        Reply { status: StatusCode::ACCEPTED, headers: vec![(CONTENT_LOCATION, location)], ..started() }
    }

    /// `GET [base]/$export-poll-status?_jobId=…`: 202 "in progress" the first time, then the
    /// manifest.
    pub(crate) fn poll(&self, query: &str, base_url: &str) -> Reply {
        let id = match job_id(query) {
            Ok(id) => id,
            Err(reply) => return reply,
        };
        let mut state = self.lock();
        let Some(job) = state.jobs.iter_mut().find(|j| j.id == id) else {
            return no_job();
        };
        if !job.polled {
            job.polled = true;
            return Reply::accepted(vec![
                (X_PROGRESS, HeaderValue::from_static("in-progress")),
                (RETRY_AFTER, HeaderValue::from_static("1")),
            ]);
        }
        let body = manifest(job, base_url);
        drop(state);
        Reply { content_type: Some(MANIFEST_JSON), ..Reply::ok(body) }
    }

    /// `DELETE [base]/$export-poll-status?_jobId=…`: forgets the job and its files.
    pub(crate) fn cancel(&self, query: &str) -> Reply {
        let id = match job_id(query) {
            Ok(id) => id,
            Err(reply) => return reply,
        };
        let mut state = self.lock();
        let Some(at) = state.jobs.iter().position(|j| j.id == id) else {
            return no_job();
        };
        state.jobs.remove(at);
        drop(state);
        Reply::accepted(Vec::new())
    }

    /// `GET [base]/Binary/{job id}-{type}`: the type's resources of the job, one per line.
    pub(crate) fn file(&self, data: &SampleData, name: &str) -> Reply {
        let Some((id, ty)) = name.rsplit_once('-') else {
            return no_file();
        };
        let indexes = self
            .lock()
            .jobs
            .iter()
            .find(|j| j.id == id)
            .and_then(|j| j.outputs.iter().find(|(t, _)| *t == ty))
            .map(|(_, indexes)| indexes.clone());
        let Some(indexes) = indexes else {
            return no_file();
        };
        let size = indexes.iter().map(|i| data.get(*i).json.len() + 1).sum();
        let mut out = BytesMut::with_capacity(size);
        for i in indexes {
            // Serialized compactly at startup: one resource is one line.
            out.put_slice(&data.get(i).json);
            out.put_u8(b'\n');
        }
        Reply { content_type: Some(FHIR_NDJSON), ..Reply::ok(out.freeze()) }
    }

    /// The state, even after a panic elsewhere (jobs stay consistent: every change is one step).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether `name` (below `Binary/`) is an export file name rather than some other Binary id.
pub(crate) fn is_file_name(name: &str) -> bool {
    name.starts_with(JOB_PREFIX)
}

/// Whether a path (below the base) is a bulk export endpoint, which a batch entry may not use:
/// kick-off and status change state, and status and files are not FHIR JSON resources.
pub(crate) fn is_bulk_path(path: &str) -> bool {
    let mut segs = path.split('/');
    let first = segs.next().unwrap_or("");
    let second = segs.next().unwrap_or("");
    let third = segs.next().unwrap_or("");
    first.starts_with("$export")
        || second.starts_with("$export")
        || third.starts_with("$export")
        || (first == "Binary" && is_file_name(second))
}

/// The answer to HEAD on kick-off and status, which would otherwise change state.
pub(crate) fn get_only() -> Reply {
    outcome(StatusCode::METHOD_NOT_ALLOWED, "not-supported", "Bulk export kick-off and status take GET.")
}

/// `Prefer: respond-async` among the preferences (several headers or comma-separated).
fn respond_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("respond-async"))
}

/// The tenant partition: None without the header; a repeated or empty header is refused rather
/// than read as "every tenant".
fn tenant(headers: &HeaderMap) -> Result<Option<&str>, Reply> {
    let mut values = headers.get_all(TENANT_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(bad("X-Phigate-Tenant is repeated."));
    }
    match value.to_str().map(str::trim) {
        Ok(t) if !t.is_empty() => Ok(Some(t)),
        _ => Err(bad("X-Phigate-Tenant is not a valid tenant id.")),
    }
}

/// The types to export, sorted and unique: those named by `_type` (repeatable, comma-separated)
/// or, when none is, every type of the level.
fn requested_types(level: ExportLevel, query: &str) -> Result<Vec<&'static str>, Reply> {
    let params = Params::parse(query)?;
    let allowed = level.types();
    let mut types = Vec::new();
    for (name, value) in params.pairs() {
        match name {
            // FHIR: a parameter with an empty value is ignored.
            "_type" if value.is_empty() => {}
            "_type" => {
                for item in value.split(',') {
                    let ty = resource_type(item.trim())
                        .ok_or_else(|| bad("_type names an unknown resource type."))?;
                    if !allowed.contains(&ty) {
                        return Err(outcome(
                            StatusCode::BAD_REQUEST,
                            "not-supported",
                            "_type names a type outside the Patient compartment.",
                        ));
                    }
                    types.push(ty);
                }
            }
            // An unescaped `+` arrives as a space; a media type has none, so put it back.
            "_outputFormat" if OUTPUT_FORMATS.contains(&&*value.replace(' ', "+")) => {}
            "_outputFormat" => return Err(bad("_outputFormat must be application/fhir+ndjson.")),
            _ => {
                return Err(outcome(
                    StatusCode::BAD_REQUEST,
                    "not-supported",
                    "Unsupported export parameter.",
                ));
            }
        }
    }
    if types.is_empty() {
        types = allowed;
    }
    types.sort_unstable();
    types.dedup();
    Ok(types)
}

/// A tenant's cohort, `Group/<tenant>-cohort`: the tenant and its first two patients.
fn cohort<'d>(data: &'d SampleData, id: &str) -> Option<(&'d str, Vec<&'d str>)> {
    let tenant = data.tenant(id.strip_suffix("-cohort")?)?;
    Some((tenant.id.as_str(), tenant.patients.iter().take(2).map(|p| p.id.as_str()).collect()))
}

/// Store indexes per type (types without a match left out), limited to the tenant's `meta.tag`
/// and, for a Group, to its members.
fn select(
    data: &SampleData,
    types: &[&'static str],
    tenant: Option<&str>,
    members: Option<&[&str]>,
) -> Vec<(&'static str, Vec<u32>)> {
    // `_tag` tokens are indexed from `meta.tag` as `system|code`.
    let tag = tenant.map(|t| format!("{TENANT_TAG_SYSTEM}|{t}"));
    types
        .iter()
        .filter_map(|ty| {
            let mut candidates: Vec<u32> = match members {
                Some(members) => {
                    members.iter().flat_map(|m| data.of_patient(ty, m).iter().copied()).collect()
                }
                None => data.of_type(ty).to_vec(),
            };
            candidates.sort_unstable();
            let picked: Vec<u32> = candidates
                .into_iter()
                .filter(|i| tag.as_deref().is_none_or(|tag| data.get(*i).has_token("_tag", tag)))
                .collect();
            (!picked.is_empty()).then_some((*ty, picked))
        })
        .collect()
}

/// A POST kick-off's `Parameters` body (`{"resourceType":"Parameters","parameter":[{"name":
/// "_type","valueString":"Patient"}]}`) as the query string a GET kick-off would carry; the
/// parameters are then judged alike. An empty body is no parameter.
pub(crate) fn parameters_query(body: &[u8]) -> Result<String, Reply> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(String::new());
    }
    let parameters: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| bad("The kick-off body is not a Parameters resource."))?;
    if parameters["resourceType"] != "Parameters" {
        return Err(bad("The kick-off body is not a Parameters resource."));
    }
    let mut query = form_urlencoded::Serializer::new(String::new());
    for p in parameters["parameter"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let (Some(name), Some(value)) = (p["name"].as_str(), p["valueString"].as_str()) else {
            return Err(bad("Each kick-off parameter needs a name and a valueString."));
        };
        query.append_pair(name, value);
    }
    Ok(query.finish())
}

/// The `_jobId` of a status request; missing is an unknown job, repeated is ambiguous.
fn job_id(query: &str) -> Result<String, Reply> {
    let params = Params::parse(query)?;
    let mut ids = params.pairs().filter(|(name, _)| *name == "_jobId").map(|(_, v)| v);
    let id = ids.next().ok_or_else(no_job)?;
    if ids.next().is_some() {
        return Err(bad("_jobId is repeated."));
    }
    Ok(id.to_owned())
}

/// The completion manifest: one output per exported type, sorted by type.
fn manifest(job: &Job, base_url: &str) -> Bytes {
    let output: Vec<_> = job
        .outputs
        .iter()
        .map(|(ty, indexes)| {
            json!({ "type": ty, "url": format!("{base_url}/Binary/{}-{ty}", job.id), "count": indexes.len() })
        })
        .collect();
    let body = json!({
        "transactionTime": job.transaction_time,
        "request": job.request,
        "requiresAccessToken": true,
        "output": output,
        "error": [],
    });
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// The kick-off URL as received: base, path and query.
fn kick_off_url(req: &ApiRequest<'_>) -> String {
    let sep = if req.query.is_empty() { "" } else { "?" };
    format!("{}/{}{sep}{}", req.base_url, req.path, req.query)
}

/// The current time as RFC 3339 UTC, to the second.
fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let second = time::OffsetDateTime::from_unix_timestamp(now.unix_timestamp()).unwrap_or(now);
    second
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// The kick-off's informational OperationOutcome (its status and headers set by the caller).
fn started() -> Reply {
    let body = json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": "information", "code": "informational", "diagnostics": "Export started" }],
    });
    Reply::ok(Bytes::from(serde_json::to_vec(&body).unwrap_or_default()))
}

fn bad(diagnostics: &'static str) -> Reply {
    outcome(StatusCode::BAD_REQUEST, "invalid", diagnostics)
}

fn no_job() -> Reply {
    outcome(StatusCode::NOT_FOUND, "not-found", "No such export job.")
}

fn no_file() -> Reply {
    outcome(StatusCode::NOT_FOUND, "not-found", "No such export file.")
}
