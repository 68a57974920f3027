//! The typed FHIR R4 request model the gateway core builds for requests on `fhir` routes.

use serde::Serialize;

use crate::PatientId;

/// The FHIR REST interaction a request performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Interaction {
    /// `GET [type]/[id]`
    Read,
    /// `GET [type]/[id]/_history/[vid]`
    Vread,
    /// `PUT [type]/[id]`
    Update,
    /// `PATCH [type]/[id]`
    Patch,
    /// `DELETE [type]/[id]`
    Delete,
    /// `POST [type]`
    Create,
    /// `GET [type]/[id]/_history`, `GET [type]/_history` or `GET _history`
    History,
    /// `GET [type]?...` or `POST [type]/_search`
    SearchType,
    /// `GET ?...` or `POST _search` at the base
    SearchSystem,
    /// `GET [compartment]/[id]/[type]?...` (for example `Patient/X/Observation`)
    SearchCompartment,
    /// `$operation` at system, type or instance level
    Operation,
    /// `POST` of a `batch` Bundle at the base
    Batch,
    /// `POST` of a `transaction` Bundle at the base
    Transaction,
    /// `GET metadata`
    Capabilities,
}

impl Interaction {
    /// The name policies, audit records and traces use (the serde name): `read`,
    /// `search-type`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            Interaction::Read => "read",
            Interaction::Vread => "vread",
            Interaction::Update => "update",
            Interaction::Patch => "patch",
            Interaction::Delete => "delete",
            Interaction::Create => "create",
            Interaction::History => "history",
            Interaction::SearchType => "search-type",
            Interaction::SearchSystem => "search-system",
            Interaction::SearchCompartment => "search-compartment",
            Interaction::Operation => "operation",
            Interaction::Batch => "batch",
            Interaction::Transaction => "transaction",
            Interaction::Capabilities => "capabilities",
        }
    }
}

/// A compartment a request is scoped to (`Patient/X/Observation` → `Patient`, `X`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Compartment {
    /// Compartment type (R4 resource type name).
    pub resource_type: &'static str,
    /// Compartment owner id.
    pub id: String,
}

/// A search parameter the gateway cannot resolve to a set of patients (chained params, `_has`,
/// `_include`, `_filter`, `_query`). Policy may refuse such requests for patient-restricted
/// principals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnresolvedParam {
    /// The parameter name as sent (values are never kept here).
    pub name: String,
}

/// A classified FHIR request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FhirRequest {
    /// What is done.
    pub interaction: Interaction,
    /// The resource type addressed, validated against the R4 list.
    pub resource_type: Option<&'static str>,
    /// The logical id addressed.
    pub id: Option<String>,
    /// The version id (`vread`).
    pub version_id: Option<String>,
    /// The operation name without `$` (`everything`, `export`, ...).
    pub operation: Option<String>,
    /// The compartment the request is scoped to.
    pub compartment: Option<Compartment>,
    /// Every patient the request names (path, patient search params, bundle entries), sorted and
    /// deduplicated.
    pub patients: Vec<PatientId>,
    /// Params that could reach patients the gateway cannot name.
    pub unresolved: Vec<UnresolvedParam>,
    /// `_count`, when present.
    pub count: Option<u32>,
    /// For batch/transaction: the classified entries.
    pub entries: Vec<FhirRequest>,
    /// A further page of a search the server keeps (`GET [base]?_getpages=...`, HAPI's paging
    /// links): which search it continues, and so which types and patients, only the server
    /// knows. Its page is verified like any search result.
    pub continuation: bool,
}

impl FhirRequest {
    /// A request model with only the interaction set.
    pub fn new(interaction: Interaction) -> Self {
        FhirRequest {
            interaction,
            resource_type: None,
            id: None,
            version_id: None,
            operation: None,
            compartment: None,
            patients: Vec::new(),
            unresolved: Vec::new(),
            count: None,
            entries: Vec::new(),
            continuation: false,
        }
    }
}

/// The id of the patient a reference in a FHIR response points to (`Patient/X`, an absolute
/// URL, a versioned `Patient/X/_history/2`), `None` when it names no patient. A conditional
/// reference (`Patient?identifier=...`) cannot be resolved and yields `Some("")`, which matches
/// no patient. Shared by the stages that read response bodies, so they count the same patients.
pub fn patient_of_reference(reference: &str) -> Option<&str> {
    let reference = reference.split('#').next().unwrap_or("");
    if reference.starts_with("Patient?") || reference.contains("/Patient?") {
        return Some("");
    }
    let mut after: Option<&str> = None;
    for segment in reference.rsplit('/') {
        if segment == "Patient" {
            if let Some(id) = after.filter(|s| !s.is_empty()) {
                return Some(id);
            }
        }
        after = Some(segment);
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::Interaction;

    #[test]
    fn interaction_names_are_the_serde_names() {
        use Interaction::*;
        let all = [
            Read,
            Vread,
            Update,
            Patch,
            Delete,
            Create,
            History,
            SearchType,
            SearchSystem,
            SearchCompartment,
            Operation,
            Batch,
            Transaction,
            Capabilities,
        ];
        for i in all {
            assert_eq!(serde_json::to_value(i).unwrap(), i.as_str(), "{i:?}");
        }
    }
}
