//! The library functions behind `phigate policy test` and `phigate policy eval`.

// Test helpers outside #[test] functions unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use phigate_policy::{eval_input, run_policy_tests, TestOutcome};
use support::*;

#[test]
fn shipped_policy_tests_all_pass_with_coverage() {
    let report = run_policy_tests(&shipped_policies());
    let text = report.to_string();
    assert!(report.success(), "{text}");
    assert!(report.results.len() >= 50);
    assert!(text.contains("PASS data.phigate.tenant_test.test_other_tenant_patient_denied"));
    assert!(report.coverage.iter().any(|c| c.path == "authz.rego" && c.covered > 0));
    assert!(!report.coverage.iter().any(|c| c.path.ends_with("_test.rego")));
}

#[test]
fn failing_and_erroring_tests_are_reported() {
    let tmp = policies_copy();
    std::fs::write(
        tmp.path().join("extra_test.rego"),
        "package extra_test\n\ntest_fails if false\n\ntest_errors if to_number(\"x\") == 1\n",
    )
    .unwrap();
    let report = run_policy_tests(tmp.path());
    assert!(!report.success());
    assert_eq!(report.failed(), 2);
    let fails: Vec<&TestOutcome> =
        report.results.iter().filter(|r| r.rule.starts_with("data.extra_test")).map(|r| &r.outcome).collect();
    assert_eq!(fails[0], &TestOutcome::Fail);
    assert!(matches!(fails[1], TestOutcome::Error(_)));
    assert!(report.to_string().contains("FAIL data.extra_test.test_fails"));
}

#[test]
fn unparsable_policy_is_a_load_error_not_a_pass() {
    let tmp = policies_copy();
    std::fs::write(tmp.path().join("broken.rego"), "package broken\n\nallow if {\n").unwrap();
    let report = run_policy_tests(tmp.path());
    assert!(!report.success());
    assert!(report.load_error.is_some());
}

#[test]
fn eval_input_gives_the_decision_and_code() {
    let input = r#"{"v":1,"principal":{"sub":"clinician_a","tenant":"tenant-a","roles":["clinician"],"scopes":["user/*.rs"]},
      "request":{"method":"GET","route":"fhir","tenant":"tenant-a","patients":["b-p1"],"prefer":[],
      "fhir":{"interaction":"read","resource_type":"Patient","id":"b-p1","patients":["b-p1"],"unresolved":[],"entries":[]}}}"#;
    let out = eval_input(&shipped_policies(), input).unwrap();
    assert_eq!(out["decision"]["allow"], false);
    assert_eq!(out["code"], "tenant_mismatch");
    assert_eq!(out["revision"].as_str().unwrap().len(), 16);
    assert!(eval_input(&shipped_policies(), "{not json").is_err());
    // An allowed read says which security labels the gateway would withhold.
    let own = input.replace("b-p1", "a-p1");
    let out = eval_input(&shipped_policies(), &own).unwrap();
    assert_eq!(
        (&out["decision"]["allow"], &out["code"]),
        (&serde_json::json!(true), &serde_json::Value::Null)
    );
    let withheld = out["withheld_labels"].as_array().unwrap();
    assert_eq!(withheld.len(), 5, "a clinician is cleared for none of the shipped labels: {out}");
    let psychiatrist = own.replace(r#""roles":["clinician"]"#, r#""roles":["psychiatrist"]"#);
    let out = eval_input(&shipped_policies(), &psychiatrist).unwrap();
    assert_eq!(out["withheld_labels"].as_array().unwrap().len(), 4);
}

/// `phigate policy diff`: the same policies decide a corpus alike; a data change (clinician_b
/// off b-p1's care team) shows up exactly on the inputs it changes, with both verdicts.
#[test]
fn diff_lists_the_inputs_a_change_decides_differently() {
    let probes = std::fs::read_to_string(shipped_policies().join("probes.json")).unwrap();
    let same = phigate_policy::diff_inputs(&shipped_policies(), &shipped_policies(), &probes).unwrap();
    assert!(same.inputs >= 100 && same.differences.is_empty(), "{same}");
    assert_eq!(same.agree, same.inputs);

    let changed = policies_copy();
    let teams = changed.path().join("data/care_teams.yaml");
    let yaml = std::fs::read_to_string(&teams).unwrap();
    std::fs::write(&teams, yaml.replace("clinician_b: [b-p1, b-p2]", "clinician_b: [b-p2]")).unwrap();
    let report = phigate_policy::diff_inputs(&shipped_policies(), changed.path(), &probes).unwrap();
    let read =
        report.differences.iter().find(|d| d.name == "clinician_b.read_b_p1").expect("the read of b-p1");
    assert_eq!(
        (read.outcome, read.from.as_str(), read.to.as_str()),
        ("would_deny", "allow", "patient_not_permitted")
    );
    assert!(report.differences.iter().all(|d| d.name.starts_with("clinician_b.")), "{report}");
    assert_eq!(report.agree + report.differences.len(), report.inputs);
    assert!(report
        .to_string()
        .contains("DIFF would_deny clinician_b.read_b_p1: allow -> patient_not_permitted"));

    // JSON Lines: inputs named by line.
    let corpus: serde_json::Value = serde_json::from_str(&probes).unwrap();
    let line = corpus["clinician_b.read_b_p1"].to_string();
    let jsonl = format!("{}\n\n{line}\n", corpus["clinician_a.read_a_p1"]);
    let report = phigate_policy::diff_inputs(&shipped_policies(), changed.path(), &jsonl).unwrap();
    assert_eq!(report.inputs, 2);
    assert_eq!(report.differences.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["line 3"]);
    assert!(phigate_policy::diff_inputs(&shipped_policies(), changed.path(), "{\nnot json").is_err());
}
