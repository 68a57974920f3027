//! Search narrowing: a patient-restricted search on a compartment type gains a patient parameter
//! naming the permitted patients (what HAPI's SearchNarrowingInterceptor does, in front of any
//! FHIR server). Adding a parameter is always safe: repeated FHIR search parameters are ANDed, so
//! the upstream can only return less.

use phigate_plugin::{FhirRequest, Interaction, PatientId, QueryParam};

/// The search parameter that names a resource type's patient, and whether it takes a typed
/// reference (`Patient/x`) rather than a bare id. R4 gives nearly every compartment type a
/// `patient` parameter; these are the exceptions.
fn param_for(resource_type: &str) -> (&'static str, bool) {
    match resource_type {
        "Patient" => ("_id", false),
        "Group" => ("member", true),
        "AdverseEvent" => ("subject", true),
        "Schedule" | "Appointment" | "AppointmentResponse" => ("actor", true),
        _ => ("patient", false),
    }
}

/// Why a search could not be narrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NarrowError {
    /// The obligation came with a request that is not a type-level search.
    NotASearch,
    /// Nobody to narrow to.
    Empty,
    /// More patients than the configured bound.
    TooMany,
}

/// Appends the narrowing parameter to `query`.
pub(crate) fn narrow(
    fhir: Option<&FhirRequest>,
    patients: &[PatientId],
    max: usize,
    query: &mut Vec<QueryParam>,
) -> Result<(), NarrowError> {
    let Some(f) = fhir.filter(|f| f.interaction == Interaction::SearchType) else {
        return Err(NarrowError::NotASearch);
    };
    let Some(rt) = f.resource_type else {
        return Err(NarrowError::NotASearch);
    };
    if patients.is_empty() {
        return Err(NarrowError::Empty);
    }
    if patients.len() > max {
        return Err(NarrowError::TooMany);
    }
    let (name, typed) = param_for(rt);
    let mut value = String::with_capacity(patients.len() * 16);
    for (i, p) in patients.iter().enumerate() {
        if i > 0 {
            value.push(',');
        }
        if typed {
            value.push_str("Patient/");
        }
        value.push_str(p.as_str());
    }
    query.push(QueryParam { name: name.to_owned(), value });
    Ok(())
}
