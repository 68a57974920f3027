//! Keeps `load-tests/run` from rotting: `--smoke` checks the script's syntax, generates the
//! fixtures (PKI, tokens, paths) and validates every target's config with the target's own
//! checker where installed (`nginx -t`, `envoy --mode validate`, `phigate check`). No load is sent.

use std::{path::Path, process::Command};

fn on_path(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

#[test]
fn run_script_smoke_mode_passes() {
    // The fixtures need openssl and python3 with `cryptography`; without them there is nothing to
    // check, and the load test itself could not run either.
    let has_cryptography = Command::new("python3")
        .args(["-c", "import cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !on_path("openssl") || !has_cryptography {
        eprintln!("skipping: openssl or python3 with `cryptography` not installed");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../run");
    let out = Command::new("bash").arg(&script).arg("--smoke").output().unwrap();
    assert!(out.status.success(), "load-tests/run --smoke failed:\n{}", String::from_utf8_lossy(&out.stderr));
}
