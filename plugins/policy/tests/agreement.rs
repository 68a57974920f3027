//! Bytecode agreement: decisions are served by regorus' bytecode VM, tests run on its
//! interpreter. Rules that regorus 0.14.1 compiles wrongly pass every Rego test yet decide
//! differently when served; the probe corpus (`policies/probes.json`) catches them before the
//! revision is served, and `phigate policy test` reports them.

// Test helpers outside #[test] functions unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use phigate_policy::{run_policy_tests, LoadError};
use support::*;

fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} no longer contains the rule this test rewrites");
    std::fs::write(path, text.replace(from, to)).unwrap();
}

/// `l := data.map[missing]` does not fail the body in the VM, so `not permits(_, l)` succeeds:
/// a capabilities request is refused with scope_insufficient when served.
const UNDEFINED_ASSIGNMENT: (&str, &str, &str) = (
    "scopes.rego",
    "\tdata.smart.interactions[op.interaction]\n\tnot permits(object.get(op, \"resource_type\", \"*\"), data.smart.interactions[op.interaction])",
    "\tl := data.smart.interactions[op.interaction]\n\tnot permits(object.get(op, \"resource_type\", \"*\"), l)",
);

/// An `else` branch whose `some ... in` loop fails ends the chain in the VM: a care-team
/// clinician gets mode "none" when served.
const LOOP_IN_ELSE: (&str, &str, &str) = (
    "patients.rego",
    "} else := \"tenant\" if {\n\ttenant_wide\n}",
    "} else := \"tenant\" if {\n\t\"tenant\" in role_access\n} else := \"tenant\" if {\n\tsome s in input.principal.scopes\n\tstartswith(s, \"system/\")\n}",
);

#[tokio::test]
async fn shipped_policies_agree_on_every_probe() {
    let report = run_policy_tests(&shipped_policies());
    assert!(matches!(report.agreement, Some(Ok(n)) if n >= 100), "{report}");
}

#[tokio::test]
async fn rules_the_vm_miscompiles_pass_their_tests_but_are_never_served() {
    for (file, from, to) in [UNDEFINED_ASSIGNMENT, LOOP_IN_ELSE] {
        let tmp = policies_copy();
        let stage = stage_at(tmp.path());
        let before = stage.revision();
        edit(tmp.path(), file, from, to);

        let report = run_policy_tests(tmp.path());
        assert_eq!(report.failed(), 0, "the interpreter decides it right: {report}");
        assert!(!report.success(), "{file}: the agreement check fails the run");
        assert!(report.to_string().contains("FAIL bytecode agreement"), "{report}");

        assert!(
            matches!(stage.reload_now(), Err(LoadError::Disagreement { .. })),
            "{file}: the miscompiled revision is rejected"
        );
        assert_eq!(stage.revision(), before, "the old revision keeps serving");
    }
}

#[tokio::test]
async fn a_malformed_probe_corpus_is_a_load_error_naming_the_file() {
    let tmp = policies_copy();
    let stage = stage_at(tmp.path());
    std::fs::write(tmp.path().join("probes.json"), r#"{"p": [1]}"#).unwrap();
    let err = stage.reload_now().unwrap_err();
    assert!(matches!(err, LoadError::Data { ref path, .. } if path == "probes.json"), "{err}");
}
