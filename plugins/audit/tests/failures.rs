//! Fail closed: an unwritable directory or a full disk refuses the request with 503
//! `audit_unavailable`, turns readiness false, and recovers once storage works again.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a test failure

mod common;

use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::*;
use phigate_audit::{verify, VerifyStatus};
use phigate_plugin::{ErrorCode, Readiness, Stage};

/// The value of a counter with one label in the default registry (0 when absent).
fn counter(name: &str, label_value: &str) -> f64 {
    prometheus::gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| m.get_label().iter().any(|l| l.value() == label_value))
        .map(|m| m.get_counter().get_value())
        .sum()
}

const FULL_DISK_CHILD: &str = "PHIGATE_AUDIT_TEST_FULL_DISK_DIR";

#[tokio::test]
async fn unwritable_directory_is_503_audit_unavailable_and_not_ready_until_fixed() {
    let env = Env::new();
    // Root ignores permission bits, so make the path impossible instead: its parent is a file.
    let blocker = env.tmp.path().join("blocker");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let mut cfg = env.config();
    cfg.dir = blocker.join("audit");
    let stage = build(cfg, env.tmp.path());
    assert!(matches!(stage.readiness(), Readiness::NotReady(_)));

    let before = counter("phigate_audit_failures_total", "unwritable");
    let denial = stage.on_request(&mut read_ctx("r1")).await.unwrap_err();
    assert_eq!(denial.code, ErrorCode::AuditUnavailable);
    assert_eq!(denial.code.status().as_u16(), 503);
    assert!(counter("phigate_audit_failures_total", "unwritable") > before, "the refusal is counted");
    assert!(matches!(stage.readiness(), Readiness::NotReady(_)));

    std::fs::remove_file(&blocker).unwrap();
    std::fs::create_dir(&blocker).unwrap();
    stage.on_request(&mut read_ctx("r2")).await.unwrap();
    assert_eq!(stage.readiness(), Readiness::Ready(None));
    drop(stage);
    let r = verify(&blocker.join("audit"), Some(&env.public_key));
    assert_eq!(r.status, VerifyStatus::Intact, "{r}");
    assert_eq!(access(&blocker.join("audit"), "r1").len(), 0, "the refused attempt is not in the trail");
}

/// Runs the `full_disk_child` test in a child process whose file-size limit (RLIMIT_FSIZE) makes
/// the segment "full": the limit is per process, so it cannot be set in the test process itself.
#[test]
fn full_disk_is_503_and_the_record_is_not_acknowledged() {
    let env = Env::new();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "full_disk_child", "--nocapture", "--test-threads=1"])
        .env(FULL_DISK_CHILD, env.tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("FULL_DISK_CHILD_DONE"), "{stdout}");
    assert_eq!(access(&env.audit_dir, "refused-on-full").len(), 0, "refused record must not be in the trail");
    assert_eq!(access(&env.audit_dir, "after-space-freed").len(), 1);
    let r = verify(&env.audit_dir, Some(&env.public_key));
    assert_eq!(r.status, VerifyStatus::Intact, "{r}");
    assert_eq!(r.recoveries, 1, "the torn write is declared by a recovery record: {r}");
    let torn = std::fs::read_dir(&env.audit_dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".torn"))
        .count();
    assert_eq!(torn, 1, "the torn bytes are kept aside");
}

/// The child half of `full_disk_is_503_and_the_record_is_not_acknowledged`; does nothing unless
/// re-executed by it.
#[tokio::test]
async fn full_disk_child() {
    let Ok(tmp) = std::env::var(FULL_DISK_CHILD) else {
        return;
    };
    // Without a handler SIGXFSZ kills the process; with one, write() fails with EFBIG.
    signal_hook::flag::register(signal_hook::consts::SIGXFSZ, Arc::new(AtomicBool::new(false))).unwrap();
    let stage = build(config_at(tmp.as_ref()), tmp.as_ref());
    for i in 0..3 {
        stage.on_request(&mut read_ctx(&format!("before-{i}"))).await.unwrap();
    }
    let seg = segments(&std::path::Path::new(&tmp).join("audit")).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    // Room for 100 more bytes: less than one record, so the next write is torn.
    rlimit::setrlimit(rlimit::Resource::FSIZE, len + 100, rlimit::INFINITY).unwrap();

    let denial = stage.on_request(&mut read_ctx("refused-on-full")).await.unwrap_err();
    assert_eq!(denial.code, ErrorCode::AuditUnavailable);
    assert!(matches!(stage.readiness(), Readiness::NotReady(_)));
    // 50 more bytes: the repair's newline and part of its recovery record land, then it fails.
    rlimit::setrlimit(rlimit::Resource::FSIZE, len + 150, rlimit::INFINITY).unwrap();
    let again = stage.on_request(&mut read_ctx("refused-again")).await.unwrap_err();
    assert_eq!(again.code, ErrorCode::AuditUnavailable, "still full: the repair cannot finish");

    rlimit::setrlimit(rlimit::Resource::FSIZE, rlimit::INFINITY, rlimit::INFINITY).unwrap();
    stage.on_request(&mut read_ctx("after-space-freed")).await.unwrap();
    assert_eq!(stage.readiness(), Readiness::Ready(None));
    drop(stage);
    println!("FULL_DISK_CHILD_DONE");
}
