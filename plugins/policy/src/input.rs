//! The policy input document, version 1 (`input.v == 1`), built from the request context.
//!
//! Schema (documented with examples in `policies/README.md`); absent facts are omitted, never null:
//! `{v, principal: {sub, iss, tenant, roles, scopes, fhir_user, patient, client_id, amr, acr,
//! auth_time, cert_bound, dpop_bound}, request: {method, route, path, tenant, fhir, patients,
//! break_glass_reason, prefer}, client: {ip, cert_thumbprint}, time: {unix_secs}}`.
//! The decision cache keys on everything except `time`.

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use phigate_plugin::{FhirRequest, Principal, RequestCtx};
use regorus::Value;

/// The input schema version policies can check.
pub const INPUT_VERSION: u32 = 1;

/// Longest `Prefer` header the input carries; longer ones are passed as no preferences.
const MAX_PREFER_BYTES: usize = 256;

/// An object under construction.
#[derive(Default)]
struct Obj(BTreeMap<Value, Value>);

impl Obj {
    fn set(&mut self, key: &str, v: impl Into<Value>) -> &mut Self {
        self.0.insert(Value::from(key), v.into());
        self
    }

    fn opt<V: Into<Value>>(&mut self, key: &str, v: Option<V>) -> &mut Self {
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
    o.set("sub", p.subject.as_str())
        .set("iss", &*p.issuer)
        .opt("tenant", p.tenant.as_ref().map(|t| t.as_str()))
        .set("roles", strings(p.roles.iter().map(String::as_str)))
        .set("scopes", strings(p.scopes.iter().map(String::as_str)))
        .opt("fhir_user", p.fhir_user.as_deref())
        .opt("patient", p.patient.as_ref().map(|x| x.as_str()))
        .opt("client_id", p.client_id.as_deref())
        .set("amr", strings(p.amr.iter().map(String::as_str)))
        .opt("acr", p.acr.as_deref())
        .opt("auth_time", p.auth_time)
        .set("cert_bound", p.cert_thumbprint.is_some())
        .set("dpop_bound", p.dpop_jkt.is_some());
    o.done()
}

fn fhir(f: &FhirRequest) -> Value {
    let mut o = Obj::default();
    o.set("interaction", f.interaction.as_str())
        .opt("resource_type", f.resource_type)
        .opt("id", f.id.as_deref())
        .opt("version_id", f.version_id.as_deref())
        .opt("operation", f.operation.as_deref())
        .opt("count", f.count)
        .set("patients", strings(f.patients.iter().map(|p| p.as_str())))
        .set("unresolved", strings(f.unresolved.iter().map(|u| u.name.as_str())))
        .set("entries", Value::from(f.entries.iter().map(fhir).collect::<Vec<_>>()));
    if let Some(c) = &f.compartment {
        let mut co = Obj::default();
        co.set("resource_type", c.resource_type).set("id", c.id.as_str());
        o.set("compartment", co.done());
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
        .set("method", ctx.request.method.as_str())
        .set("route", &*ctx.route.name)
        .set("path", ctx.request.path.as_str())
        .opt("tenant", ctx.tenant.as_ref().map(|t| t.as_str()))
        .opt("fhir", ctx.fhir.as_ref().map(fhir))
        .set("patients", strings(ctx.fhir.iter().flat_map(|f| f.patients.iter().map(|p| p.as_str()))))
        .opt("break_glass_reason", ctx.break_glass_reason.as_deref())
        .set("prefer", prefer(ctx));
    let mut client = Obj::default();
    client
        .opt("ip", ctx.client.ip.map(|ip| ip.to_string()))
        .opt("cert_thumbprint", ctx.client.cert_thumbprint.as_deref());
    let mut root = Obj::default();
    root.set("v", INPUT_VERSION)
        .opt("principal", ctx.principal.as_deref().map(principal))
        .set("request", request.done())
        .set("client", client.done());
    root.done()
}

/// Adds `time` to a decision-relevant input.
pub(crate) fn with_time(mut input: Value, ctx: &RequestCtx) -> Value {
    let secs = ctx.received_at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut time = Obj::default();
    time.set("unix_secs", secs);
    if let Ok(obj) = input.as_object_mut() {
        obj.extend([(Value::from("time"), time.done())]);
    }
    input
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::{HeaderMap, Method};
    use phigate_plugin::{RequestId, RequestInfo, RouteMeta, Subject};

    use super::*;

    fn ctx(principal: Principal) -> RequestCtx {
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
