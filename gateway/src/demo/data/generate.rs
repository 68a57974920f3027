//! Builds the synthetic resources. Values come from a seeded generator so every run is identical;
//! the shapes follow US Core-style resources as Synthea writes them, the content is made up.

use std::sync::Arc;

use serde_json::{json, Value};

use super::entry::Entry;
use super::{PatientInfo, PractitionerInfo, StoredResource, TenantInfo};

const LOINC: &str = "http://loinc.org";
const SNOMED: &str = "http://snomed.info/sct";
const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
const OBS_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
const OBSERVATIONS_PER_PATIENT: usize = 12;

const GIVEN: &[&str] = &["Ada", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines"];
const FAMILY: &[&str] =
    &["Okafor", "Lindqvist", "Moreau", "Tanaka", "Alvarez", "Novak", "Schmidt", "Haddad", "Kowalski"];
const DOCTORS: &[&str] = &["Imani Reyes", "Tomas Berg", "Priya Natarajan", "Kofi Mensah"];

/// (LOINC code, display, category, unit, base value, spread)
const VITALS: &[(&str, &str, &str, &str, f64, f64)] = &[
    ("8867-4", "Heart rate", "vital-signs", "/min", 62.0, 30.0),
    ("9279-1", "Respiratory rate", "vital-signs", "/min", 12.0, 8.0),
    ("8310-5", "Body temperature", "vital-signs", "Cel", 36.4, 1.2),
    ("29463-7", "Body weight", "vital-signs", "kg", 55.0, 40.0),
    ("8302-2", "Body height", "vital-signs", "cm", 155.0, 35.0),
    ("2339-0", "Glucose [Mass/volume] in Blood", "laboratory", "mg/dL", 70.0, 60.0),
];
const CONDITIONS: &[(&str, &str)] = &[
    ("38341003", "Hypertension (disorder)"),
    ("44054006", "Diabetes mellitus type 2 (disorder)"),
    ("55822004", "Hyperlipidemia (disorder)"),
    ("195662009", "Acute viral pharyngitis (disorder)"),
    ("10509002", "Acute bronchitis (disorder)"),
    ("15777000", "Prediabetes (finding)"),
];
const MEDICATIONS: &[(&str, &str)] = &[
    ("314076", "lisinopril 10 MG Oral Tablet"),
    ("860975", "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet"),
    ("197361", "amlodipine 5 MG Oral Tablet"),
    ("316672", "simvastatin 10 MG Oral Tablet"),
];

/// SplitMix64: tiny, seeded, reproducible everywhere (no dependency on a rand crate's stability).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One tenant's shape: id, id prefix, patient count, care teams (patient numbers per doctor).
const TENANTS: &[(&str, &str, usize, &[&[usize]])] =
    &[("tenant-a", "a", 5, &[&[1, 2, 3], &[3, 4, 5]]), ("tenant-b", "b", 4, &[&[1, 2], &[3, 4]])];

/// Generates every tenant and resource, in a fixed order.
pub(super) fn generate() -> (Vec<TenantInfo>, Vec<StoredResource>) {
    let mut rng = Rng(0x0070_6869_6761_7465); // "phigate"
    let mut out = Vec::new();
    let mut tenants = Vec::new();
    let mut person = 0;
    let mut doctor = 0;
    for &(tenant, prefix, patients, teams) in TENANTS {
        let tenant: Arc<str> = Arc::from(tenant);
        let practitioners: Vec<PractitionerInfo> = teams
            .iter()
            .enumerate()
            .map(|(i, team)| {
                let info = PractitionerInfo {
                    id: format!("{prefix}-dr{}", i + 1),
                    name: format!("Dr. {}", DOCTORS[doctor % DOCTORS.len()]),
                    patients: team.iter().map(|n| format!("{prefix}-p{n}")).collect(),
                };
                doctor += 1;
                out.push(practitioner(&tenant, &info));
                info
            })
            .collect();
        let mut infos = Vec::new();
        for n in 1..=patients {
            let gp = practitioners
                .iter()
                .find(|d| d.patients.iter().any(|p| *p == format!("{prefix}-p{n}")))
                .map_or("", |d| d.id.as_str());
            let ctx = PatientCtx {
                tenant: tenant.clone(),
                id: Arc::from(format!("{prefix}-p{n}")),
                gp: gp.to_owned(),
            };
            infos.push(patient_with_records(&ctx, person, &mut rng, &mut out));
            person += 1;
        }
        tenants.push(TenantInfo { id: tenant.to_string(), patients: infos, practitioners });
    }
    (tenants, out)
}

struct PatientCtx {
    tenant: Arc<str>,
    id: Arc<str>,
    gp: String,
}

impl PatientCtx {
    fn child(&self, resource_type: &'static str, id: String, body: Value) -> Entry {
        Entry::new(resource_type, id, &self.tenant, Some(self.id.clone()), body)
    }

    fn subject(&self) -> Value {
        json!({ "reference": format!("Patient/{}", self.id) })
    }
}

fn patient_with_records(
    ctx: &PatientCtx,
    person: usize,
    rng: &mut Rng,
    out: &mut Vec<StoredResource>,
) -> PatientInfo {
    let given = GIVEN[person % GIVEN.len()];
    let family = FAMILY[(person * 4 + 1) % FAMILY.len()];
    let gender = if person.is_multiple_of(2) { "female" } else { "male" };
    let birth = format!("{}-{:02}-{:02}", 1940 + rng.below(65), 1 + rng.below(12), 1 + rng.below(28));
    let mrn = format!("MRN{:05}", 10_000 + person * 37);
    let mut p = Entry::new(
        "Patient",
        ctx.id.to_string(),
        &ctx.tenant,
        Some(ctx.id.clone()),
        json!({
            "identifier": [{ "system": format!("https://phigate.dev/{}/mrn", ctx.tenant), "value": mrn }],
            "active": true,
            "name": [{ "use": "official", "family": family, "given": [given] }],
            "gender": gender,
            "birthDate": birth,
            "telecom": [{ "system": "phone", "value": format!("555-01{:02}", person), "use": "home" }],
            "address": [{ "city": "Springfield", "state": "MA", "country": "US" }],
            "generalPractitioner": [{ "reference": format!("Practitioner/{}", ctx.gp) }],
        }),
    );
    p.token("gender", None, gender);
    p.token("identifier", Some(&format!("https://phigate.dev/{}/mrn", ctx.tenant)), &mrn);
    p.token("general-practitioner", Some("Practitioner"), &ctx.gp);
    out.push(p.finish());

    let mut info = PatientInfo {
        id: ctx.id.to_string(),
        name: format!("{given} {family}"),
        observations: Vec::new(),
        encounters: Vec::new(),
        conditions: Vec::new(),
        medication_requests: Vec::new(),
    };
    for e in 1..=2 {
        let id = format!("{}-enc-{e}", ctx.id);
        out.push(encounter(ctx, &id, e, rng));
        info.encounters.push(id);
    }
    for o in 1..=OBSERVATIONS_PER_PATIENT {
        let id = format!("{}-obs-{o:02}", ctx.id);
        let enc = &info.encounters[(o - 1) % info.encounters.len()];
        out.push(observation(ctx, &id, enc, o, rng));
        info.observations.push(id);
    }
    for c in 1..=2 {
        let id = format!("{}-cond-{c}", ctx.id);
        out.push(condition(ctx, &id, &info.encounters[c - 1], (person + c * 3) % CONDITIONS.len()));
        info.conditions.push(id);
    }
    // The first patient of each tenant has a psychiatric diagnosis, labelled PSY: only
    // principals cleared for that label see it (policies/labels.rego).
    if ctx.id.ends_with("-p1") {
        let id = format!("{}-cond-psy", ctx.id);
        let depression = ("35489007", "Depressive disorder (disorder)", "2025-03-12T00:00:00Z");
        out.push(coded_condition(ctx, &id, &info.encounters[1], depression, Some("PSY")));
        info.conditions.push(id);
    }
    let id = format!("{}-medreq-1", ctx.id);
    out.push(medication_request(ctx, &id, &info.encounters[0], person % MEDICATIONS.len()));
    info.medication_requests.push(id);
    info
}

fn practitioner(tenant: &Arc<str>, info: &PractitionerInfo) -> StoredResource {
    let (given, family) = info.name.trim_start_matches("Dr. ").split_once(' ').unwrap_or(("", ""));
    let npi = format!("99{:08}", info.id.bytes().map(u64::from).sum::<u64>() * 7919);
    let mut r = Entry::new(
        "Practitioner",
        info.id.clone(),
        tenant,
        None,
        json!({
            "identifier": [{ "system": "http://hl7.org/fhir/sid/us-npi", "value": npi }],
            "active": true,
            "name": [{ "family": family, "given": [given], "prefix": ["Dr."] }],
        }),
    );
    r.token("identifier", Some("http://hl7.org/fhir/sid/us-npi"), &npi);
    r.finish()
}

fn encounter(ctx: &PatientCtx, id: &str, n: usize, rng: &mut Rng) -> StoredResource {
    let day = format!("2025-{:02}-{:02}", 2 + n * 3, 1 + rng.below(28));
    let mut r = ctx.child(
        "Encounter",
        id.to_owned(),
        json!({
            "status": "finished",
            "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory" },
            "type": [{ "coding": [{ "system": SNOMED, "code": "185349003", "display": "Encounter for check up (procedure)" }] }],
            "subject": ctx.subject(),
            "participant": [{ "individual": { "reference": format!("Practitioner/{}", ctx.gp) } }],
            "period": { "start": format!("{day}T09:00:00Z"), "end": format!("{day}T09:30:00Z") },
        }),
    );
    r.token("status", None, "finished");
    r.token("class", Some("http://terminology.hl7.org/CodeSystem/v3-ActCode"), "AMB");
    r.token("practitioner", Some("Practitioner"), &ctx.gp);
    r.finish()
}

fn observation(ctx: &PatientCtx, id: &str, enc: &str, n: usize, rng: &mut Rng) -> StoredResource {
    let (code, display, category, unit, base, spread) = VITALS[(n - 1) % VITALS.len()];
    let value = ((base + rng.unit() * spread) * 10.0).round() / 10.0;
    let when = format!("2025-{:02}-{:02}T09:{:02}:00Z", 2 + (n % 2) * 3, 1 + n, n * 2);
    let mut r = ctx.child(
        "Observation",
        id.to_owned(),
        json!({
            "status": "final",
            "category": [{ "coding": [{ "system": OBS_CATEGORY, "code": category }] }],
            "code": { "coding": [{ "system": LOINC, "code": code, "display": display }], "text": display },
            "subject": ctx.subject(),
            "encounter": { "reference": format!("Encounter/{enc}") },
            "effectiveDateTime": when,
            "valueQuantity": { "value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit },
        }),
    );
    r.token("status", None, "final");
    r.token("category", Some(OBS_CATEGORY), category);
    r.token("code", Some(LOINC), code);
    r.token("encounter", Some("Encounter"), enc);
    r.finish()
}

fn condition(ctx: &PatientCtx, id: &str, enc: &str, which: usize) -> StoredResource {
    let (code, display) = CONDITIONS[which];
    coded_condition(ctx, id, enc, (code, display, "2024-11-05T00:00:00Z"), None)
}

/// A Condition with SNOMED `code`, `display` and onset, labelled with `security` (an ActCode
/// sensitivity) when given.
fn coded_condition(
    ctx: &PatientCtx,
    id: &str,
    enc: &str,
    (code, display, onset): (&str, &str, &str),
    security: Option<&str>,
) -> StoredResource {
    let clinical = "http://terminology.hl7.org/CodeSystem/condition-clinical";
    let category = "http://terminology.hl7.org/CodeSystem/condition-category";
    let mut r = ctx.child(
        "Condition",
        id.to_owned(),
        json!({
            "clinicalStatus": { "coding": [{ "system": clinical, "code": "active" }] },
            "verificationStatus": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed" }] },
            "category": [{ "coding": [{ "system": category, "code": "encounter-diagnosis" }] }],
            "code": { "coding": [{ "system": SNOMED, "code": code, "display": display }], "text": display },
            "subject": ctx.subject(),
            "encounter": { "reference": format!("Encounter/{enc}") },
            "onsetDateTime": onset,
        }),
    );
    if let Some(label) = security {
        r.security(ACT_CODE, label);
    }
    r.token("clinical-status", Some(clinical), "active");
    r.token("category", Some(category), "encounter-diagnosis");
    r.token("code", Some(SNOMED), code);
    r.finish()
}

/// HL7 v3 ActCode: the sensitivity codes FHIR servers put in `meta.security`.
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

fn medication_request(ctx: &PatientCtx, id: &str, enc: &str, which: usize) -> StoredResource {
    let (code, display) = MEDICATIONS[which];
    let mut r = ctx.child(
        "MedicationRequest",
        id.to_owned(),
        json!({
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": { "coding": [{ "system": RXNORM, "code": code, "display": display }], "text": display },
            "subject": ctx.subject(),
            "encounter": { "reference": format!("Encounter/{enc}") },
            "requester": { "reference": format!("Practitioner/{}", ctx.gp) },
            "authoredOn": "2025-05-02T10:00:00Z",
            "dosageInstruction": [{ "text": "Take one tablet by mouth daily" }],
        }),
    );
    r.token("status", None, "active");
    r.token("intent", None, "order");
    r.token("code", Some(RXNORM), code);
    r.token("encounter", Some("Encounter"), enc);
    r.finish()
}
