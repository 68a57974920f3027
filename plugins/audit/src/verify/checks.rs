//! The checks `verify` runs on each segment line and on the checkpoint log.

use std::path::Path;

use serde::Deserialize;

use super::{fail, Fail, VerifyReport, VerifyStatus, Walk};
use crate::chain::{parse_hash, parse_line, Entry, LineFault, GENESIS};
use crate::checkpoint::{decode_key, Checkpoint, CHECKPOINT_LOG};
use crate::scan::{skips, split_lines, RawLine};
use crate::segment::segment_name;

#[derive(Deserialize)]
struct SeqOnly {
    seq: Option<u64>,
}

/// The `seq` of a line whose hash fails, for the report (best effort).
fn seq_of(bytes: &[u8]) -> Option<u64> {
    serde_json::from_slice::<SeqOnly>(bytes).ok().and_then(|s| s.seq)
}

pub(super) fn check_segment(
    walk: &mut Walk,
    report: &mut VerifyReport,
    path: &Path,
    index: u64,
    data: &[u8],
    newest: bool,
) -> Result<(), Fail> {
    let name = segment_name(index);
    let lines = split_lines(data);
    let skips = skips(data, &lines);
    let mut skip_until = 0u64;
    let mut first = true;
    for l in &lines {
        if l.offset < skip_until {
            continue;
        }
        let t =
            |seq: Option<u64>, reason: &str| fail(VerifyStatus::Tampered, path, Some(l.line_no), seq, reason);
        if let Some(s) = skips.get(&l.offset) {
            if !s.intact {
                return Err(t(None, "bytes skipped by a recovery record do not match its skipped_sha256"));
            }
            skip_until = s.to;
            continue;
        }
        if !l.complete {
            // Only the last line can be incomplete. In the newest segment it is a write in flight
            // (or a crash a restart closes with a recovery record): not a record yet, and cutting
            // it proves no more than cutting whole records after the last checkpoint, which the
            // checkpoint log bounds. Anywhere else the writer had moved on: a cut.
            if newest {
                report.incomplete_tail_bytes = l.bytes.len() as u64;
                break;
            }
            return Err(t(None, "incomplete final line in a segment that is not the newest (a cut)"));
        }
        let (hash, e) = parse_line(l.bytes).map_err(|fault| match fault {
            LineFault::HashMismatch => t(seq_of(l.bytes), "record modified: hash does not match its content"),
            LineFault::NoHash => t(seq_of(l.bytes), "malformed line: not a chained audit record"),
        })?;
        if e.v != crate::chain::FORMAT_VERSION {
            return Err(t(Some(e.seq), "unknown format version"));
        }
        if first {
            check_header(walk, &e, &name, index).map_err(|r| t(Some(e.seq), r))?;
            first = false;
        } else if e.kind == "segment" {
            return Err(t(Some(e.seq), "segment header in the middle of a segment"));
        }
        check_link(walk, &e).map_err(|r| t(Some(e.seq), r))?;
        check_entry(walk, report, &e, &name, l).map_err(|r| t(Some(e.seq), r))?;
        walk.last = Some((e.seq, hash));
    }
    // A newest segment whose header is not yet (completely) written is being created.
    if first && !newest {
        return Err(fail(VerifyStatus::Tampered, path, None, None, "segment has no header"));
    }
    walk.prev_segment = Some(name);
    Ok(())
}

fn check_header(walk: &mut Walk, e: &Entry, name: &str, index: u64) -> Result<(), &'static str> {
    if e.kind != "segment" || e.segment.as_deref() != Some(name) || e.index != Some(index) {
        return Err("first line is not this segment's header");
    }
    if walk.anchored && walk.last.is_none() {
        // A copy's first segment: the segments before it are not in the copy.
        walk.prev_segment.clone_from(&e.prev_segment);
    }
    if e.prev_segment != walk.prev_segment {
        return Err("segment header does not name the previous segment");
    }
    if walk.key.is_none() {
        walk.key = Some(e.key.as_deref().and_then(decode_key).ok_or("segment header has no valid key")?);
    }
    Ok(())
}

fn check_link(walk: &Walk, e: &Entry) -> Result<(), &'static str> {
    let (want_seq, want_prev) = match walk.last {
        Some((seq, hash)) => (seq + 1, hash),
        // A copy's first line links to records not in the copy.
        None if walk.anchored => return Ok(()),
        None => (0, GENESIS),
    };
    if e.seq < want_seq {
        return Err("record out of order or duplicated (seq goes back)");
    }
    if e.seq > want_seq {
        return Err("records missing before this one (seq gap)");
    }
    if parse_hash(&e.prev) != Some(want_prev) {
        return Err(
            "chain broken: prev is not the previous record's hash (record inserted, deleted or reordered)",
        );
    }
    Ok(())
}

fn check_entry(
    walk: &mut Walk,
    report: &mut VerifyReport,
    e: &Entry,
    name: &str,
    l: &RawLine<'_>,
) -> Result<(), &'static str> {
    match e.kind.as_str() {
        "segment" => {}
        "access" => {
            report.records += 1;
            let id = e.request_id.clone().ok_or("access record without request_id")?;
            match e.phase.as_deref() {
                Some("attempt") => {
                    walk.open_attempts.insert(id);
                }
                Some("outcome" | "denied") => {
                    walk.open_attempts.remove(&id);
                }
                _ => return Err("access record with unknown phase"),
            }
        }
        "operator" => report.operator_records += 1,
        "checkpoint" => {
            let cp = Checkpoint {
                segment: e.segment.clone().unwrap_or_default(),
                covers_seq: e.covers_seq.ok_or("checkpoint without covers_seq")?,
                covers_hash: e.covers_hash.clone().unwrap_or_default(),
                ts: e.ts.clone().unwrap_or_default(),
                key: e.key.clone().unwrap_or_default(),
                sig: e.sig.clone().unwrap_or_default(),
            };
            if cp.segment != name || cp.covers_seq + 1 != e.seq || cp.covers_hash != e.prev {
                return Err("checkpoint does not cover the record before it");
            }
            if !walk.key.as_ref().is_some_and(|k| cp.verifies(k)) {
                return Err("checkpoint signature invalid (another key, or altered)");
            }
            report.checkpoints += 1;
            walk.checkpoints.insert((cp.segment, cp.covers_seq, cp.covers_hash));
        }
        "recovery" => {
            // An empty skip range is impossible (the writer only recovers torn bytes); a range
            // that does not end here was not registered by `skips`.
            if e.skip_to != Some(l.offset)
                || e.skipped_sha256.is_none()
                || e.skip_from.is_none_or(|f| Some(f) >= e.skip_to)
            {
                return Err("recovery record does not declare the bytes before it");
            }
            report.recoveries += 1;
        }
        _ => return Err("unknown record kind"),
    }
    Ok(())
}

/// Checks the checkpoint log, as it was read before the segments (`log`): the writer syncs a
/// checkpoint into its segment before it appends it to the log, so every entry of a log read
/// first is in the segments read after, even while a gateway keeps writing.
pub(super) fn check_log(
    walk: &Walk,
    report: &mut VerifyReport,
    dir: &Path,
    log: std::io::Result<Vec<u8>>,
) -> Result<(), Fail> {
    let path = dir.join(CHECKPOINT_LOG);
    let data = match log {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && report.checkpoints == 0 => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail(
                VerifyStatus::Tampered,
                &path,
                None,
                None,
                format!("checkpoint log missing: {e}"),
            ))
        }
        Err(e) => return Err(fail(VerifyStatus::Unreadable, &path, None, None, e.to_string())),
    };
    for l in split_lines(&data) {
        // A crash between the segment's sync and the log's write may tear the log's last line;
        // the checkpoint itself is in the segment.
        if !l.complete {
            break;
        }
        let t = |seq, reason: &str| fail(VerifyStatus::Tampered, &path, Some(l.line_no), seq, reason);
        let cp: Checkpoint =
            serde_json::from_slice(l.bytes).map_err(|_| t(None, "malformed checkpoint log line"))?;
        if !walk.key.as_ref().is_some_and(|k| cp.verifies(k)) {
            return Err(t(Some(cp.covers_seq), "checkpoint log signature invalid (another key, or altered)"));
        }
        if !walk.checkpoints.contains(&(cp.segment.clone(), cp.covers_seq, cp.covers_hash.clone())) {
            let seg = dir.join(&cp.segment);
            return Err(fail(
                VerifyStatus::Tampered,
                &seg,
                None,
                Some(cp.covers_seq),
                "a logged checkpoint is not in the segment: segment truncated after that checkpoint, or missing",
            ));
        }
        report.checkpoints_logged += 1;
    }
    Ok(())
}
