//! The search parameters the sample upstream understands, per resource type. The same table drives
//! search and the CapabilityStatement, so what the server advertises is what it does.

/// How a search parameter matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParamKind {
    /// A reference to the patient (`patient`, `subject`): `Patient/x` or `x`, comma = OR.
    Patient,
    /// The logical id (`_id`), comma = OR.
    Id,
    /// Exact token match on `code` or `system|code`, comma = OR.
    Token,
}

const COMMON: &[(&str, ParamKind)] =
    &[("_id", ParamKind::Id), ("_tag", ParamKind::Token), ("_security", ParamKind::Token)];

const PATIENT: &[(&str, ParamKind)] = &[
    ("gender", ParamKind::Token),
    ("identifier", ParamKind::Token),
    ("general-practitioner", ParamKind::Token),
];
const PRACTITIONER: &[(&str, ParamKind)] = &[("identifier", ParamKind::Token)];
const OBSERVATION: &[(&str, ParamKind)] = &[
    ("patient", ParamKind::Patient),
    ("subject", ParamKind::Patient),
    ("category", ParamKind::Token),
    ("code", ParamKind::Token),
    ("status", ParamKind::Token),
    ("encounter", ParamKind::Token),
];
const ENCOUNTER: &[(&str, ParamKind)] = &[
    ("patient", ParamKind::Patient),
    ("subject", ParamKind::Patient),
    ("status", ParamKind::Token),
    ("class", ParamKind::Token),
    ("practitioner", ParamKind::Token),
];
const CONDITION: &[(&str, ParamKind)] = &[
    ("patient", ParamKind::Patient),
    ("subject", ParamKind::Patient),
    ("code", ParamKind::Token),
    ("category", ParamKind::Token),
    ("clinical-status", ParamKind::Token),
];
const MEDICATION_REQUEST: &[(&str, ParamKind)] = &[
    ("patient", ParamKind::Patient),
    ("subject", ParamKind::Patient),
    ("status", ParamKind::Token),
    ("intent", ParamKind::Token),
    ("code", ParamKind::Token),
    ("encounter", ParamKind::Token),
];

/// The kind of search parameter `name` on `resource_type`, if supported.
pub(crate) fn search_params(resource_type: &str) -> impl Iterator<Item = (&'static str, ParamKind)> {
    let specific: &[(&str, ParamKind)] = match resource_type {
        "Patient" => PATIENT,
        "Practitioner" => PRACTITIONER,
        "Observation" => OBSERVATION,
        "Encounter" => ENCOUNTER,
        "Condition" => CONDITION,
        "MedicationRequest" => MEDICATION_REQUEST,
        _ => &[],
    };
    COMMON.iter().chain(specific).copied()
}
