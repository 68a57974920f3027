//! Hot reload: atomic swaps under concurrent evaluation, broken revisions rejected while the old
//! one serves, and the file watcher.

// Test helpers outside #[test] functions unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use phigate_plugin::{Interaction, Stage};
use phigate_policy::{LoadError, ReloadOutcome};
use support::*;

/// Rewrites the care teams with `clinician_a2`'s team given (no shipped Rego test depends on it,
/// so the revision passes its own tests).
fn care_teams(dir: &Path, a2_team: &str) {
    let yaml = format!("care_teams:\n  tenant-a:\n    clinician_a: [a-p1, a-p2]\n    clinician_a2: [{a2_team}]\n    er_doctor_a: []\n  tenant-b:\n    clinician_b: [b-p1, b-p2]\n");
    std::fs::write(dir.join("data/care_teams.yaml"), yaml).unwrap();
}

fn read_a_p1() -> phigate_plugin::RequestCtx {
    get("/fhir/Patient/a-p1", clinician_a(), fhir(Interaction::Read, "Patient", Some("a-p1"), &["a-p1"]))
}

#[test]
fn reload_under_concurrent_evaluation_has_zero_failures() {
    let tmp = policies_copy();
    let stage = Arc::new(stage_at(tmp.path()));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<(usize, Result<String, String>)>();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (stage, stop, tx) = (stage.clone(), stop.clone(), tx.clone());
            std::thread::spawn(move || {
                let ctx = read_a_p1();
                while !stop.load(Ordering::Relaxed) {
                    let r = match stage.decide(&ctx) {
                        Ok(d) if d.allow => Ok(d.revision.clone()),
                        Ok(d) => Err(format!("denied: {:?}", d.reasons)),
                        Err(e) => Err(e.to_string()),
                    };
                    if tx.send((w, r)).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    drop(tx);
    let (mut failures, mut evaluations) = (Vec::new(), 0usize);
    for round in 0..6 {
        // Alternate another clinician's team: clinician_a reading a-p1 must be allowed throughout.
        care_teams(tmp.path(), if round % 2 == 0 { "a-p3, a-p4, a-p5" } else { "a-p3, a-p4" });
        let ReloadOutcome::Applied(rev) = stage.reload_now().map_err(|e| e.to_string()).unwrap() else {
            panic!("no swap")
        };
        // Wait until every worker has evaluated on the new revision: swaps overlap evaluations.
        let mut seen = HashSet::new();
        while seen.len() < 4 {
            let (w, r) = rx.recv().unwrap();
            evaluations += 1;
            match r {
                Ok(r) if r == rev => {
                    seen.insert(w);
                }
                Ok(_) => {}
                Err(e) => failures.push(e),
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in rx.iter() {
        evaluations += 1;
        if let (_, Err(e)) = r {
            failures.push(e);
        }
    }
    workers.into_iter().for_each(|w| w.join().unwrap());
    assert!(failures.is_empty(), "{failures:?}");
    assert!(evaluations >= 24);
}

#[tokio::test]
async fn broken_update_is_rejected_while_the_old_revision_serves() {
    let tmp = policies_copy();
    let stage = stage_at(tmp.path());
    let before = stage.revision();
    let original = std::fs::read_to_string(tmp.path().join("tenant.rego")).unwrap();

    std::fs::write(tmp.path().join("tenant.rego"), format!("{original}\ndeny contains if {{")).unwrap();
    assert!(matches!(stage.reload_now(), Err(LoadError::Rego(_))));
    assert_eq!(stage.revision(), before);
    let mut c = read_a_p1();
    assert!(stage.on_request(&mut c).await.is_ok(), "the old revision still serves");

    // Parses, but breaks tenant isolation: its own tests catch it.
    let broken = original.replace("object.get(input.request, \"tenant\", t) == t", "true");
    assert_ne!(broken, original);
    std::fs::write(tmp.path().join("tenant.rego"), broken).unwrap();
    assert!(matches!(stage.reload_now(), Err(LoadError::TestsFailed { .. })));
    assert_eq!(stage.revision(), before);

    std::fs::write(tmp.path().join("tenant.rego"), original).unwrap();
    assert_eq!(stage.reload_now().unwrap(), ReloadOutcome::Unchanged(before));
}

#[tokio::test]
async fn renamed_entrypoint_is_rejected() {
    let tmp = policies_copy();
    let stage = stage_at(tmp.path());
    let authz = std::fs::read_to_string(tmp.path().join("authz.rego")).unwrap();
    std::fs::write(tmp.path().join("authz.rego"), authz.replace("decision := {", "verdict := {")).unwrap();
    assert!(matches!(
        stage.reload_now(),
        Err(LoadError::Rego(_) | LoadError::Entrypoint { .. } | LoadError::TestsFailed { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_change_is_picked_up_by_the_watcher() {
    let tmp = policies_copy();
    let mut config = phigate_policy::PolicyConfig::new(tmp.path());
    config.watch = true;
    let stage = build(config);
    let mut revisions = stage.subscribe_revisions();
    let mut watching = stage.watching();
    for task in stage.background_tasks() {
        tokio::spawn(task);
    }
    watching.wait_for(|w| *w).await.unwrap();
    let before = stage.revision();
    care_teams(tmp.path(), "a-p3, a-p4, a-p5");
    // The timeout bounds a broken watcher; the change notification is the synchronisation.
    tokio::time::timeout(Duration::from_secs(30), revisions.changed()).await.unwrap().unwrap();
    assert_ne!(stage.revision(), before);
    let a2 = principal("clinician_a2", "tenant-a", &["clinician"], &["user/*.rs"]);
    let mut c = get("/fhir/Patient/a-p5", a2, fhir(Interaction::Read, "Patient", Some("a-p5"), &["a-p5"]));
    assert!(stage.on_request(&mut c).await.is_ok(), "the new care team is in force");
}
