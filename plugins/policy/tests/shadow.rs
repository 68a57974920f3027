//! The shadow policy: evaluated beside the active one on the same input, compared, counted and
//! logged, never enforced; loaded, tested and reloaded like the active one. Alone in its test
//! binary: it reads a process-wide counter.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use phigate_plugin::{Interaction, RequestCtx, Stage};
use phigate_policy::{PolicyConfig, ShadowConfig};
use support::*;

fn count(outcome: &str) -> u64 {
    counter("phigate_policy_shadow_decisions_total", "outcome", outcome)
}

fn counts() -> [u64; 5] {
    ["agree", "would_allow", "would_deny", "would_differ", "error"].map(count)
}

/// clinician_a2's care team in `dir` (no shipped Rego test depends on it).
fn a2_team(dir: &Path, team: &str) {
    let path = dir.join("data/care_teams.yaml");
    let yaml = std::fs::read_to_string(&path)
        .unwrap()
        .replace("clinician_a2: [a-p3, a-p4]", &format!("clinician_a2: [{team}]"));
    std::fs::write(path, yaml).unwrap();
}

fn a2() -> std::sync::Arc<phigate_plugin::Principal> {
    principal("clinician_a2", "tenant-a", &["clinician"], &["user/*.rs"])
}

fn read(patient: &str) -> RequestCtx {
    get(
        &format!("/fhir/Patient/{patient}"),
        a2(),
        fhir(Interaction::Read, "Patient", Some(patient), &[patient]),
    )
}

fn shadow_stage(shadow: &Path) -> phigate_policy::PolicyStage {
    let mut c = PolicyConfig::new(shipped_policies());
    c.watch = false;
    c.max_eval_ms = 10_000;
    c.shadow = Some(ShadowConfig { dir: shadow.to_path_buf(), data_dir: None, entrypoint: None });
    build(c)
}

#[tokio::test]
async fn a_shadow_policy_is_compared_counted_and_never_enforced() {
    // The candidate moves a-p4 off clinician_a2's team and a-p5 onto it.
    let shadow = policies_copy();
    a2_team(shadow.path(), "a-p3, a-p5");
    let stage = shadow_stage(shadow.path());
    let (active, candidate) = (stage.revision(), stage.shadow_revision().unwrap());
    assert_ne!(active, candidate);
    let Some(phigate_plugin::Readiness::Ready(Some(detail))) = Some(stage.readiness()) else { panic!() };
    assert!(detail.contains(&format!("shadow {candidate}")), "{detail}");

    let before = counts();
    // clinician_a's team is the same in both: they agree.
    let mut same =
        get("/fhir/Patient/a-p1", clinician_a(), fhir(Interaction::Read, "Patient", Some("a-p1"), &["a-p1"]));
    stage.on_request(&mut same).await.unwrap();
    // a-p3: both allow, but the response would be checked against another permitted set. a-p4:
    // allowed, the shadow would deny. a-p5: denied, the shadow would allow.
    let mut outcomes = Vec::new();
    let mut recorded = Vec::new();
    for p in ["a-p3", "a-p4", "a-p5"] {
        let mut c = read(p);
        let r = stage.on_request(&mut c).await;
        outcomes.push(r.is_ok());
        let d = c.decision.as_ref().unwrap();
        assert_eq!(d.revision, active, "the active revision decides");
        // What the audit record will carry: the candidate's revision, outcome and verdict.
        let shadow = d.shadow.as_ref().unwrap();
        assert_eq!(shadow.revision, candidate);
        recorded.push((shadow.outcome.as_str(), shadow.verdict, shadow.differs.clone()));
    }
    assert_eq!(outcomes, [true, true, false], "enforced: the active care team");
    assert_eq!(
        recorded,
        [
            ("would_differ", Some("allow"), vec!["permitted_patients"]),
            ("would_deny", Some("patient_not_permitted"), vec![]),
            ("would_allow", Some("allow"), vec![])
        ]
    );
    assert_eq!(same.decision.as_ref().unwrap().shadow.as_ref().map(|s| s.outcome.as_str()), Some("agree"));
    let after = counts();
    let delta: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    // agree, would_allow, would_deny, would_differ, error
    assert_eq!(delta, [1, 1, 1, 1, 0]);

    // Same verdict, other obligations: a search narrowed to other patients.
    let mut search = get("/fhir/Observation", a2(), fhir(Interaction::SearchType, "Observation", None, &[]));
    stage.on_request(&mut search).await.unwrap();
    assert_eq!(count("would_differ") - after[3], 1);
    let differs = &search.decision.as_ref().unwrap().shadow.as_ref().unwrap().differs;
    assert_eq!(differs, &["narrow_patients", "permitted_patients"], "named, never valued");
}

#[tokio::test]
async fn a_shadow_is_tested_and_reloaded_like_the_active_policy() {
    let shadow = policies_copy();
    let stage = shadow_stage(shadow.path());
    let first = stage.shadow_revision().unwrap();
    assert_eq!(first, stage.revision(), "a copy of the active policy is the same revision");

    // A shadow that fails its own tests is rejected; the previous shadow stays.
    let broken = shadow.path().join("tenant.rego");
    let good = std::fs::read_to_string(&broken).unwrap();
    std::fs::write(&broken, good.replace("deny contains \"tenant_mismatch\" if not tenant_ok", "")).unwrap();
    assert!(
        matches!(stage.reload_now(), Ok(phigate_policy::ReloadOutcome::Unchanged(_))),
        "the active one did not change"
    );
    assert_eq!(stage.shadow_revision().unwrap(), first);

    std::fs::write(&broken, good).unwrap();
    a2_team(shadow.path(), "a-p3");
    stage.reload_now().unwrap();
    let next = stage.shadow_revision().unwrap();
    assert_ne!(next, first, "a passing change is loaded");
    assert_eq!(stage.revision(), first, "and never enforced");

    // At start, a shadow that does not load is a config error on `shadow.dir`.
    std::fs::write(shadow.path().join("tenant.rego"), "package phigate.authz\n\ndeny contains if {").unwrap();
    let mut c = PolicyConfig::new(shipped_policies());
    c.watch = false;
    c.shadow = Some(ShadowConfig { dir: shadow.path().to_path_buf(), data_dir: None, entrypoint: None });
    let routes = vec![route()];
    let ctx = phigate_plugin::StageBuildCtx { routes: &routes, config_dir: Path::new("/") };
    let issues = c.build(&ctx).unwrap_err();
    assert_eq!(issues[0].key_path, "shadow.dir", "{issues:?}");
}
