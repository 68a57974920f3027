//! `phigate audit verify FILE`: a copy of the segment stream as a collector stored it. The
//! concatenated segments verify; lines received twice (at-least-once delivery) are skipped once
//! the chain proves them identical; a copy may begin at a later segment; a changed line, a
//! changed repeat, a segment missing from the copy and a copy without a header at its start are
//! found. (`tests/forward.rs` proves the forwarder delivers exactly the segment files' bytes.)
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod common;

use common::*;
use phigate_audit::{verify_stream, VerifyReport, VerifyStatus};
use phigate_plugin::{Flow, Stage};

/// A trail over several segments (and its public key); the segments' bytes, in order.
async fn rotated_trail(env: &Env) -> Vec<Vec<u8>> {
    let mut cfg = env.config();
    cfg.segment_max_bytes = 64 << 10;
    let stage = build(cfg, env.tmp.path());
    for i in 0..150 {
        let mut ctx = read_ctx(&format!("copy-{i}"));
        assert!(matches!(stage.on_request(&mut ctx).await, Ok(Flow::Continue)));
        answered(&mut ctx, 200);
        stage.on_complete(&ctx).await;
    }
    drop(stage);
    let segs: Vec<Vec<u8>> = env.segments().iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(segs.len() >= 3, "{} segments", segs.len());
    segs
}

fn check(env: &Env, copy: &[u8]) -> VerifyReport {
    let path = env.tmp.path().join("copy.ndjson");
    std::fs::write(&path, copy).unwrap();
    verify_stream(&path, Some(&env.public_key))
}

/// Byte offsets where each line starts.
fn line_starts(bytes: &[u8]) -> Vec<usize> {
    std::iter::once(0)
        .chain(bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i + 1))
        .collect()
}

#[tokio::test]
async fn a_copy_verifies_like_the_files_and_lines_received_twice_are_skipped() {
    let env = Env::new();
    let segs = rotated_trail(&env).await;
    let whole = segs.concat();
    let report = check(&env, &whole);
    assert_eq!(report.status, VerifyStatus::Intact, "{report}");
    assert_eq!(report.segments, segs.len());
    assert_eq!(report.records, 300);
    assert!(report.checkpoints >= segs.len() as u64);

    // A restart that sent again 40 lines, across a segment boundary: skipped, counted.
    let starts = line_starts(&whole);
    let boundary = segs[0].len();
    let b = starts.iter().position(|s| *s == boundary).unwrap();
    let (from, to) = (starts[b - 15], starts[b + 25]);
    let again = [&whole[..to], &whole[from..]].concat();
    let report = check(&env, &again);
    assert_eq!(report.status, VerifyStatus::Intact, "{report}");
    assert_eq!(report.resent_lines, 40);
    assert_eq!(report.records, 300);

    // A copy begun at a later segment (forwarding configured later).
    let later = segs[1..].concat();
    let report = check(&env, &later);
    assert_eq!(report.status, VerifyStatus::Intact, "{report}");
    assert_eq!(report.segments, segs.len() - 1);
}

#[tokio::test]
async fn changes_to_a_copy_are_found() {
    let env = Env::new();
    let segs = rotated_trail(&env).await;
    let whole = segs.concat();
    let starts = line_starts(&whole);
    let text = String::from_utf8(whole.clone()).unwrap();

    // A record changed.
    let changed = text.replacen("copy-7\"", "copy-8\"", 1);
    assert_ne!(changed, text);
    let report = check(&env, changed.as_bytes());
    assert_eq!(report.status, VerifyStatus::Tampered, "{report}");

    // A line received twice, changed the second time (in the middle of the repeat).
    let (from, to) = (starts[10], starts[20]);
    let line = String::from_utf8(whole[starts[15]..starts[16]].to_vec()).unwrap();
    let forged = line.replace("\"seq\":", "\"seq\": ");
    assert_ne!(forged, line);
    let copy = [&whole[..to], &whole[from..starts[15]], forged.as_bytes(), &whole[starts[16]..]].concat();
    let report = check(&env, &copy);
    assert_eq!(report.status, VerifyStatus::Tampered, "{report}");
    // The same repeat unchanged is fine.
    let copy = [&whole[..to], &whole[from..]].concat();
    assert_eq!(check(&env, &copy).status, VerifyStatus::Intact);

    // A segment missing from the copy.
    let gap = [&segs[0][..], &segs[2][..]].concat();
    let report = check(&env, &gap);
    assert_eq!(report.status, VerifyStatus::Tampered, "{report}");
    assert!(report.failure.unwrap().reason.contains("seg-000000000002.jsonl is missing"));

    // Lines removed inside a segment.
    let cut = [&whole[..starts[30]], &whole[starts[31]..]].concat();
    assert_eq!(check(&env, &cut).status, VerifyStatus::Tampered);

    // A copy that does not begin with a segment header cannot be checked.
    let report = check(&env, &whole[starts[1]..]);
    assert_eq!(report.status, VerifyStatus::Unreadable, "{report}");
}
