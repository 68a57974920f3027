//! `verify` passes an intact trail and catches each kind of tampering (one test each).
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a test failure

mod common;

use std::fs;
use std::num::NonZeroU32;
use std::path::Path;

use common::*;
use phigate_audit::{verify, VerifyReport, VerifyStatus};
use phigate_plugin::Stage;
use sha2::{Digest, Sha256};

/// Writes `n` forwarded requests (attempt + outcome) with small segments and frequent
/// checkpoints, so the trail spans several segments.
async fn trail(env: &Env, n: usize) {
    let mut cfg = env.config();
    cfg.segment_max_bytes = 64 << 10;
    cfg.checkpoint_every_records = NonZeroU32::new(5).unwrap();
    let stage = std::sync::Arc::new(build(cfg, env.tmp.path()));
    // Forty requests at a time: several records share each group commit, as in production.
    for chunk in (0..n).collect::<Vec<_>>().chunks(40) {
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let stage = stage.clone();
            set.spawn(async move {
                let mut ctx = read_ctx(&format!("req-{i}"));
                stage.on_request(&mut ctx).await.unwrap();
                answered(&mut ctx, 200);
                stage.on_complete(&ctx).await;
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    }
}

fn seg_lines(p: &Path) -> Vec<String> {
    fs::read_to_string(p).unwrap().lines().map(str::to_owned).collect()
}

fn write_lines(p: &Path, lines: &[String]) {
    fs::write(p, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

fn seq_of(line: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(line).unwrap()["seq"].as_u64().unwrap()
}

fn tampered(env: &Env) -> VerifyReport {
    let r = verify(&env.audit_dir, Some(&env.public_key));
    assert_eq!(r.status, VerifyStatus::Tampered, "{r}");
    assert_eq!(r.exit_code(), 1);
    r
}

#[tokio::test]
async fn intact_trail_verifies_with_summary() {
    let env = Env::new();
    trail(&env, 120).await;
    let r = verify(&env.audit_dir, Some(&env.public_key));
    assert_eq!(r.status, VerifyStatus::Intact, "{r}");
    assert_eq!(r.exit_code(), 0);
    assert!(r.segments >= 2, "{r}");
    assert_eq!(r.segments, env.segments().len());
    assert_eq!(r.records, 240);
    assert!(r.checkpoints >= r.segments as u64, "every rotation seals with a checkpoint: {r}");
    assert_eq!(r.checkpoints_logged, r.checkpoints);
    assert_eq!(r.attempts_without_outcome, 0);
    assert_eq!(r.recoveries, 0);
    assert!(r.failure.is_none());
    assert_eq!(verify(&env.audit_dir, None).status, VerifyStatus::Intact);
}

/// `verify` (and so `audit report`) on a trail a gateway is still writing: checkpoints land in
/// the segment and then in the log while it reads, which must never look like tampering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trail_being_written_verifies_while_checkpoints_keep_coming() {
    let env = Env::new();
    trail(&env, 4).await; // the trail exists before the first check
    let mut cfg = env.config();
    cfg.checkpoint_every_records = NonZeroU32::new(1).unwrap();
    let stage = std::sync::Arc::new(build(cfg, env.tmp.path()));
    let writer = {
        let stage = stage.clone();
        tokio::spawn(async move {
            for i in 0..120 {
                let mut ctx = read_ctx(&format!("live-{i}"));
                stage.on_request(&mut ctx).await.unwrap();
                answered(&mut ctx, 200);
                stage.on_complete(&ctx).await;
            }
        })
    };
    let (dir, key) = (env.audit_dir.clone(), env.public_key.clone());
    let mut checked = 0;
    while !writer.is_finished() {
        let (dir, key) = (dir.clone(), key.clone());
        let r = tokio::task::spawn_blocking(move || verify(&dir, Some(&key))).await.unwrap();
        // A read that catches a batch half-written sees an incomplete last line: a write in
        // flight, reported in the summary. Anything but intact would be a false alarm.
        assert_eq!(r.status, VerifyStatus::Intact, "{r}");
        checked += 1;
    }
    writer.await.unwrap();
    assert!(checked > 0);
    assert_eq!(verify(&env.audit_dir, Some(&env.public_key)).status, VerifyStatus::Intact);
}

/// Half a record at the end of the newest segment is a write in flight (or a crash not yet
/// restarted): intact, the bytes reported; at the end of an older segment it is a cut.
#[tokio::test]
async fn incomplete_final_line_is_in_flight_only_in_the_newest_segment() {
    let env = Env::new();
    trail(&env, 120).await;
    let segs = env.segments();
    assert!(segs.len() >= 2);
    let newest = segs.last().unwrap();
    let half = br#"{"v":1,"kind":"access","seq":9999,"ts":"2026-"#;
    let whole = fs::read(newest).unwrap();
    fs::write(newest, [whole.as_slice(), half.as_slice()].concat()).unwrap();
    let r = verify(&env.audit_dir, Some(&env.public_key));
    assert_eq!(r.status, VerifyStatus::Intact, "{r}");
    assert_eq!((r.records, r.incomplete_tail_bytes), (240, half.len() as u64));
    assert!(r.to_string().contains(&format!("incomplete final line: {} bytes", half.len())), "{r}");
    fs::write(newest, &whole).unwrap();
    assert_eq!(verify(&env.audit_dir, Some(&env.public_key)).incomplete_tail_bytes, 0);

    // The first segment cut in the middle of its last line (its sealing checkpoint).
    let first = &segs[0];
    let data = fs::read(first).unwrap();
    let cut = data.len() - 20;
    fs::write(first, &data[..cut]).unwrap();
    let f = tampered(&env).failure.unwrap();
    assert_eq!((&f.file, f.line), (first, Some(seg_lines(first).len())));
    assert!(f.reason.contains("not the newest"), "{}", f.reason);
}

#[tokio::test]
async fn modified_record_is_named_by_file_line_and_seq() {
    let env = Env::new();
    trail(&env, 20).await;
    let seg = &env.segments()[0];
    let mut lines = seg_lines(seg);
    let seq = seq_of(&lines[3]);
    lines[3] = lines[3].replace("dr-alice", "dr-mallo");
    write_lines(seg, &lines);
    let f = tampered(&env).failure.unwrap();
    assert_eq!((&f.file, f.line, f.seq), (seg, Some(4), Some(seq)));
    assert!(f.reason.contains("modified"), "{}", f.reason);
}

#[tokio::test]
async fn deleted_record_is_detected() {
    let env = Env::new();
    trail(&env, 20).await;
    let seg = &env.segments()[0];
    let mut lines = seg_lines(seg);
    lines.remove(3);
    write_lines(seg, &lines);
    let f = tampered(&env).failure.unwrap();
    assert_eq!(f.line, Some(4));
    assert!(f.reason.contains("missing"), "{}", f.reason);
}

#[tokio::test]
async fn inserted_copy_of_a_record_is_detected() {
    let env = Env::new();
    trail(&env, 20).await;
    let seg = &env.segments()[0];
    let mut lines = seg_lines(seg);
    lines.insert(4, lines[3].clone());
    write_lines(seg, &lines);
    let f = tampered(&env).failure.unwrap();
    assert_eq!(f.line, Some(5));
    assert!(f.reason.contains("out of order or duplicated"), "{}", f.reason);
}

/// A forged line with a correct self-hash, linked to its predecessor: the chain breaks at the
/// record after it.
#[tokio::test]
async fn forged_inserted_record_with_valid_hash_is_detected() {
    let env = Env::new();
    trail(&env, 20).await;
    let seg = &env.segments()[0];
    let mut lines = seg_lines(seg);
    let prev: serde_json::Value = serde_json::from_str(&lines[3]).unwrap();
    let cut = lines[3].rfind(",\"hash\":").unwrap();
    let canonical = format!("{}}}", &lines[3][..cut])
        .replace("req-", "forged-")
        .replace(
            &format!("\"prev\":\"{}\"", prev["prev"].as_str().unwrap()),
            &format!("\"prev\":\"{}\"", prev["hash"].as_str().unwrap()),
        )
        .replace(
            &format!("\"seq\":{}", prev["seq"]),
            &format!("\"seq\":{}", prev["seq"].as_u64().unwrap() + 1),
        );
    let hash = hex::encode(Sha256::digest(canonical.as_bytes()));
    let forged = format!("{},\"hash\":\"{hash}\"}}", &canonical[..canonical.len() - 1]);
    lines.insert(4, forged);
    write_lines(seg, &lines);
    let f = tampered(&env).failure.unwrap();
    assert_eq!(f.line, Some(6), "the forged line itself links; the next one cannot");
}

#[tokio::test]
async fn reordered_records_are_detected() {
    let env = Env::new();
    trail(&env, 20).await;
    let seg = &env.segments()[0];
    let mut lines = seg_lines(seg);
    lines.swap(3, 4);
    write_lines(seg, &lines);
    let f = tampered(&env).failure.unwrap();
    assert_eq!(f.line, Some(4));
}

#[tokio::test]
async fn segment_tail_cut_after_a_checkpoint_is_detected() {
    let env = Env::new();
    trail(&env, 20).await;
    let seg = env.segments().last().unwrap().clone();
    let mut lines = seg_lines(&seg);
    let last_cp = lines.iter().rposition(|l| l.contains("\"kind\":\"checkpoint\"")).unwrap();
    lines.truncate(last_cp);
    write_lines(&seg, &lines);
    let f = tampered(&env).failure.unwrap();
    assert_eq!(f.file, seg);
    assert!(f.reason.contains("truncated"), "{}", f.reason);
}

#[tokio::test]
async fn missing_middle_segment_is_detected() {
    let env = Env::new();
    trail(&env, 120).await;
    let segs = env.segments();
    assert!(segs.len() >= 3);
    fs::remove_file(&segs[1]).unwrap();
    let f = tampered(&env).failure.unwrap();
    assert_eq!(f.file, segs[1]);
    assert!(f.reason.contains("segment missing"), "{}", f.reason);
}

#[tokio::test]
async fn missing_last_segment_is_detected_through_the_checkpoint_log() {
    let env = Env::new();
    trail(&env, 120).await;
    let segs = env.segments();
    fs::remove_file(segs.last().unwrap()).unwrap();
    let f = tampered(&env).failure.unwrap();
    assert_eq!(&f.file, segs.last().unwrap());
}

#[tokio::test]
async fn checkpoint_signed_with_another_key_fails() {
    let env = Env::new();
    trail(&env, 10).await;
    // Someone restarts the gateway on the same trail with a key of their own.
    let other = env.tmp.path().join("other.pem");
    phigate_audit::generate_signing_key(&other).unwrap();
    let mut cfg = env.config();
    cfg.signing_key_path = other;
    cfg.checkpoint_every_records = NonZeroU32::new(5).unwrap();
    let stage = build(cfg, env.tmp.path());
    for i in 0..5 {
        stage.on_request(&mut read_ctx(&format!("late-{i}"))).await.unwrap();
    }
    drop(stage);
    let f = tampered(&env).failure.unwrap();
    assert!(f.reason.contains("signature"), "{}", f.reason);
    // Without a pinned key the first header's key is used: the foreign checkpoint still fails.
    assert_eq!(verify(&env.audit_dir, None).status, VerifyStatus::Tampered);
}

#[tokio::test]
async fn altered_checkpoint_log_entry_is_detected() {
    let env = Env::new();
    trail(&env, 10).await;
    let log = env.audit_dir.join(phigate_audit::CHECKPOINT_LOG);
    let text = fs::read_to_string(&log).unwrap();
    fs::write(&log, text.replacen("\"covers_seq\":", "\"covers_seq\":1", 1)).unwrap();
    let f = tampered(&env).failure.unwrap();
    assert_eq!(f.file, log);
}

#[tokio::test]
async fn attempt_without_outcome_is_reported_not_tampering() {
    let env = Env::new();
    let stage = env.stage();
    stage.on_request(&mut read_ctx("crashed-before-outcome")).await.unwrap();
    drop(stage);
    let r = verify(&env.audit_dir, Some(&env.public_key));
    assert_eq!(r.status, VerifyStatus::Intact, "{r}");
    assert_eq!(r.attempts_without_outcome, 1);
}

#[test]
fn empty_directory_or_bad_public_key_is_unreadable_exit_2() {
    let env = Env::new();
    fs::create_dir_all(&env.audit_dir).unwrap();
    let r = verify(&env.audit_dir, None);
    assert_eq!((r.status, r.exit_code()), (VerifyStatus::Unreadable, 2));
    let r = verify(&env.audit_dir, Some(&env.tmp.path().join("nope.pem")));
    assert_eq!(r.exit_code(), 2);
}
