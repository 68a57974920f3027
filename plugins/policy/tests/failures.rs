//! Fail closed: a policy that throws, runs too long or answers nonsense denies with policy_error.

// Test helpers outside #[test] functions unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use phigate_plugin::{ErrorCode, Interaction, Stage};
use phigate_policy::PolicyConfig;
use support::*;

fn write_policy(dir: &Path, body: &str) {
    std::fs::write(dir.join("authz.rego"), format!("package phigate.authz\n\n{body}\n")).unwrap();
}

/// A stage over a one-file policy whose entrypoint behaves well for the load-time probe (no
/// principal) and runs `bad` when a principal is present.
fn stage_with(bad: &str, max_eval_ms: u64) -> phigate_policy::PolicyStage {
    let tmp = tempfile::tempdir().unwrap();
    write_policy(
        tmp.path(),
        &format!("decision := {{\"allow\": false, \"reasons\": []}} if not input.principal\n\n{bad}"),
    );
    let mut c = PolicyConfig::new(tmp.path());
    c.watch = false;
    c.max_eval_ms = max_eval_ms;
    let stage = build(c);
    std::mem::forget(tmp);
    stage
}

async fn code(stage: &phigate_policy::PolicyStage) -> ErrorCode {
    let mut c =
        get("/fhir/Patient/a-p1", clinician_a(), fhir(Interaction::Read, "Patient", Some("a-p1"), &["a-p1"]));
    stage.on_request(&mut c).await.unwrap_err().code
}

#[tokio::test]
async fn policy_that_throws_is_403_policy_error() {
    // Two bodies of a complete rule giving different values is an evaluation error.
    let s = stage_with(
        "decision := {\"allow\": true} if input.principal\ndecision := {\"allow\": false} if input.principal",
        50,
    );
    assert_eq!(code(&s).await, ErrorCode::PolicyError);
}

#[tokio::test]
async fn policy_exceeding_its_time_limit_is_403_policy_error() {
    let slow = "decision := {\"allow\": count(x) == 0} if {\n\tinput.principal\n\tr := numbers.range(1, 20000)\n\tx := [1 | some i in r; some j in r; i == j + 100000]\n}";
    let s = stage_with(slow, 1);
    assert_eq!(code(&s).await, ErrorCode::PolicyError);
}

#[tokio::test]
async fn malformed_decision_is_403_policy_error() {
    let s = stage_with("decision := {\"allow\": \"yes\"} if input.principal", 50);
    assert_eq!(code(&s).await, ErrorCode::PolicyError);
}

#[tokio::test]
async fn undefined_decision_is_403_policy_error() {
    let s = stage_with("", 50);
    assert_eq!(code(&s).await, ErrorCode::PolicyError);
}

#[test]
fn config_problems_are_reported_together() {
    let mut c = PolicyConfig::new("/nonexistent/policies");
    c.max_eval_ms = 0;
    c.entrypoint = "phigate.authz.decision".into();
    c.break_glass_role = " ".into();
    let routes = vec![route()];
    let ctx = phigate_plugin::StageBuildCtx { routes: &routes, config_dir: Path::new("/") };
    let issues = c.build(&ctx).unwrap_err();
    let keys: Vec<&str> = issues.iter().map(|i| i.key_path.as_str()).collect();
    assert_eq!(keys, ["dir", "entrypoint", "max_eval_ms", "break_glass_role"]);
}

#[test]
fn unknown_config_keys_are_rejected() {
    let err = serde_yaml::from_str::<PolicyConfig>("dir: policies\nmax_eval_msec: 5\n").unwrap_err();
    assert!(err.to_string().contains("unknown field"));
}

#[test]
fn policy_failing_its_tests_does_not_load() {
    let tmp = support::policies_copy();
    std::fs::write(tmp.path().join("extra_test.rego"), "package extra_test\n\ntest_always_fails if false\n")
        .unwrap();
    let routes = vec![route()];
    let ctx = phigate_plugin::StageBuildCtx { routes: &routes, config_dir: Path::new("/") };
    let issues = PolicyConfig::new(tmp.path()).build(&ctx).unwrap_err();
    assert!(issues[0].message.contains("tests failed"), "{}", issues[0].message);
}
