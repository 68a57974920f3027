//! The policy input document, version 1 (`input.v == 1`), built from the request context.
//!
//! Schema (documented with examples in `policies/README.md`); absent facts are omitted, never null:
//! `{v, principal: {sub, iss, tenant, roles, scopes, fhir_user, patient, client_id, amr, acr,
//! auth_time, cert_bound, dpop_bound}, request: {method, route, path, tenant, fhir, patients,
//! break_glass_reason, prefer, bulk}, client: {ip, cert_thumbprint}, time: {unix_secs}}`.
//! The decision cache keys on everything except `time`.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::UNIX_EPOCH;

use phigate_plugin::{FhirRequest, Principal, RequestCtx};
use regorus::Value;

/// The input schema version policies can check.
pub const INPUT_VERSION: u32 = 1;

/// Longest `Prefer` header the input carries; longer ones are passed as no preferences.
const MAX_PREFER_BYTES: usize = 256;

/// The input's member names, each built once: a string `Value` is an `Arc<str>`, so cloning one
/// is a reference count where building one from `&str` is an allocation (about 35 per input).
struct Keys {
    acr: Value,
    amr: Value,
    auth_time: Value,
    break_glass_reason: Value,
    bulk: Value,
    cert_bound: Value,
    cert_thumbprint: Value,
    client: Value,
    client_id: Value,
    compartment: Value,
    continuation: Value,
    count: Value,
    dpop_bound: Value,
    entries: Value,
    fhir: Value,
    fhir_user: Value,
    id: Value,
    interaction: Value,
    ip: Value,
    iss: Value,
    method: Value,
    operation: Value,
    path: Value,
    patient: Value,
    patients: Value,
    prefer: Value,
    principal: Value,
    request: Value,
    resource_type: Value,
    roles: Value,
    route: Value,
    scopes: Value,
    sub: Value,
    tenant: Value,
    time: Value,
    unix_secs: Value,
    unresolved: Value,
    v: Value,
    version_id: Value,
}

static K: LazyLock<Keys> = LazyLock::new(|| Keys {
    acr: Value::from("acr"),
    amr: Value::from("amr"),
    auth_time: Value::from("auth_time"),
    break_glass_reason: Value::from("break_glass_reason"),
    bulk: Value::from("bulk"),
    cert_bound: Value::from("cert_bound"),
    cert_thumbprint: Value::from("cert_thumbprint"),
    client: Value::from("client"),
    client_id: Value::from("client_id"),
    compartment: Value::from("compartment"),
    continuation: Value::from("continuation"),
    count: Value::from("count"),
    dpop_bound: Value::from("dpop_bound"),
    entries: Value::from("entries"),
    fhir: Value::from("fhir"),
    fhir_user: Value::from("fhir_user"),
    id: Value::from("id"),
    interaction: Value::from("interaction"),
    ip: Value::from("ip"),
    iss: Value::from("iss"),
    method: Value::from("method"),
    operation: Value::from("operation"),
    path: Value::from("path"),
    patient: Value::from("patient"),
    patients: Value::from("patients"),
    prefer: Value::from("prefer"),
    principal: Value::from("principal"),
    request: Value::from("request"),
    resource_type: Value::from("resource_type"),
    roles: Value::from("roles"),
    route: Value::from("route"),
    scopes: Value::from("scopes"),
    sub: Value::from("sub"),
    tenant: Value::from("tenant"),
    time: Value::from("time"),
    unix_secs: Value::from("unix_secs"),
    unresolved: Value::from("unresolved"),
    v: Value::from("v"),
    version_id: Value::from("version_id"),
});

/// An object under construction.
#[derive(Default)]
struct Obj(BTreeMap<Value, Value>);

impl Obj {
    fn set(&mut self, key: &Value, v: impl Into<Value>) -> &mut Self {
        self.0.insert(key.clone(), v.into());
        self
    }

    fn opt<V: Into<Value>>(&mut self, key: &Value, v: Option<V>) -> &mut Self {
        if let Some(v) = v {
            self.set(key, v);
        }
        self
    }

    fn done(self) -> Value {
        Value::from(self.0)
    }
}

fn strings<'a>(it: impl IntoIterator<Item = &'a str>) -> Value {
    Value::from(it.into_iter().map(Value::from).collect::<Vec<_>>())
}

fn principal(p: &Principal) -> Value {
    let mut o = Obj::default();
    o.set(&K.sub, p.subject.as_str())
        .set(&K.iss, &*p.issuer)
        .opt(&K.tenant, p.tenant.as_ref().map(|t| t.as_str()))
        .set(&K.roles, strings(p.roles.iter().map(String::as_str)))
        .set(&K.scopes, strings(p.scopes.iter().map(String::as_str)))
        .opt(&K.fhir_user, p.fhir_user.as_deref())
        .opt(&K.patient, p.patient.as_ref().map(|x| x.as_str()))
        .opt(&K.client_id, p.client_id.as_deref())
        .set(&K.amr, strings(p.amr.iter().map(String::as_str)))
        .opt(&K.acr, p.acr.as_deref())
        .opt(&K.auth_time, p.auth_time)
        .set(&K.cert_bound, p.cert_thumbprint.is_some())
        .set(&K.dpop_bound, p.dpop_jkt.is_some());
    o.done()
}

fn fhir(f: &FhirRequest) -> Value {
    let mut o = Obj::default();
    o.set(&K.interaction, f.interaction.as_str())
        .opt(&K.resource_type, f.resource_type)
        .opt(&K.id, f.id.as_deref())
        .opt(&K.version_id, f.version_id.as_deref())
        .opt(&K.operation, f.operation.as_deref())
        .opt(&K.count, f.count)
        .set(&K.patients, strings(f.patients.iter().map(|p| p.as_str())))
        .set(&K.unresolved, strings(f.unresolved.iter().map(|u| u.name.as_str())))
        .set(&K.entries, Value::from(f.entries.iter().map(fhir).collect::<Vec<_>>()));
    if f.continuation {
        o.set(&K.continuation, true);
    }
    if let Some(c) = &f.compartment {
        let mut co = Obj::default();
        co.set(&K.resource_type, c.resource_type).set(&K.id, c.id.as_str());
        o.set(&K.compartment, co.done());
    }
    o.done()
}

/// Preference tokens of the `Prefer` header (RFC 7240), lowercased names only (`respond-async`,
/// `return=minimal` → `return`): enough for policy, without echoing values.
fn prefer(ctx: &RequestCtx) -> Value {
    let mut out = Vec::new();
    for v in ctx.request.headers.get_all(http::header::HeaderName::from_static("prefer")) {
        let Ok(s) = v.to_str() else { continue };
        if s.len() > MAX_PREFER_BYTES {
            continue;
        }
        for token in s.split(',') {
            let name = token.split(['=', ';']).next().unwrap_or("").trim();
            if !name.is_empty() {
                out.push(Value::from(name.to_ascii_lowercase()));
            }
        }
    }
    Value::from(out)
}

/// Builds the decision-relevant input (everything but `time`).
pub(crate) fn build(ctx: &RequestCtx) -> Value {
    let mut request = Obj::default();
    request
        .set(&K.method, ctx.request.method.as_str())
        .set(&K.route, &*ctx.route.name)
        .set(&K.path, ctx.request.path.as_str())
        .opt(&K.tenant, ctx.tenant.as_ref().map(|t| t.as_str()))
        .opt(&K.fhir, ctx.fhir.as_ref().map(fhir))
        .set(&K.patients, strings(ctx.fhir.iter().flat_map(|f| f.patients.iter().map(|p| p.as_str()))))
        .opt(&K.break_glass_reason, ctx.break_glass_reason.as_deref())
        .opt(&K.bulk, ctx.bulk.as_ref().map(|b| b.kind.as_str()))
        .set(&K.prefer, prefer(ctx));
    let mut client = Obj::default();
    client
        .opt(&K.ip, ctx.client.ip.map(|ip| ip.to_string()))
        .opt(&K.cert_thumbprint, ctx.client.cert_thumbprint.as_deref());
    let mut root = Obj::default();
    root.set(&K.v, INPUT_VERSION)
        .opt(&K.principal, ctx.principal.as_deref().map(principal))
        .set(&K.request, request.done())
        .set(&K.client, client.done());
    root.done()
}

/// Adds `time` to a decision-relevant input.
pub(crate) fn with_time(mut input: Value, ctx: &RequestCtx) -> Value {
    let secs = ctx.received_at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut time = Obj::default();
    time.set(&K.unix_secs, secs);
    if let Ok(obj) = input.as_object_mut() {
        obj.extend([(K.time.clone(), time.done())]);
    }
    input
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use http::{HeaderMap, Method};
    use phigate_plugin::{RequestId, RequestInfo, RouteMeta, Subject};

    use super::*;

    /// A GET on the `fhir` route by `principal` (for the crate's unit tests).
    pub(crate) fn ctx(principal: Principal) -> RequestCtx {
        let route = Arc::new(RouteMeta {
            name: "fhir".into(),
            index: 0,
            prefix: "/fhir".into(),
            fhir: true,
            upstream: "u".into(),
        });
        let info = RequestInfo {
            method: Method::GET,
            path: "/fhir/x".into(),
            query: Vec::new(),
            headers: HeaderMap::new(),
            body: None,
        };
        let mut c = RequestCtx::new(RequestId::new("t"), route, info);
        c.principal = Some(Arc::new(principal));
        c
    }

    #[test]
    fn sender_constrained_tokens_are_visible_to_policy() {
        let base = Principal::new("https://idp.test", Subject::from("alice"));
        let plain = build(&ctx(base.clone()));
        assert_eq!(plain["principal"]["cert_bound"], Value::Bool(false));
        assert_eq!(plain["principal"]["dpop_bound"], Value::Bool(false));
        let dpop = build(&ctx(Principal { dpop_jkt: Some("jkt".into()), ..base.clone() }));
        assert_eq!(dpop["principal"]["dpop_bound"], Value::Bool(true));
        let cert = build(&ctx(Principal { cert_thumbprint: Some("x5t".into()), ..base }));
        assert_eq!(cert["principal"]["cert_bound"], Value::Bool(true));
        assert_eq!(cert["principal"]["dpop_bound"], Value::Bool(false));
    }
}
