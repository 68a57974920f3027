//! `phigate audit verify FILE`: a copy of the segment stream, as `forward` delivered it to a
//! collector and the collector stored it (the POST bodies concatenated in the order received).
//!
//! The copy is cut back into its segments at their headers, and each segment is checked exactly
//! as a file of the trail is (hash chain, segment links, checkpoint signatures, recovery
//! records). Delivery is at least once, so a stretch of lines may come twice: a line whose `seq`
//! is not after the last one kept starts a repeat, whose lines must chain to each other and
//! rejoin the kept chain with the same hash at the same `seq` (so, by the chain, every repeated
//! line is identical to its first copy); they are skipped and counted. A copy may begin at any
//! segment (the gateway started forwarding later): its first header is taken as it comes, and
//! everything after must link to it. What a copy cannot prove: that nothing was cut from its end
//! (the checkpoint log is not in it; the copy may just be behind).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::checks::check_segment;
use super::{fail, Fail, VerifyReport, VerifyStatus, Walk};
use crate::chain::{parse_hash, parse_line, Hash};
use crate::keys::load_public_key;
use crate::segment::segment_name;

/// Verifies a copy of the segment stream in the file at `path`. With `public_key`, checkpoint
/// signatures must verify under that key; without it, under the key of the copy's first header.
pub fn verify_stream(path: &Path, public_key: Option<&Path>) -> VerifyReport {
    VerifyReport::of(|report| run(path, public_key, report))
}

/// The segment being rebuilt from the copy.
struct Rebuilt {
    index: u64,
    bytes: Vec<u8>,
}

fn run(path: &Path, public_key: Option<&Path>, report: &mut VerifyReport) -> Result<(), Fail> {
    use VerifyStatus::{Tampered, Unreadable};
    let key = match public_key {
        Some(p) => Some(load_public_key(p).map_err(|e| fail(Unreadable, p, None, None, e.to_string()))?),
        None => None,
    };
    let file = File::open(path).map_err(|e| fail(Unreadable, path, None, None, e.to_string()))?;
    let mut reader = BufReader::new(file);
    let mut walk = Walk {
        anchored: false,
        key,
        last: None,
        prev_segment: None,
        open_attempts: Default::default(),
        checkpoints: Default::default(),
    };
    // The last line kept (seq, hash), and the last line of a repeat in progress.
    let mut kept: Option<(u64, Hash)> = None;
    let mut repeat: Option<(u64, Hash)> = None;
    let mut seg: Option<Rebuilt> = None;
    let mut line = Vec::new();
    let mut line_no = 0usize;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| fail(Unreadable, path, None, None, e.to_string()))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let at = |seq, reason: &str| fail(Tampered, path, Some(line_no), seq, reason);
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        let parsed = parse_line(body).ok();
        if let (Some((hash, e)), Some((kept_seq, kept_hash))) = (&parsed, kept) {
            if repeat.is_some() || e.seq <= kept_seq {
                if let Some((seq, prev)) = repeat {
                    if e.seq != seq + 1 || parse_hash(&e.prev) != Some(prev) {
                        return Err(at(
                            Some(e.seq),
                            "a line sent again does not follow the one sent again before it",
                        ));
                    }
                }
                match e.seq.cmp(&kept_seq) {
                    std::cmp::Ordering::Less => repeat = Some((e.seq, *hash)),
                    std::cmp::Ordering::Equal if *hash == kept_hash => repeat = None,
                    _ => return Err(at(Some(e.seq), "a line sent again differs from its first copy")),
                }
                report.resent_lines += 1;
                continue;
            }
        } else if repeat.is_some() {
            // Torn bytes sent again with the lines around them.
            report.resent_lines += 1;
            continue;
        }
        match &parsed {
            Some((_, e)) if e.kind == "segment" => {
                let index = e.index.ok_or_else(|| at(Some(e.seq), "segment header without index"))?;
                match seg.take() {
                    Some(done) => {
                        check(&mut walk, report, path, &done, false)?;
                        if index != done.index + 1 {
                            let missing = segment_name(done.index + 1);
                            return Err(at(Some(e.seq), &format!("{missing} is missing from the copy")));
                        }
                    }
                    None => walk.anchored = index > 1,
                }
                seg = Some(Rebuilt { index, bytes: Vec::new() });
            }
            _ if seg.is_none() => {
                return Err(fail(
                    Unreadable,
                    path,
                    Some(line_no),
                    None,
                    "the copy does not begin with a segment header",
                ));
            }
            _ => {}
        }
        if let Some(s) = seg.as_mut() {
            s.bytes.extend_from_slice(&line);
        }
        if let Some((hash, e)) = parsed {
            kept = Some((e.seq, hash));
        }
    }
    match seg {
        Some(last) => check(&mut walk, report, path, &last, true)?,
        None => return Err(fail(Unreadable, path, None, None, "no audit lines in the copy")),
    }
    report.attempts_without_outcome = walk.open_attempts.len() as u64;
    Ok(())
}

/// Checks one rebuilt segment as a file of the trail; failures name the copy and the segment.
fn check(
    walk: &mut Walk,
    report: &mut VerifyReport,
    path: &Path,
    seg: &Rebuilt,
    newest: bool,
) -> Result<(), Fail> {
    let name = PathBuf::from(format!("{}: {}", path.display(), segment_name(seg.index)));
    check_segment(walk, report, &name, seg.index, &seg.bytes, newest)?;
    report.segments += 1;
    Ok(())
}
