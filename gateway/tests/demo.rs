//! `phigate demo` starts, writes a `demo.json` whose every path exists, and the curl lines it
//! prints work: the first returns 200 through the gateway and the mTLS upstream, so does the
//! DPoP one with a proof from `phigate demo proof`, the opaque-token one (introspected at the
//! demo's authorization server), the SOC's admin line, the identity assertion's JWKS and SMART
//! discovery (no token) answer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn demo_starts_writes_demo_json_and_its_curl_line_returns_200() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_phigate"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut printed = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let done = line.starts_with("Ctrl-C stops the demo");
        printed.push(line);
        if done {
            break;
        }
    }
    let demo: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("demo.json")).unwrap()).unwrap();
    for key in [
        "config_path",
        "ca_cert",
        "client_cert",
        "client_key",
        "audit_dir",
        "audit_public_key",
        "alerts_path",
    ] {
        let path = demo[key].as_str().unwrap_or_else(|| panic!("{key} missing"));
        assert!(std::path::Path::new(path).exists(), "{key}: {path} does not exist");
    }
    for key in ["gateway_url", "fhir_base", "admin_url", "upstream_url"] {
        assert!(
            demo[key].as_str().is_some_and(|u| u.contains("127.0.0.1") || u.contains("localhost")),
            "{key}"
        );
    }
    assert!(demo["tenants"]["tenant-a"]["patients"].as_array().is_some_and(|p| !p.is_empty()));
    assert!(demo["tenants"]["tenant-b"]["patients"].as_array().is_some_and(|p| !p.is_empty()));

    let port: u16 = demo["gateway_url"].as_str().unwrap().rsplit(':').next().unwrap().parse().unwrap();
    phigate_test_support::wait_listening(([127, 0, 0, 1], port).into());
    // The first curl line, the DPoP one (which runs `phigate demo proof`), the SOC's and the
    // assertion JWKS.
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_phigate")).parent().unwrap().to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let curls = [
        printed.iter().find(|l| l.starts_with("curl ")).expect("a curl line is printed"),
        printed.iter().find(|l| l.contains("DPoP: $(phigate demo proof")).expect("a DPoP line"),
        printed.iter().find(|l| l.contains(".opaque)")).expect("an opaque-token line"),
        printed.iter().find(|l| l.contains("/exfil/blocks")).expect("a SOC line"),
        printed.iter().find(|l| l.contains("/.well-known/phigate/jwks.json")).expect("a JWKS line"),
        // Its last poll answers the manifest.
        printed.iter().find(|l| l.contains("/Patient/$export")).expect("a bulk export line"),
        printed.iter().find(|l| l.contains("/.well-known/smart-configuration")).expect("a discovery line"),
    ];
    for curl in curls {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("{curl} -o /dev/null -w '%{{http_code}}' --max-time 10"))
            .env("PATH", &path)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{curl}");
    }

    // SIGTERM stops the demo cleanly within its grace period.
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = rx.recv_timeout(Duration::from_secs(20)).expect("demo exits").unwrap();
    assert!(status.success(), "{status}");

    // The printed accounting line over the trail the demo left: intact, and it names a-p1's
    // accesses (the first curl line read that patient).
    let report = printed.iter().find(|l| l.starts_with("phigate audit report")).expect("a report line");
    let out = Command::new("bash").arg("-c").arg(report.as_str()).env("PATH", &path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("audit trail intact"), "{report}: {stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"a-p1\""), "{report}");
}
