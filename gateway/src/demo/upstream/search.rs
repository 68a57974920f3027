//! FHIR search over the sample data: parameter parsing, filtering, paging with `_count` and
//! `_offset`, and `searchset` Bundle assembly from the pre-serialized resources (no re-parse).

use std::borrow::Cow;
use std::io::Write as _;

use bytes::{BufMut as _, Bytes, BytesMut};
use http::StatusCode;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::fhir::{outcome, Reply};
use crate::demo::data::{search_params, ParamKind, SampleData, StoredResource};

/// Page size when the request names none.
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// Largest page the upstream returns; larger `_count` values are capped.
pub const MAX_PAGE_SIZE: usize = 100;

/// Characters left unescaped in link query values (besides alphanumerics).
const LINK_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/')
    .remove(b':')
    .remove(b',')
    .remove(b'$');

/// What a search ranges over.
#[derive(Debug)]
pub(crate) enum SearchScope<'a> {
    /// `GET {type}?...`
    Type { resource_type: &'static str },
    /// `GET Patient/{id}/{type}?...`
    Compartment { patient: &'a str, resource_type: &'static str },
    /// `GET Patient/{id}/$everything`
    Everything { patient: &'a str },
}

/// Decoded query (and form) parameters, in order.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Parses an `application/x-www-form-urlencoded` string (a URL query uses the same rules).
    pub(crate) fn parse(query: &str) -> Result<Self, Reply> {
        Params::default().extend_form(query)
    }

    /// Adds the parameters of a form body.
    pub(crate) fn extend_form(mut self, form: &str) -> Result<Self, Reply> {
        for pair in form.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            self.0.push((decode(k)?, decode(v)?));
        }
        Ok(self)
    }

    /// The decoded `(name, value)` pairs, in request order.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

fn decode(s: &str) -> Result<String, Reply> {
    let s: Cow<'_, str> = if s.contains('+') { Cow::Owned(s.replace('+', " ")) } else { Cow::Borrowed(s) };
    percent_decode_str(&s)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| bad("A parameter is not valid UTF-8 after decoding."))
}

fn bad(diagnostics: &'static str) -> Reply {
    outcome(StatusCode::BAD_REQUEST, "invalid", diagnostics)
}

#[derive(Debug)]
enum Filter<'p> {
    Patient(Vec<&'p str>),
    Id(Vec<&'p str>),
    Token(&'static str, Vec<&'p str>),
}

impl Filter<'_> {
    fn matches(&self, r: &StoredResource) -> bool {
        match self {
            Filter::Patient(ids) => r.patient.as_deref().is_some_and(|p| ids.contains(&p)),
            Filter::Id(ids) => ids.contains(&&*r.id),
            Filter::Token(param, values) => values.iter().any(|v| r.has_token(param, v)),
        }
    }
}

/// A validated search: filters, paging, and the params to repeat in links.
#[derive(Debug, Default)]
struct Plan<'p> {
    filters: Vec<Filter<'p>>,
    echo: Vec<(&'p str, &'p str)>,
    count: Option<usize>,
    offset: Option<usize>,
    summary_count: bool,
    /// `_include=<type>:patient` (or `:subject`): the page's patients are added to it.
    include_patients: bool,
}

impl Plan<'_> {
    fn count(&self) -> usize {
        self.count.unwrap_or(DEFAULT_PAGE_SIZE)
    }

    fn offset(&self) -> usize {
        self.offset.unwrap_or(0)
    }

    /// Applies a result-control parameter; false when `name` is not one.
    fn control(&mut self, name: &str, value: &str) -> Result<bool, Reply> {
        match name {
            "_count" => {
                // A repeated `_count` is ambiguous; refuse rather than pick one.
                let n: usize = value.parse().map_err(|_| bad("_count is not a number."))?;
                if self.count.replace(n.min(MAX_PAGE_SIZE)).is_some() {
                    return Err(bad("_count is repeated."));
                }
            }
            "_offset" => {
                let n = value.parse().map_err(|_| bad("_offset is not a number."))?;
                if self.offset.replace(n).is_some() {
                    return Err(bad("_offset is repeated."));
                }
            }
            "_summary" => match value {
                "count" => self.summary_count = true,
                "false" => {}
                _ => return Err(bad("Only _summary=count is supported.")),
            },
            "_format" | "_pretty" | "_total" => {}
            _ => return Ok(false),
        }
        Ok(true)
    }
}

fn plan<'p>(scope: &SearchScope<'_>, params: &'p Params) -> Result<Plan<'p>, Reply> {
    let ty = match scope {
        SearchScope::Type { resource_type } | SearchScope::Compartment { resource_type, .. } => {
            Some(*resource_type)
        }
        SearchScope::Everything { .. } => None,
    };
    let mut plan = Plan::default();
    for (name, value) in &params.0 {
        // FHIR: a parameter with an empty value is ignored.
        if plan.control(name, value)? || value.is_empty() {
            continue;
        }
        if name == "_include" {
            // Only the patient a match belongs to can be included.
            let target =
                value.split_once(':').filter(|(t, p)| Some(*t) == ty && matches!(*p, "patient" | "subject"));
            if target.is_none() {
                return Err(bad("Only _include=<type>:patient (or :subject) is supported."));
            }
            plan.include_patients = true;
            plan.echo.push((name, value));
            continue;
        }
        // Unknown params are refused, not ignored: silently dropping a filter would widen the
        // result, and a test upstream must make that visible.
        let (param, kind) = ty
            .and_then(|ty| search_params(ty).find(|(n, _)| n == name))
            .ok_or_else(|| bad("Unknown or unsupported search parameter."))?;
        let values = value.split(',');
        plan.filters.push(match kind {
            ParamKind::Patient => Filter::Patient(values.map(patient_id).collect()),
            ParamKind::Id => Filter::Id(values.collect()),
            ParamKind::Token => Filter::Token(param, values.collect()),
        });
        plan.echo.push((name, value));
    }
    Ok(plan)
}

/// `Patient/x`, an absolute `…/Patient/x`, or a bare `x` → `x`. Other types never match.
fn patient_id(v: &str) -> &str {
    v.rsplit_once("Patient/").map_or(v, |(_, id)| id)
}

/// Runs a search and renders the page.
pub(crate) fn search(data: &SampleData, scope: &SearchScope<'_>, params: &Params, base_url: &str) -> Reply {
    let plan = match plan(scope, params) {
        Ok(p) => p,
        Err(reply) => return reply,
    };
    let candidates: Cow<'_, [u32]> = match scope {
        SearchScope::Type { resource_type } => {
            match plan.filters.iter().find_map(|f| match f {
                Filter::Patient(ids) => Some(ids),
                _ => None,
            }) {
                // Start from the patient index: a patient-scoped search touches only that
                // patient's resources, whatever the size of the store.
                Some(ids) => {
                    let mut v: Vec<u32> =
                        ids.iter().flat_map(|p| data.of_patient(resource_type, p)).copied().collect();
                    v.sort_unstable();
                    v.dedup();
                    Cow::Owned(v)
                }
                None => Cow::Borrowed(data.of_type(resource_type)),
            }
        }
        SearchScope::Compartment { patient, resource_type } => {
            Cow::Borrowed(data.of_patient(resource_type, patient))
        }
        SearchScope::Everything { patient } => Cow::Borrowed(data.everything(patient)),
    };
    let matched: Vec<u32> =
        candidates.iter().copied().filter(|i| plan.filters.iter().all(|f| f.matches(data.get(*i)))).collect();
    Reply::ok(render(data, scope, &plan, &matched, base_url))
}

fn render(
    data: &SampleData,
    scope: &SearchScope<'_>,
    plan: &Plan<'_>,
    matched: &[u32],
    base_url: &str,
) -> Bytes {
    let total = matched.len();
    let page: &[u32] = if plan.summary_count {
        &[]
    } else {
        let start = plan.offset().min(total);
        &matched[start..(start + plan.count()).min(total)]
    };
    let size: usize = page.iter().map(|i| data.get(*i).json.len() + base_url.len() + 96).sum();
    let mut out = BytesMut::with_capacity(size + 512).writer();
    let _ = write!(out, "{{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"total\":{total},\"link\":[");
    write_link(&mut out, "self", scope, plan, plan.offset(), base_url);
    if !plan.summary_count && plan.count() > 0 && plan.offset().saturating_add(plan.count()) < total {
        let _ = out.write_all(b",");
        write_link(&mut out, "next", scope, plan, plan.offset().saturating_add(plan.count()), base_url);
    }
    if !plan.summary_count && plan.offset() > 0 && plan.count() > 0 {
        let _ = out.write_all(b",");
        write_link(&mut out, "previous", scope, plan, plan.offset().saturating_sub(plan.count()), base_url);
    }
    let _ = out.write_all(b"]");
    if !page.is_empty() {
        let base_json = json_escape_inner(base_url);
        let _ = out.write_all(b",\"entry\":[");
        for (n, i) in page.iter().enumerate() {
            let r = data.get(*i);
            if n > 0 {
                let _ = out.write_all(b",");
            }
            // Ids and type names come from `SampleData::generate` (a safe alphabet); only the
            // base needs escaping, and that once per page.
            let _ = out.write_all(b"{\"fullUrl\":\"");
            let _ = out.write_all(base_json.as_bytes());
            let _ = write!(out, "/{}/{}\",\"resource\":", r.resource_type, r.id);
            let _ = out.write_all(&r.json);
            let _ = out.write_all(b",\"search\":{\"mode\":\"match\"}}");
        }
        if plan.include_patients {
            let mut patients: Vec<&str> =
                page.iter().filter_map(|i| data.get(*i).patient.as_deref()).collect();
            patients.sort_unstable();
            patients.dedup();
            for p in patients {
                for i in data.of_patient("Patient", p) {
                    let r = data.get(*i);
                    let _ = out.write_all(b",{\"fullUrl\":\"");
                    let _ = out.write_all(base_json.as_bytes());
                    let _ = write!(out, "/Patient/{}\",\"resource\":", r.id);
                    let _ = out.write_all(&r.json);
                    let _ = out.write_all(b",\"search\":{\"mode\":\"include\"}}");
                }
            }
        }
        let _ = out.write_all(b"]");
    }
    let _ = out.write_all(b"}");
    out.into_inner().freeze()
}

fn write_link(
    out: &mut impl std::io::Write,
    relation: &str,
    scope: &SearchScope<'_>,
    plan: &Plan<'_>,
    offset: usize,
    base_url: &str,
) {
    let mut url = String::with_capacity(base_url.len() + 64);
    url.push_str(base_url);
    url.push('/');
    match scope {
        SearchScope::Type { resource_type } => url.push_str(resource_type),
        SearchScope::Compartment { patient, resource_type } => {
            url.push_str("Patient/");
            url.push_str(patient);
            url.push('/');
            url.push_str(resource_type);
        }
        SearchScope::Everything { patient } => {
            url.push_str("Patient/");
            url.push_str(patient);
            url.push_str("/$everything");
        }
    }
    url.push('?');
    for (name, value) in &plan.echo {
        url.extend(utf8_percent_encode(name, LINK_VALUE));
        url.push('=');
        url.extend(utf8_percent_encode(value, LINK_VALUE));
        url.push('&');
    }
    if plan.summary_count {
        url.push_str("_summary=count");
    } else {
        url.push_str(&format!("_count={}&_offset={offset}", plan.count()));
    }
    let _ = write!(out, "{{\"relation\":\"{relation}\",\"url\":");
    write_json_str(out, &url);
    let _ = out.write_all(b"}");
}

/// `s` escaped for use inside a JSON string (without the quotes).
fn json_escape_inner(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')).unwrap_or("").to_owned()
}

fn write_json_str(out: &mut impl std::io::Write, s: &str) {
    let _ = serde_json::to_writer(out, s);
}
