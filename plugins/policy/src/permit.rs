//! Which patients a response (or a pre-read record) may name: the few patients of a restricted
//! principal, or every patient of a tenant, looked up in the revision's patient → tenant index.
//!
//! A tenant-scoped decision names the tenant (`permitted_tenant`) instead of listing its
//! patients: a tenant can hold millions of them, and neither the decision nor the check of a
//! response may grow with it.

use std::sync::Arc;

use phigate_plugin::{Decision, PatientId, TenantId};
use regorus::Value;

use crate::labels::Labels;

/// `data.patients` read once per revision: each patient's tenant, sorted by patient id, and the
/// security labels of the few patients that carry some (`security: ["system|code", ...]`: a
/// restricted or VIP chart, whose every record is then treated as carrying them, for
/// tenant-scoped decisions).
#[derive(Debug, Default)]
pub(crate) struct PatientTenants {
    tenants: Vec<TenantId>,
    patients: Vec<(PatientId, u32)>,
    labelled: Vec<(Box<str>, Box<[String]>)>,
}

impl PatientTenants {
    /// Reads `{"<patient id>": {"tenant": "<tenant id>"}, ...}`; entries of any other shape
    /// give their patient no tenant (it is then permitted to no tenant-scoped principal).
    pub(crate) fn from_data(patients: &Value) -> PatientTenants {
        let Value::Object(map) = patients else {
            return PatientTenants::default();
        };
        // Tenants are few and patients many: each tenant string is numbered once, in sorted
        // order, so a per-request lookup of the tenant is a binary search.
        let named: Vec<(&Arc<str>, &Arc<str>)> = map
            .iter()
            .filter_map(|(id, info)| match (id, &info["tenant"]) {
                (Value::String(id), Value::String(tenant)) => Some((id, tenant)),
                _ => None,
            })
            .collect();
        let mut tenants: Vec<TenantId> = named.iter().map(|(_, t)| TenantId::new((*t).clone())).collect();
        tenants.sort_unstable();
        tenants.dedup();
        let mut out = Vec::with_capacity(named.len());
        for (id, tenant) in named {
            let ix = tenants.binary_search_by(|t| t.as_str().cmp(tenant)).ok();
            let ix = ix.and_then(|ix| u32::try_from(ix).ok()).unwrap_or(u32::MAX);
            out.push((PatientId::new(id.clone()), ix));
        }
        // Object keys come sorted (regorus objects are ordered maps); sorting again is cheap and
        // keeps the binary search correct whatever the map's order.
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut labelled: Vec<(Box<str>, Box<[String]>)> = map
            .iter()
            .filter_map(|(id, info)| match (id, &info["security"]) {
                (Value::String(id), Value::Array(labels)) => {
                    let labels: Box<[String]> =
                        labels.iter().filter_map(|l| l.as_string().ok().map(|l| l.to_string())).collect();
                    Some((Box::from(id.as_ref()), labels))
                }
                _ => None,
            })
            .collect();
        labelled.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        PatientTenants { tenants, patients: out, labelled }
    }

    /// Checks the shape of `data.patients[*].security` (absent, or a list of `system|code`
    /// tokens): a typo must not switch a restriction off.
    pub(crate) fn check_labels(patients: &Value) -> Result<(), String> {
        let Value::Object(map) = patients else { return Ok(()) };
        for info in map.values() {
            match &info["security"] {
                Value::Undefined => {}
                Value::Array(labels)
                    if labels.iter().all(|l| {
                        l.as_string()
                            .is_ok_and(|t| t.rsplit_once('|').is_some_and(|(_, code)| !code.is_empty()))
                    }) => {}
                _ => return Err("each patient's `security` must be a list of system|code tokens".into()),
            }
        }
        Ok(())
    }

    /// The security labels of patient `id` (none for most).
    fn labels_of(&self, id: &str) -> &[String] {
        if self.labelled.is_empty() {
            return &[];
        }
        self.labelled
            .binary_search_by(|(p, _)| (**p).cmp(id))
            .ok()
            .and_then(|i| self.labelled.get(i))
            .map_or(&[], |(_, l)| l)
    }

    fn tenant_index(&self, tenant: &str) -> Option<u32> {
        self.tenants.binary_search_by(|t| t.as_str().cmp(tenant)).ok().and_then(|ix| u32::try_from(ix).ok())
    }

    fn lookup(&self, id: &str) -> Option<&(PatientId, u32)> {
        self.patients.binary_search_by(|(p, _)| p.as_str().cmp(id)).ok().and_then(|i| self.patients.get(i))
    }
}

/// What a response may hold: the patients it may name, and the security labels it may not
/// carry (on a resource, or on a patient it names). Beside them, the patients the request itself
/// created (see [`crate::created`]), sorted: empty (no allocation) but for the answer to such a
/// write.
#[derive(Debug, Clone)]
pub struct Permit(Kind, Labels, Option<Arc<PatientTenants>>, Vec<PatientId>);

#[derive(Debug, Clone)]
enum Kind {
    /// These patients, sorted and deduplicated.
    Patients(Arc<[PatientId]>),
    /// Every patient the index places in the tenant at this index (`None`: a tenant the data
    /// does not know, so nobody).
    Tenant(Option<u32>, Arc<PatientTenants>),
}

impl Permit {
    /// Exactly these patients.
    pub fn patients<'a>(ids: impl IntoIterator<Item = &'a str>) -> Permit {
        Permit::of_ids(ids.into_iter().map(PatientId::from).collect())
    }

    fn of_ids(mut ids: Vec<PatientId>) -> Permit {
        ids.sort_unstable();
        ids.dedup();
        Permit(Kind::Patients(ids.into()), Labels::default(), None, Vec::new())
    }

    /// Every patient of `tenant`, by `index`.
    pub(crate) fn tenant(tenant: &str, index: Arc<PatientTenants>) -> Permit {
        Permit(Kind::Tenant(index.tenant_index(tenant), index), Labels::default(), None, Vec::new())
    }

    /// The same permit, with resources carrying one of `labels` withheld.
    #[must_use]
    pub fn withholding(self, labels: Labels) -> Permit {
        Permit(self.0, labels, self.2, self.3)
    }

    /// The same permit, with the patients' own labels from `index` (when any patient has some).
    /// They apply to principals who reach patients through their tenant (tenant-wide roles,
    /// backend services): a principal held to named patients (her care team, a patient's own
    /// app) reaches each of them as one of its own, chart labels or not.
    fn with_patient_labels(self, index: &Arc<PatientTenants>) -> Permit {
        let labelled = matches!(self.0, Kind::Tenant(..)) && !self.1.is_empty() && !index.labelled.is_empty();
        Permit(self.0, self.1, labelled.then(|| index.clone()), self.3)
    }

    /// What `decision` permits, `None` when it asks for no check. A decision naming both a
    /// tenant and patients is held to the patients (the narrower).
    pub(crate) fn of(decision: &Decision, index: &Arc<PatientTenants>) -> Option<Permit> {
        let o = &decision.obligations;
        let labels = || o.withheld_labels.clone().map(Labels::shared).unwrap_or_default();
        let permit = match (&o.permitted_patients, &o.permitted_tenant) {
            (Some(patients), _) => Permit::of_ids(patients.clone()),
            (None, Some(tenant)) => Permit::tenant(tenant.as_str(), index.clone()),
            (None, None) => return None,
        };
        Some(permit.withholding(labels()).with_patient_labels(index))
    }

    /// The same permit, also naming `created`: the patients the request created, in the answer
    /// to that request.
    #[must_use]
    pub(crate) fn with_created(self, mut created: Vec<PatientId>) -> Permit {
        created.sort_unstable();
        created.dedup();
        Permit(self.0, self.1, self.2, created)
    }

    /// Whether patient `id` carries a label this permit withholds.
    pub(crate) fn patient_withheld(&self, id: &str) -> bool {
        self.2.as_ref().is_some_and(|index| index.labels_of(id).iter().any(|t| self.1.withholds_token(t)))
    }

    /// Whether `id` is a patient a tenant permit's index does not know at all (placed in no
    /// tenant), as opposed to another tenant's. Always false for a list of patients.
    pub(crate) fn unknown(&self, id: &str) -> bool {
        match &self.0 {
            Kind::Patients(_) => false,
            Kind::Tenant(_, index) => index.lookup(id).is_none(),
        }
    }

    /// The security labels a response may not carry.
    pub(crate) fn labels(&self) -> &Labels {
        &self.1
    }

    /// The stored id of `id` when it is permitted (a cheap clone, for recording what a body
    /// named).
    pub(crate) fn get(&self, id: &str) -> Option<PatientId> {
        let found = |ids: &[PatientId]| {
            ids.binary_search_by(|p| p.as_str().cmp(id)).ok().and_then(|i| ids.get(i)).cloned()
        };
        let permitted = match &self.0 {
            Kind::Patients(ids) => found(ids),
            Kind::Tenant(tenant, index) => {
                index.lookup(id).and_then(|(p, t)| (Some(*t) == *tenant).then(|| p.clone()))
            }
        };
        permitted.or_else(|| found(&self.3))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::labels::Labels;

    fn index() -> Arc<PatientTenants> {
        let data = Value::from_json_str(
            r#"{"a-p1": {"tenant": "tenant-a"}, "b-p1": {"tenant": "tenant-b"},
                "a-p2": {"tenant": "tenant-a"}, "odd": {"tenant": 7}, "bare": 1}"#,
        )
        .unwrap();
        Arc::new(PatientTenants::from_data(&data))
    }

    #[test]
    fn a_tenant_permits_its_patients_only() {
        let p = Permit::tenant("tenant-a", index());
        assert_eq!(p.get("a-p1"), Some(PatientId::from("a-p1")));
        assert_eq!(p.get("a-p2"), Some(PatientId::from("a-p2")));
        assert_eq!(p.get("b-p1"), None);
        assert_eq!(p.get("a-p404"), None);
        assert_eq!(p.get("odd"), None, "a patient whose tenant is not a string belongs to no tenant");
        assert_eq!(p.get("bare"), None);
        assert_eq!(p.get(""), None);
    }

    #[test]
    fn patients_labels_are_read_and_withheld_only_when_the_permit_withholds_them() {
        let data = Value::from_json_str(
            r#"{"a-p1": {"tenant": "tenant-a"},
                "a-vip": {"tenant": "tenant-a", "security": ["urn:conf|R", "urn:act|PSY"]}}"#,
        )
        .unwrap();
        assert_eq!(PatientTenants::check_labels(&data), Ok(()));
        let index = Arc::new(PatientTenants::from_data(&data));
        assert_eq!(index.labels_of("a-vip"), ["urn:conf|R", "urn:act|PSY"]);
        assert!(index.labels_of("a-p1").is_empty());
        let permit = |labels: &[&str]| {
            Permit::tenant("tenant-a", index.clone())
                .withholding(Labels::from_tokens(labels.iter().copied()))
                .with_patient_labels(&index)
        };
        assert!(permit(&["urn:conf|R"]).patient_withheld("a-vip"));
        assert!(permit(&["R"]).patient_withheld("a-vip"), "a bare code matches any system");
        assert!(!permit(&["urn:conf|R"]).patient_withheld("a-p1"));
        assert!(!permit(&["urn:conf|V"]).patient_withheld("a-vip"));
        assert!(!permit(&[]).patient_withheld("a-vip"), "nothing withheld");
        let care_team = Permit::patients(["a-p1", "a-vip"])
            .withholding(Labels::from_tokens(["urn:conf|R"]))
            .with_patient_labels(&index);
        assert!(!care_team.patient_withheld("a-vip"), "held to named patients: her own, chart labels or not");
    }

    #[test]
    fn patient_labels_of_another_shape_are_refused() {
        for bad in [
            r#"{"p": {"tenant": "t", "security": "urn:conf|R"}}"#,
            r#"{"p": {"tenant": "t", "security": ["R"]}}"#,
            r#"{"p": {"tenant": "t", "security": ["urn:conf|"]}}"#,
            r#"{"p": {"tenant": "t", "security": [7]}}"#,
        ] {
            assert!(PatientTenants::check_labels(&Value::from_json_str(bad).unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_unknown_tenant_permits_nobody() {
        let p = Permit::tenant("tenant-z", index());
        assert_eq!(p.get("a-p1"), None);
    }

    #[test]
    fn a_patient_list_permits_exactly_its_members() {
        let p = Permit::patients(["a-p2", "a-p1", "a-p2"]);
        assert_eq!(p.get("a-p1"), Some(PatientId::from("a-p1")));
        assert_eq!(p.get("a-p2"), Some(PatientId::from("a-p2")));
        assert_eq!(p.get("a-p3"), None);
        assert_eq!(Permit::patients([]).get("a-p1"), None);
    }

    #[test]
    fn no_patients_map_means_no_tenant_patients() {
        let p = Permit::tenant("tenant-a", Arc::new(PatientTenants::from_data(&Value::Undefined)));
        assert_eq!(p.get("a-p1"), None);
    }
}
