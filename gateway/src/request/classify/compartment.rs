//! The official FHIR R4 Patient CompartmentDefinition, embedded and parsed once.
//!
//! For each resource type it lists the search parameters that link a resource to a patient
//! (`Observation` → `subject`, `performer`). Those are the parameters whose values name patients.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::Deserialize;

/// The embedded definition (hl7.org/fhir/R4/compartmentdefinition-patient.json).
const DEFINITION: &str = include_str!("../data/compartmentdefinition-patient.json");

/// Resource type → its Patient-compartment search params, and the union of all of them.
#[derive(Debug)]
pub(crate) struct PatientCompartment {
    by_type: HashMap<&'static str, Box<[&'static str]>>,
    all: Box<[&'static str]>,
}

#[derive(Deserialize)]
struct Definition<'a> {
    #[serde(borrow)]
    resource: Vec<Entry<'a>>,
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    code: &'a str,
    #[serde(default, borrow)]
    param: Vec<&'a str>,
}

/// Parsed on first use. An `Err` (a corrupt embedded file) makes every classification fail
/// closed; a unit test proves the embedded file parses.
static COMPARTMENT: LazyLock<Result<PatientCompartment, String>> = LazyLock::new(|| {
    let def: Definition<'static> = serde_json::from_str(DEFINITION).map_err(|e| e.to_string())?;
    let mut all: Vec<&'static str> = Vec::new();
    let mut by_type = HashMap::with_capacity(def.resource.len());
    for entry in def.resource {
        if entry.param.is_empty() {
            continue;
        }
        all.extend(entry.param.iter().copied());
        by_type.insert(entry.code, entry.param.into_boxed_slice());
    }
    all.sort_unstable();
    all.dedup();
    Ok(PatientCompartment { by_type, all: all.into_boxed_slice() })
});

impl PatientCompartment {
    /// The parsed definition, or `None` when the embedded file is corrupt.
    pub(crate) fn get() -> Option<&'static PatientCompartment> {
        COMPARTMENT.as_ref().ok()
    }

    /// The compartment params of `resource_type` (empty for types outside the compartment).
    pub(crate) fn params(&self, resource_type: &str) -> &[&'static str] {
        self.by_type.get(resource_type).map_or(&[], |p| p)
    }

    /// Whether `name` is a compartment param of any resource type.
    pub(crate) fn any_type_has(&self, name: &str) -> bool {
        self.all.binary_search(&name).is_ok()
    }

    /// How many resource types have compartment params.
    #[cfg(test)]
    pub(crate) fn type_count(&self) -> usize {
        self.by_type.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_definition_parses_with_the_r4_params() {
        let c = PatientCompartment::get().expect("embedded definition parses");
        assert_eq!(c.type_count(), 67);
        assert_eq!(c.params("Observation"), &["subject", "performer"]);
        assert_eq!(c.params("Patient"), &["link"]);
        assert!(c.params("Practitioner").is_empty());
        assert!(c.any_type_has("performer"));
        assert!(!c.any_type_has("code"));
    }
}
