//! Revisions reported as changes for the audit trail: the revision in force at start, each one
//! applied (with the one it replaced) and each one refused (with a fixed reason class, never the
//! Rego or data), by what set the reload off.

// Test helpers outside #[test] functions unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::mpsc;
use std::time::Duration;

use phigate_plugin::{Change, ChangeEvent, ChangeSink, ChangeTrigger, Stage};
use phigate_policy::{PolicyStage, ReloadOutcome};
use support::*;

/// A sink whose events the test receives.
fn attach(stage: &PolicyStage) -> mpsc::Receiver<ChangeEvent> {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    stage.attach_changes(ChangeSink::new(move |e| {
        let _ = tx.lock().unwrap().send(e);
    }));
    rx
}

fn care_teams(dir: &std::path::Path, a2_team: &str) {
    let yaml = format!("care_teams:\n  tenant-a:\n    clinician_a: [a-p1, a-p2]\n    clinician_a2: [{a2_team}]\n    er_doctor_a: []\n  tenant-b:\n    clinician_b: [b-p1, b-p2]\n");
    std::fs::write(dir.join("data/care_teams.yaml"), yaml).unwrap();
}

#[test]
fn startup_applied_and_rejected_revisions_are_reported_with_their_hashes() {
    let tmp = policies_copy();
    let stage = stage_at(tmp.path());
    let first = stage.revision();
    let rx = attach(&stage);
    let startup = rx.try_recv().unwrap();
    assert_eq!(startup.trigger, ChangeTrigger::Startup);
    assert_eq!(startup.change, Change::PolicyRevisionApplied { previous: None, revision: first.clone() });

    care_teams(tmp.path(), "a-p3, a-p4, a-p5");
    let ReloadOutcome::Applied(second) = stage.reload_now().unwrap() else { panic!("no swap") };
    let applied = rx.try_recv().unwrap();
    assert_eq!(applied.trigger, ChangeTrigger::Sighup);
    assert_eq!(
        applied.change,
        Change::PolicyRevisionApplied { previous: Some(first.clone()), revision: second.clone() }
    );

    // Unchanged files: nothing changed, nothing reported.
    assert_eq!(stage.reload_now().unwrap(), ReloadOutcome::Unchanged(second.clone()));
    assert!(rx.try_recv().is_err());

    // A Rego syntax error: refused with its class; the attempted content is hashed, not quoted.
    let original = std::fs::read_to_string(tmp.path().join("tenant.rego")).unwrap();
    let secret_marker = "deny contains if { \"do-not-record-this-source\"";
    std::fs::write(tmp.path().join("tenant.rego"), format!("{original}\n{secret_marker}")).unwrap();
    assert!(stage.reload_now().is_err());
    let rejected = rx.try_recv().unwrap();
    let Change::PolicyRevisionRejected { active, attempted, reason } = &rejected.change else {
        panic!("{rejected:?}")
    };
    assert_eq!((active.as_str(), *reason), (second.as_str(), "rego"));
    let attempted = attempted.clone().expect("the files were readable: their hash is known");
    assert!(attempted != second && attempted.len() == 16 && attempted.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!format!("{rejected:?}").contains("do-not-record"), "no policy source in a change");
    assert_eq!(stage.revision(), second, "the old revision keeps deciding");

    // A revision that fails its own tests is refused as such.
    let broken = original.replace("object.get(input.request, \"tenant\", t) == t", "true");
    std::fs::write(tmp.path().join("tenant.rego"), broken).unwrap();
    assert!(stage.reload_now().is_err());
    let Change::PolicyRevisionRejected { reason, .. } = rx.try_recv().unwrap().change else { panic!() };
    assert_eq!(reason, "tests_failed");
}

#[test]
fn unreadable_files_are_reported_without_an_attempted_hash() {
    let tmp = policies_copy();
    let stage = stage_at(tmp.path());
    let rx = attach(&stage);
    rx.try_recv().unwrap();
    // A data file that is not UTF-8 cannot be read as text: nothing to hash.
    std::fs::write(tmp.path().join("data/care_teams.yaml"), [0xff, 0xfe, 0x00]).unwrap();
    assert!(stage.reload_now().is_err());
    let Change::PolicyRevisionRejected { attempted, reason, .. } = rx.try_recv().unwrap().change else {
        panic!()
    };
    assert_eq!((attempted, reason), (None, "unreadable"));
}

#[test]
fn without_a_sink_reloads_report_nothing_and_still_apply() {
    let tmp = policies_copy();
    let stage = stage_at(tmp.path());
    care_teams(tmp.path(), "a-p3");
    assert!(matches!(stage.reload_now().unwrap(), ReloadOutcome::Applied(_)));
    // Attached later: only the revision now in force is reported, as of startup.
    let rx = attach(&stage);
    let startup = rx.try_recv().unwrap();
    assert_eq!(startup.change, Change::PolicyRevisionApplied { previous: None, revision: stage.revision() });
    assert!(rx.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_change_seen_by_the_watcher_is_reported_as_watch() {
    let tmp = policies_copy();
    let mut config = phigate_policy::PolicyConfig::new(tmp.path());
    config.max_eval_ms = 10_000;
    let stage = build(config);
    let rx = attach(&stage);
    let first = rx.try_recv().unwrap();
    let mut watching = stage.watching();
    for task in stage.background_tasks() {
        tokio::spawn(task);
    }
    watching.wait_for(|w| *w).await.unwrap();
    care_teams(tmp.path(), "a-p3, a-p4, a-p5");
    // The timeout bounds a broken watcher; the reported event is the synchronisation.
    let event =
        tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30))).await.unwrap().unwrap();
    assert_eq!(event.trigger, ChangeTrigger::Watch);
    let Change::PolicyRevisionApplied { previous: Some(previous), revision } = event.change else { panic!() };
    let Change::PolicyRevisionApplied { revision: started, .. } = first.change else { panic!() };
    assert_eq!((previous, revision), (started, stage.revision()));
}
