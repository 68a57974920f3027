//! Crash recovery: a torn last line is moved aside and declared by a `recovery` record; a
//! SIGKILL under load loses no acknowledged record and leaves a trail that verifies.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a test failure

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::*;
use phigate_audit::{verify, VerifyStatus};
use phigate_plugin::{ErrorCode, Readiness, Stage};

const KILL_CHILD: &str = "PHIGATE_AUDIT_TEST_KILL_DIR";

#[tokio::test]
async fn torn_final_line_is_moved_aside_and_a_recovery_record_chained() {
    let env = Env::new();
    let stage = env.stage();
    for i in 0..5 {
        stage.on_request(&mut read_ctx(&format!("before-{i}"))).await.unwrap();
    }
    drop(stage);
    let seg = env.segments().pop().unwrap();
    let torn = br#"{"v":1,"kind":"access","seq":99,"ts":"2026-"#;
    std::fs::OpenOptions::new().append(true).open(&seg).unwrap().write_all(torn).unwrap();
    // Before a restart the torn line is the newest segment's tail: reported, not a record.
    let r = verify(&env.audit_dir, None);
    assert_eq!(r.status, VerifyStatus::Intact, "{r}");
    assert_eq!(r.incomplete_tail_bytes, torn.len() as u64);
    assert_eq!(r.records, 5);

    let stage = env.stage();
    assert_eq!(stage.readiness(), Readiness::Ready(None));
    stage.on_request(&mut read_ctx("after")).await.unwrap();
    drop(stage);

    let r = verify(&env.audit_dir, Some(&env.public_key));
    assert_eq!(r.status, VerifyStatus::Intact, "{r}");
    assert_eq!(r.recoveries, 1);
    assert_eq!(r.records, 6);
    let aside: Vec<_> = std::fs::read_dir(&env.audit_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".torn"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(std::fs::read(&aside[0]).unwrap(), torn);
    let recovery = env.lines().into_iter().find(|l| l["kind"] == "recovery").unwrap();
    assert_eq!(recovery["reason"], "torn_tail");
}

#[tokio::test]
async fn segment_with_torn_header_is_moved_aside_and_writing_continues() {
    let env = Env::new();
    drop(env.stage());
    let next = env.audit_dir.join("seg-000000000002.jsonl");
    std::fs::write(&next, br#"{"v":1,"kind":"segm"#).unwrap();
    // Until a restart, a segment being created (header not yet whole).
    let r = verify(&env.audit_dir, Some(&env.public_key));
    assert_eq!((r.status, r.segments, r.incomplete_tail_bytes), (VerifyStatus::Intact, 2, 19), "{r}");
    let stage = env.stage();
    stage.on_request(&mut read_ctx("after")).await.unwrap();
    drop(stage);
    assert!(!next.exists());
    assert_eq!(verify(&env.audit_dir, Some(&env.public_key)).status, VerifyStatus::Intact);
}

#[tokio::test]
async fn corrupt_complete_line_in_last_segment_fails_closed_on_start() {
    let env = Env::new();
    let stage = env.stage();
    stage.on_request(&mut read_ctx("x")).await.unwrap();
    drop(stage);
    let seg = env.segments().pop().unwrap();
    let text = std::fs::read_to_string(&seg).unwrap().replace("dr-alice", "dr-mallo");
    std::fs::write(&seg, text).unwrap();
    // Not a crash artefact: an edit. The writer must not paper over it with a recovery record.
    let stage = env.stage();
    assert!(matches!(stage.readiness(), Readiness::NotReady(_)));
    let denial = stage.on_request(&mut read_ctx("y")).await.unwrap_err();
    assert_eq!(denial.code, ErrorCode::AuditUnavailable);
}

/// Runs `kill_child` in a child process writing under load from 64 tasks, SIGKILLs it after
/// 2000 acknowledged attempts, restarts the stage on the same directory and verifies.
#[tokio::test]
async fn sigkill_under_load_then_restart_verifies_and_keeps_every_acknowledged_attempt() {
    let env = Env::new();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "kill_child", "--nocapture", "--test-threads=1"])
        .env(KILL_CHILD, env.tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut acked = HashSet::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while acked.len() < 2000 {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("child ended early after {} acks: {err}", acked.len());
        }
        if let Some(id) = line.trim().strip_prefix("ACK ") {
            acked.insert(id.to_owned());
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Acks printed before the kill count too.
    for l in out.lines() {
        if let Some(id) = l.unwrap().trim().strip_prefix("ACK ") {
            acked.insert(id.to_owned());
        }
    }

    let stage = env.stage();
    assert_eq!(stage.readiness(), Readiness::Ready(None));
    stage.on_request(&mut read_ctx("after-restart")).await.unwrap();
    drop(stage);

    let r = verify(&env.audit_dir, Some(&env.public_key));
    assert_eq!(r.status, VerifyStatus::Intact, "{r}");
    let on_disk: HashSet<String> = env
        .lines()
        .into_iter()
        .filter(|l| l["phase"] == "attempt")
        .map(|l| l["request_id"].as_str().unwrap().to_owned())
        .collect();
    let lost: Vec<_> = acked.difference(&on_disk).collect();
    assert!(lost.is_empty(), "acknowledged attempts missing after SIGKILL: {lost:?}");
    eprintln!("after SIGKILL: {} acked, {r}", acked.len());
}

/// The child half of the SIGKILL test; does nothing unless re-executed by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_child() {
    let Ok(tmp) = std::env::var(KILL_CHILD) else {
        return;
    };
    let stage = Arc::new(build(config_at(tmp.as_ref()), tmp.as_ref()));
    let mut tasks = Vec::new();
    for t in 0..64 {
        let stage = stage.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let id = format!("load-{t}-{i}");
                let mut ctx = read_ctx(&id);
                stage.on_request(&mut ctx).await.unwrap();
                // Printed only once durable: the parent checks each of these after the kill.
                println!("ACK {id}");
                answered(&mut ctx, 200);
                stage.on_complete(&ctx).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}
