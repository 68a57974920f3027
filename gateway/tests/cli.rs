//! The command line: `phigate check` exits 0 or prints one `file:line: key: message` line per
//! error and exits 2; `phigate config schema` prints the reference; `phigate policy diff` exits
//! by whether a change decides a corpus differently; `phigate policy test` selects tests, prints
//! JSON and holds a coverage threshold.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use std::process::Command;

fn phigate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_phigate")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn check_reports_every_error_with_file_line_and_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "listeners:\n  - name: public\n    address: 127.0.0.1:8443\n    tls:\n      cert_path: missing.crt\n      key_path: missing.key\n\
         upstreams:\n  - name: up\n    address: 127.0.0.1:9443\n    sni: up.internal\n    tls: { ca_path: ca.crt, client_cert_path: c.crt, client_key_path: c.key }\n\
         routes:\n  - { name: r, path_prefix: /fhir, upstream: nope }\n",
    )
    .unwrap();
    let (code, _, stderr) = phigate(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    let file = path.display().to_string();
    assert!(stderr.contains(&format!("{file}:5: listeners[0].tls.cert_path:")), "{stderr}");
    assert!(stderr.contains(&format!("{file}:13: routes[0].upstream:")), "{stderr}");
    assert!(stderr.lines().count() >= 5, "every error at once: {stderr}");
}

#[test]
fn check_names_an_unknown_key_and_never_echoes_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.yaml");
    std::fs::write(&path, "listeners: []\nupstreams: []\nroutes: []\nadmin:\n  adress: s3cr3t-value\n")
        .unwrap();
    let (code, _, stderr) = phigate(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains(":5: admin.adress:"), "{stderr}");
    assert!(!stderr.contains("s3cr3t-value"), "{stderr}");
}

#[test]
fn check_accepts_a_valid_config_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let paths = phigate::demo::pki::DevPki::generate().unwrap().write_to(&dir.path().join("pki")).unwrap();
    let path = dir.path().join("ok.yaml");
    std::fs::write(
        &path,
        format!(
            "listeners:\n  - name: public\n    address: 127.0.0.1:8443\n    tls: {{ cert_path: {}, key_path: {} }}\n\
             upstreams:\n  - name: up\n    address: 127.0.0.1:9443\n    sni: fhir-upstream.internal\n\
             \x20   tls: {{ ca_path: {}, client_cert_path: {}, client_key_path: {} }}\n\
             routes:\n  - {{ name: r, path_prefix: /fhir, upstream: up, fhir: true }}\n",
            paths.gateway_cert.display(),
            paths.gateway_key.display(),
            paths.internal_ca_cert.display(),
            paths.gateway_client_cert.display(),
            paths.gateway_client_key.display(),
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = phigate(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(": ok"));

    // Stage sections are built too: a limit naming no route is found by `check`, not at start.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(
        "rate_limits:\n  limits:\n    - { name: per_ip, key: client_ip, requests: 10, period_secs: 1, routes: [nope] }\n",
    );
    std::fs::write(&path, text).unwrap();
    let (code, _, stderr) = phigate(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("ok.yaml:") && stderr.contains("rate_limits.limits[0].routes[0]"), "{stderr}");
}

#[test]
fn config_schema_prints_the_committed_reference() {
    let (code, stdout, _) = phigate(&["config", "schema"]);
    assert_eq!(code, 0);
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/REFERENCE.md")).unwrap();
    assert_eq!(stdout.trim_end(), committed.trim_end());
}

/// `phigate policy diff`: exit 0 when a corpus is decided alike, 1 with the differing inputs
/// listed when a change decides some differently, 2 when a directory does not load.
#[test]
fn policy_diff_exits_by_whether_decisions_changed() {
    let policies = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies");
    let (code, out, _) = phigate(&["policy", "diff", "--from", policies, "--to", policies]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 differently"), "{out}");

    let tmp = tempfile::tempdir().unwrap();
    phigate::demo::policies::write(tmp.path()).unwrap();
    let teams = tmp.path().join("data/care_teams.yaml");
    let yaml = std::fs::read_to_string(&teams).unwrap();
    std::fs::write(&teams, yaml.replace("clinician_b: [b-p1, b-p2]", "clinician_b: [b-p2]")).unwrap();
    let to = tmp.path().to_str().unwrap();
    let (code, out, _) = phigate(&["policy", "diff", "--from", policies, "--to", to]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("DIFF would_deny clinician_b.read_b_p1: allow -> patient_not_permitted"), "{out}");

    let (code, _, err) = phigate(&["policy", "diff", "--from", policies, "--to", "/nonexistent/policies"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn policy_test_selects_tests_reports_json_and_holds_a_coverage_threshold() {
    let policies = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies");
    let (code, out, _) =
        phigate(&["policy", "test", policies, "--run", "labels_test\\.test_break", "--format", "json"]);
    assert_eq!(code, 0, "{out}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rules: Vec<&str> =
        doc["results"].as_array().unwrap().iter().map(|r| r["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, ["data.phigate.labels_test.test_break_glass_clears_every_label"]);
    assert_eq!(
        (doc["passed"].as_u64(), doc["failed"].as_u64(), doc["success"].as_bool()),
        (Some(1), Some(0), Some(true))
    );
    assert!(doc["agreement"]["probes"].as_u64().unwrap() > 100);
    let partial = doc["coverage"]["percent"].as_f64().unwrap();
    assert!(partial < 90.0, "one test covers little: {partial}");

    // The whole suite clears 90%; one test does not, and the threshold fails it.
    let (code, out, _) = phigate(&["policy", "test", policies, "--threshold", "90"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = phigate(&["policy", "test", policies, "--run", "tenant_test", "--threshold", "90"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is below the threshold 90%"), "{out}");

    let (code, out, _) = phigate(&["policy", "test", policies, "--run", "no_such_test"]);
    assert_eq!(code, 1, "nothing ran: {out}");
    assert!(out.contains("no test matched"), "{out}");
    let (code, _, err) = phigate(&["policy", "test", policies, "--run", "("]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = phigate(&["policy", "test", policies, "--threshold", "120"]);
    assert_eq!(code, 2, "{err}");
}
