//! Deterministic synthetic FHIR R4 data for two tenants, pre-serialized for a fast upstream.
//!
//! Every run produces the same resources with the same ids, so demo curl lines, tests and load
//! scripts can name real ids. Ids (see [`SampleData::generate`]):
//!
//! | tenant     | patients        | practitioners (care teams)                     |
//! |------------|-----------------|------------------------------------------------|
//! | `tenant-a` | `a-p1` … `a-p5` | `a-dr1` (a-p1, a-p2, a-p3), `a-dr2` (a-p3, a-p4, a-p5) |
//! | `tenant-b` | `b-p1` … `b-p4` | `b-dr1` (b-p1, b-p2), `b-dr2` (b-p3, b-p4)    |
//!
//! Each patient `P` has Observations `P-obs-01` … `P-obs-12`, Encounters `P-enc-1`, `P-enc-2`,
//! Conditions `P-cond-1`, `P-cond-2` and MedicationRequest `P-medreq-1`. Every resource carries its
//! tenant in `meta.tag` (system [`TENANT_TAG_SYSTEM`]) and its patient as `Patient/<id>` in
//! `subject`. The names, dates and values are synthetic: there is no real PHI in the demo.

mod entry;
mod generate;
mod params;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

pub(crate) use params::{search_params, ParamKind};

/// The `meta.tag` system that carries a resource's tenant.
pub const TENANT_TAG_SYSTEM: &str = "https://phigate.dev/tenant";

/// The resource types the sample data holds, in the order the CapabilityStatement lists them.
pub const RESOURCE_TYPES: &[&str] =
    &["Patient", "Practitioner", "Encounter", "Condition", "Observation", "MedicationRequest"];

/// Types in the Patient compartment (reachable as `Patient/{id}/{type}`).
pub const COMPARTMENT_TYPES: &[&str] = &["Encounter", "Condition", "Observation", "MedicationRequest"];

/// One tenant of the sample data.
#[derive(Debug, Clone)]
pub struct TenantInfo {
    /// Tenant id (`tenant-a`, `tenant-b`).
    pub id: String,
    /// Its patients, in id order.
    pub patients: Vec<PatientInfo>,
    /// Its practitioners with their care-team assignments.
    pub practitioners: Vec<PractitionerInfo>,
}

/// One sample patient and the ids of the resources about them.
#[derive(Debug, Clone)]
pub struct PatientInfo {
    /// Patient logical id (`a-p1`).
    pub id: String,
    /// Display name (synthetic).
    pub name: String,
    /// Observation ids, in search order.
    pub observations: Vec<String>,
    /// Encounter ids.
    pub encounters: Vec<String>,
    /// Condition ids.
    pub conditions: Vec<String>,
    /// MedicationRequest ids.
    pub medication_requests: Vec<String>,
}

/// One sample practitioner and the patients on their care team.
#[derive(Debug, Clone)]
pub struct PractitionerInfo {
    /// Practitioner logical id (`a-dr1`).
    pub id: String,
    /// Display name (synthetic).
    pub name: String,
    /// Patient ids of their care team.
    pub patients: Vec<String>,
}

/// One stored resource: its JSON, serialized once at startup, and what search needs to know.
#[derive(Debug, Clone)]
pub struct StoredResource {
    /// Resource type.
    pub resource_type: &'static str,
    /// Logical id.
    pub id: Arc<str>,
    /// Tenant id from `meta.tag`.
    pub tenant: Arc<str>,
    /// The patient the resource is about (`Patient` resources name themselves).
    pub patient: Option<Arc<str>>,
    /// The resource as `application/fhir+json`.
    pub json: Bytes,
    /// Token search values: (param name, value), with both `code` and `system|code` forms.
    pub(crate) tokens: Vec<(&'static str, Box<str>)>,
}

impl StoredResource {
    /// Whether the resource has this token value for this search param.
    pub(crate) fn has_token(&self, param: &str, value: &str) -> bool {
        self.tokens.iter().any(|(p, v)| *p == param && &**v == value)
    }
}

/// The whole sample data set with its search indexes. Built once, shared read-only (`Arc`).
#[derive(Debug)]
pub struct SampleData {
    tenants: Vec<TenantInfo>,
    resources: Vec<StoredResource>,
    // Keyed so lookups borrow the request's `&str` (no allocation per request).
    by_id: HashMap<&'static str, HashMap<Arc<str>, u32>>,
    by_type: HashMap<&'static str, Vec<u32>>,
    by_patient: HashMap<&'static str, HashMap<Arc<str>, Vec<u32>>>,
    everything: HashMap<Arc<str>, Vec<u32>>,
}

impl SampleData {
    /// Generates the deterministic sample data (two tenants, nine patients, four practitioners, 166 resources).
    pub fn generate() -> Self {
        let (tenants, resources) = generate::generate();
        Self::index(tenants, resources)
    }

    fn index(tenants: Vec<TenantInfo>, resources: Vec<StoredResource>) -> Self {
        let mut data = SampleData {
            tenants,
            resources: Vec::new(),
            by_id: HashMap::new(),
            by_type: HashMap::new(),
            by_patient: HashMap::new(),
            everything: HashMap::new(),
        };
        for (i, r) in resources.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            data.by_id.entry(r.resource_type).or_default().insert(r.id.clone(), i);
            data.by_type.entry(r.resource_type).or_default().push(i);
            if let Some(p) = &r.patient {
                data.by_patient.entry(r.resource_type).or_default().entry(p.clone()).or_default().push(i);
                data.everything.entry(p.clone()).or_default().push(i);
            }
        }
        data.resources = resources;
        data
    }

    /// The tenants, in id order.
    pub fn tenants(&self) -> &[TenantInfo] {
        &self.tenants
    }

    /// A tenant by id.
    pub fn tenant(&self, id: &str) -> Option<&TenantInfo> {
        self.tenants.iter().find(|t| t.id == id)
    }

    /// A patient by id, with its tenant.
    pub fn patient(&self, id: &str) -> Option<(&TenantInfo, &PatientInfo)> {
        self.tenants.iter().find_map(|t| t.patients.iter().find(|p| p.id == id).map(|p| (t, p)))
    }

    /// Every resource, in store order.
    pub fn resources(&self) -> &[StoredResource] {
        &self.resources
    }

    /// A resource by type and id.
    pub fn resource(&self, resource_type: &str, id: &str) -> Option<&StoredResource> {
        self.find(resource_type, id).map(|i| self.get(i))
    }

    pub(crate) fn find(&self, resource_type: &str, id: &str) -> Option<u32> {
        self.by_id.get(resource_type)?.get(id).copied()
    }

    pub(crate) fn get(&self, index: u32) -> &StoredResource {
        &self.resources[index as usize]
    }

    /// Store indexes of every resource of a type, in store order.
    pub(crate) fn of_type(&self, resource_type: &str) -> &[u32] {
        self.by_type.get(resource_type).map_or(&[], Vec::as_slice)
    }

    /// Store indexes of a type's resources about one patient.
    pub(crate) fn of_patient(&self, resource_type: &str, patient: &str) -> &[u32] {
        self.by_patient.get(resource_type).and_then(|m| m.get(patient)).map_or(&[], Vec::as_slice)
    }

    /// Store indexes of the patient and everything about them (`$everything`).
    pub(crate) fn everything(&self, patient: &str) -> &[u32] {
        self.everything.get(patient).map_or(&[], Vec::as_slice)
    }
}

/// The static name of a supported resource type.
pub(crate) fn resource_type(name: &str) -> Option<&'static str> {
    RESOURCE_TYPES.iter().copied().find(|t| *t == name)
}

#[cfg(test)]
mod tests;
