//! The FHIR R4 REST surface of the sample upstream: routing, read, capabilities and error
//! outcomes. Independent of hyper, so the behaviour is testable without sockets.
//!
//! Error bodies use fixed diagnostics and never echo the request: even a test server should not
//! teach the habit of reflecting input (that is how PHI ends up in logs).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde_json::json;

use super::bulk::{self, ExportLevel, Exports};
use super::search::{self, Params, SearchScope};
use crate::demo::data::{
    resource_type, search_params, ParamKind, SampleData, COMPARTMENT_TYPES, RESOURCE_TYPES,
};

/// The media type of response bodies (bulk export manifests and files excepted).
pub const FHIR_JSON: &str = "application/fhir+json";

/// A response before it becomes HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
    /// Weak ETag for single-resource reads.
    pub(crate) etag: Option<&'static str>,
    /// The body's media type; None for an empty body.
    pub(crate) content_type: Option<&'static str>,
    /// Further response headers (bulk export: `Content-Location`, `Retry-After`, `X-Progress`).
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
}

impl Reply {
    /// 200 with a FHIR JSON body.
    pub(crate) fn ok(body: Bytes) -> Self {
        Reply { status: StatusCode::OK, body, etag: None, content_type: Some(FHIR_JSON), headers: Vec::new() }
    }

    /// 202 Accepted with an empty body and these headers.
    pub(crate) fn accepted(headers: Vec<(HeaderName, HeaderValue)>) -> Self {
        Reply { status: StatusCode::ACCEPTED, body: Bytes::new(), etag: None, content_type: None, headers }
    }
}

/// An `OperationOutcome` reply with a fixed diagnostic.
pub(crate) fn outcome(status: StatusCode, code: &str, diagnostics: &'static str) -> Reply {
    let body = json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": "error", "code": code, "diagnostics": diagnostics }],
    });
    Reply { status, ..Reply::ok(Bytes::from(serde_json::to_vec(&body).unwrap_or_default())) }
}

/// One request as the API sees it: the path already stripped of the base path.
#[derive(Debug)]
pub(crate) struct ApiRequest<'a> {
    pub(crate) method: &'a Method,
    /// Path below the base, without leading `/` (`Patient/a-p1`).
    pub(crate) path: &'a str,
    pub(crate) query: &'a str,
    /// `https://host:port/fhir`, for `fullUrl` and links.
    pub(crate) base_url: &'a str,
    pub(crate) form_body: bool,
    pub(crate) body: &'a [u8],
    /// The request headers (bulk export reads `Prefer` and `X-Phigate-Tenant`).
    pub(crate) headers: &'a HeaderMap,
}

/// The sample FHIR API over one data set.
#[derive(Debug)]
pub(crate) struct FhirApi {
    pub(crate) data: Arc<SampleData>,
    capability: Bytes,
    exports: Exports,
}

impl FhirApi {
    pub(crate) fn new(data: Arc<SampleData>) -> Self {
        FhirApi { data, capability: capability_statement(), exports: Exports::default() }
    }

    /// The API with export files holding each resource `copies` times in a row.
    pub(crate) fn with_export_copies(mut self, copies: usize) -> Self {
        self.exports = Exports::with_copies(copies);
        self
    }

    /// Answers one request.
    pub(crate) fn handle(&self, req: &ApiRequest<'_>) -> Reply {
        // Exact segments: an empty one (`Patient//x`, trailing `/`) matches no route rather than
        // being collapsed, so tests see what the gateway really forwarded.
        let segs = if req.path.is_empty() {
            [None; 4]
        } else {
            let mut it = req.path.split('/');
            let segs = [it.next(), it.next(), it.next(), it.next()];
            if it.next().is_some() || segs.iter().flatten().any(|s| s.is_empty()) {
                return not_found();
            }
            segs
        };
        match *req.method {
            Method::GET | Method::HEAD => self.route_get(segs, req),
            Method::POST => self.route_post(segs, req),
            Method::DELETE => self.route_delete(segs, req),
            _ => read_only(),
        }
    }

    fn route_get(&self, segs: [Option<&str>; 4], req: &ApiRequest<'_>) -> Reply {
        let (q, base) = (req.query, req.base_url);
        match segs {
            [Some("$export" | "$export-poll-status"), None, ..]
            | [Some("Patient"), Some("$export"), None, _]
            | [Some("Group"), Some(_), Some("$export"), None]
                if req.method == Method::HEAD =>
            {
                bulk::get_only()
            }
            [Some("$export"), None, ..] => self.exports.kick_off(&self.data, ExportLevel::System, None, req),
            [Some("$export-poll-status"), None, ..] => self.exports.poll(q, base),
            [Some("Patient"), Some("$export"), None, _] => {
                self.exports.kick_off(&self.data, ExportLevel::Patient, None, req)
            }
            [Some("Group"), Some(id), Some("$export"), None] => {
                self.exports.kick_off(&self.data, ExportLevel::Group, Some(id), req)
            }
            [Some("Binary"), Some(name), None, _] if bulk::is_file_name(name) => {
                self.exports.file(&self.data, name)
            }
            [Some("metadata"), None, ..] => Reply::ok(self.capability.clone()),
            [Some(".well-known"), Some("smart-configuration"), None, _] => smart_configuration(base),
            [None, ..] if q.split('&').any(|p| p.starts_with("_getpages=")) => self.page(q, base),
            [Some(ty), None, ..] => self.search_type(ty, q, "", base),
            [Some("Patient"), Some(id), Some("$everything"), None] => self.everything(id, q, base),
            [Some(ty), Some(id), Some("_history"), None] => self.history(ty, id, base),
            [Some("Patient"), Some(id), Some(ty), None] => self.compartment(id, ty, q, base),
            [Some(_), Some("_search"), None, _] => read_only(),
            [Some(ty), Some(id), None, _] => self.read(ty, id, base),
            _ => not_found(),
        }
    }

    fn route_post(&self, segs: [Option<&str>; 4], req: &ApiRequest<'_>) -> Reply {
        // A bulk export kicked off by POST (Bulk Data v2): its `Parameters` body, as a query.
        let export = |level, group| match bulk::parameters_query(req.body) {
            Ok(query) => {
                self.exports.kick_off(&self.data, level, group, &ApiRequest { query: &query, ..*req })
            }
            Err(reply) => reply,
        };
        match segs {
            [Some("$export"), None, ..] => export(ExportLevel::System, None),
            [Some("Patient"), Some("$export"), None, _] => export(ExportLevel::Patient, None),
            [Some("Group"), Some(id), Some("$export"), None] => export(ExportLevel::Group, Some(id)),
            [None, ..] => super::batch::batch(self, req),
            [Some(ty), Some("_search"), None, _] => {
                if !req.form_body {
                    return outcome(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "not-supported",
                        "POST _search takes application/x-www-form-urlencoded.",
                    );
                }
                let Ok(form) = std::str::from_utf8(req.body) else {
                    return outcome(StatusCode::BAD_REQUEST, "invalid", "The form body is not UTF-8.");
                };
                self.search_type(ty, req.query, form, req.base_url)
            }
            [Some(_), None, ..] | [Some(_), Some(_), None, _] => read_only(),
            _ => not_found(),
        }
    }

    /// The one write: cancelling a bulk export. Everything else stays read-only.
    fn route_delete(&self, segs: [Option<&str>; 4], req: &ApiRequest<'_>) -> Reply {
        match segs {
            [Some("$export-poll-status"), None, ..] => self.exports.cancel(req.query),
            _ => read_only(),
        }
    }

    /// A GET for batch entries (never recursive: a batch entry cannot be a POST).
    pub(crate) fn get(&self, path: &str, query: &str, base_url: &str) -> Reply {
        let headers = HeaderMap::new();
        self.handle(&ApiRequest {
            method: &Method::GET,
            path,
            query,
            base_url,
            form_body: false,
            body: &[],
            headers: &headers,
        })
    }

    fn read(&self, ty: &str, id: &str, base_url: &str) -> Reply {
        if resource_type(ty).is_none() {
            return unknown_type();
        }
        match self.data.resource(ty, id) {
            Some(r) => {
                // The version read, as HAPI names it.
                let version = HeaderValue::from_str(&format!("{base_url}/{ty}/{id}/_history/1")).ok();
                let headers = version.map(|v| vec![(http::header::CONTENT_LOCATION, v)]).unwrap_or_default();
                Reply { etag: Some("W/\"1\""), headers, ..Reply::ok(r.json.clone()) }
            }
            None => outcome(StatusCode::NOT_FOUND, "not-found", "Resource not found."),
        }
    }

    /// A further page of a search, HAPI-style: `[base]?_getpages=<search>&_getpagesoffset=N`.
    /// HAPI names a search it stored; this server keeps none, so `<search>` is the search itself
    /// (`Type?query`, percent-encoded), run again from the offset.
    fn page(&self, query: &str, base_url: &str) -> Reply {
        let (mut search, mut offset, mut count) = (None, "0".to_owned(), None);
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned();
            match name {
                "_getpages" => search = Some(value),
                "_getpagesoffset" => offset = value,
                "_count" => count = Some(value),
                _ => {}
            }
        }
        let Some((ty, q)) = search.as_deref().and_then(|s| s.split_once('?')) else {
            return outcome(StatusCode::GONE, "not-found", "Search not found or expired.");
        };
        let mut q = format!("{q}&_offset={offset}");
        if let Some(c) = count {
            q.push_str(&format!("&_count={c}"));
        }
        self.search_type(ty, &q, "", base_url)
    }

    /// The history of one resource: its only version (every resource here is at version 1).
    fn history(&self, ty: &str, id: &str, base_url: &str) -> Reply {
        if resource_type(ty).is_none() {
            return unknown_type();
        }
        let Some(r) = self.data.resource(ty, id) else {
            return outcome(StatusCode::NOT_FOUND, "not-found", "Resource not found.");
        };
        let mut body = Vec::with_capacity(r.json.len() + 256);
        body.extend_from_slice(
            br#"{"resourceType":"Bundle","type":"history","total":1,"entry":[{"fullUrl":"#,
        );
        body.extend_from_slice(json!(format!("{base_url}/{ty}/{id}")).to_string().as_bytes());
        body.extend_from_slice(br#","resource":"#);
        body.extend_from_slice(&r.json);
        body.extend_from_slice(br#","request":{"method":"PUT","url":"#);
        body.extend_from_slice(json!(format!("{ty}/{id}")).to_string().as_bytes());
        body.extend_from_slice(br#"},"response":{"status":"200","etag":"W/\"1\""}}]}"#);
        Reply::ok(body.into())
    }

    fn search_type(&self, ty: &str, query: &str, form: &str, base_url: &str) -> Reply {
        let Some(ty) = resource_type(ty) else {
            return unknown_type();
        };
        let params = match Params::parse(query).and_then(|p| p.extend_form(form)) {
            Ok(p) => p,
            Err(reply) => return reply,
        };
        let scope = SearchScope::Type { resource_type: ty };
        search::search(&self.data, &scope, &params, base_url)
    }

    fn compartment(&self, patient: &str, ty: &str, query: &str, base_url: &str) -> Reply {
        let Some(ty) = resource_type(ty) else {
            return unknown_type();
        };
        if !COMPARTMENT_TYPES.contains(&ty) {
            return outcome(
                StatusCode::BAD_REQUEST,
                "not-supported",
                "The type is not in the Patient compartment.",
            );
        }
        if self.data.resource("Patient", patient).is_none() {
            return outcome(StatusCode::NOT_FOUND, "not-found", "Resource not found.");
        }
        let params = match Params::parse(query) {
            Ok(p) => p,
            Err(reply) => return reply,
        };
        let scope = SearchScope::Compartment { patient, resource_type: ty };
        search::search(&self.data, &scope, &params, base_url)
    }

    fn everything(&self, patient: &str, query: &str, base_url: &str) -> Reply {
        if self.data.resource("Patient", patient).is_none() {
            return outcome(StatusCode::NOT_FOUND, "not-found", "Resource not found.");
        }
        let params = match Params::parse(query) {
            Ok(p) => p,
            Err(reply) => return reply,
        };
        search::search(&self.data, &SearchScope::Everything { patient }, &params, base_url)
    }
}

/// `[base]/.well-known/smart-configuration` (SMART App Launch 2.0 discovery), as a server
/// behind the gateway would publish it. The sample upstream issues no tokens: its endpoints
/// are placeholders under its own base.
fn smart_configuration(base: &str) -> Reply {
    let doc = serde_json::json!({
        "token_endpoint": format!("{base}/auth/token"),
        "grant_types_supported": ["client_credentials", "authorization_code"],
        "authorization_endpoint": format!("{base}/auth/authorize"),
        "code_challenge_methods_supported": ["S256"],
        "capabilities": ["permission-v2", "permission-v1", "client-confidential-asymmetric", "context-standalone-patient"],
    });
    let mut reply = Reply::ok(Bytes::from(doc.to_string()));
    reply.content_type = Some("application/json");
    reply
}

fn not_found() -> Reply {
    outcome(StatusCode::NOT_FOUND, "not-found", "No such endpoint.")
}

fn read_only() -> Reply {
    outcome(StatusCode::METHOD_NOT_ALLOWED, "not-supported", "The sample upstream is read-only.")
}

fn unknown_type() -> Reply {
    outcome(StatusCode::NOT_FOUND, "not-supported", "Unknown or unsupported resource type.")
}

/// The CapabilityStatement, derived from the same tables search uses.
fn capability_statement() -> Bytes {
    let resources: Vec<_> = RESOURCE_TYPES
        .iter()
        .map(|ty| {
            let params: Vec<_> = search_params(ty)
                .map(|(name, kind)| {
                    let t = match kind {
                        ParamKind::Patient => "reference",
                        ParamKind::Id | ParamKind::Token => "token",
                    };
                    json!({ "name": name, "type": t })
                })
                .collect();
            let mut r = json!({
                "type": ty,
                "interaction": [{ "code": "read" }, { "code": "history-instance" }, { "code": "search-type" }],
                "searchParam": params,
            });
            if *ty == "Patient" {
                r["operation"] = json!([
                    {
                        "name": "everything",
                        "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                    },
                    {
                        "name": "export",
                        "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
                    },
                ]);
            }
            r
        })
        .chain(std::iter::once(json!({
            // Group resources are not served; a tenant's cohort can be exported.
            "type": "Group",
            "operation": [{
                "name": "export",
                "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
            }],
        })))
        .collect();
    let cs = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-01-01",
        "kind": "instance",
        "software": { "name": "phigate sample upstream", "version": env!("CARGO_PKG_VERSION") },
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": [{ "code": "batch" }],
            "operation": [{
                "name": "export",
                "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
            }],
        }],
    });
    Bytes::from(serde_json::to_vec(&cs).unwrap_or_default())
}
