//! One resource under construction: its JSON body plus what the store indexes (tenant, patient,
//! token values), serialized exactly once.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

use super::{StoredResource, TENANT_TAG_SYSTEM};

/// `meta.lastUpdated` of every sample resource (fixed, so output is reproducible).
const LAST_UPDATED: &str = "2026-01-01T00:00:00Z";

/// A resource being built: its body plus the facts the store indexes.
pub(super) struct Entry {
    resource: StoredResource,
    body: Value,
}

impl Entry {
    pub(super) fn new(
        resource_type: &'static str,
        id: String,
        tenant: &Arc<str>,
        patient: Option<Arc<str>>,
        mut body: Value,
    ) -> Self {
        if let Value::Object(map) = &mut body {
            map.insert("id".into(), Value::String(id.clone()));
            map.insert(
                "meta".into(),
                json!({
                    "versionId": "1",
                    "lastUpdated": LAST_UPDATED,
                    "tag": [{ "system": TENANT_TAG_SYSTEM, "code": &**tenant }],
                }),
            );
        }
        let mut resource = StoredResource {
            resource_type,
            id: Arc::from(id),
            tenant: tenant.clone(),
            patient,
            json: Bytes::new(),
            tokens: Vec::new(),
        };
        resource.tokens.push(("_tag", Box::from(&**tenant)));
        resource.tokens.push(("_tag", format!("{TENANT_TAG_SYSTEM}|{tenant}").into()));
        Entry { resource, body }
    }

    /// Labels the resource with a security label (`meta.security`), searchable as `_security`.
    pub(super) fn security(&mut self, system: &str, code: &str) {
        if let Some(meta) = self.body.get_mut("meta").and_then(Value::as_object_mut) {
            meta.insert("security".into(), json!([{ "system": system, "code": code }]));
        }
        self.token("_security", Some(system), code);
    }

    /// Adds a token value; `system` gives the `system|code` form as well (for references the
    /// "system" is the target type, so `Encounter/x` and `x` both match).
    pub(super) fn token(&mut self, param: &'static str, system: Option<&str>, code: &str) {
        self.resource.tokens.push((param, code.into()));
        if let Some(system) = system {
            let sep = if system.starts_with("http") { '|' } else { '/' };
            self.resource.tokens.push((param, format!("{system}{sep}{code}").into()));
        }
    }

    /// Serializes once, with `resourceType` first as FHIR JSON convention has it (serde_json's map
    /// is sorted, so the member is spliced in front rather than inserted).
    pub(super) fn finish(mut self) -> StoredResource {
        let rest = serde_json::to_vec(&self.body).unwrap_or_else(|_| b"{}".to_vec());
        let head = format!("{{\"resourceType\":\"{}\"", self.resource.resource_type);
        let mut json = Vec::with_capacity(head.len() + rest.len() + 1);
        json.extend_from_slice(head.as_bytes());
        if rest.len() > 2 {
            json.push(b',');
        }
        json.extend_from_slice(rest.get(1..).unwrap_or(b"}"));
        self.resource.json = Bytes::from(json);
        self.resource
    }
}
