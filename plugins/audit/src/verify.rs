//! `phigate audit verify DIR [--public-key FILE]`: re-checks every chain, segment link and
//! checkpoint signature, and cross-checks the checkpoint log.
//!
//! What each tampering looks like here: a modified line fails its own hash; a deleted, inserted
//! or reordered line breaks `seq` continuity or the `prev` link; a missing segment leaves a gap
//! in the numbering or a header whose `prev` does not match; a segment tail cut after a
//! checkpoint leaves that checkpoint in the checkpoint log with nothing matching it; a checkpoint
//! signed with another key fails the signature check.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use serde::Deserialize;

use crate::chain::{parse_hash, parse_line, Entry, Hash, LineFault, GENESIS};
use crate::checkpoint::{decode_key, Checkpoint, CHECKPOINT_LOG};
use crate::keys::load_public_key;
use crate::scan::{skips, split_lines, RawLine};
use crate::segment::{list_segments, segment_name};

/// The verdict, with its process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyStatus {
    /// Every check passed (exit 0).
    Intact,
    /// Some check failed (exit 1).
    Tampered,
    /// A file could not be read, or there is nothing to verify (exit 2).
    Unreadable,
}

impl VerifyStatus {
    /// The exit code of `phigate audit verify`: 0 intact, 1 tampered, 2 unreadable.
    pub fn exit_code(self) -> i32 {
        match self {
            VerifyStatus::Intact => 0,
            VerifyStatus::Tampered => 1,
            VerifyStatus::Unreadable => 2,
        }
    }
}

/// The first broken place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The file.
    pub file: PathBuf,
    /// The 1-based line, when the failure is at a line.
    pub line: Option<usize>,
    /// The seq of the broken record, when known.
    pub seq: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The verdict.
    pub status: VerifyStatus,
    /// Segments checked.
    pub segments: usize,
    /// Access records checked (all phases).
    pub records: u64,
    /// Checkpoints found and verified in the segments.
    pub checkpoints: u64,
    /// Checkpoint-log entries verified against the segments.
    pub checkpoints_logged: u64,
    /// `attempt` records with no later `outcome`/`denied` for the same request (a crash between
    /// the two; not tampering).
    pub attempts_without_outcome: u64,
    /// `recovery` records (torn writes closed after a crash or a write failure).
    pub recoveries: u64,
    /// The first failure, when not intact.
    pub failure: Option<Failure>,
}

impl VerifyReport {
    /// The process exit code (see [`VerifyStatus::exit_code`]).
    pub fn exit_code(&self) -> i32 {
        self.status.exit_code()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match self.status {
            VerifyStatus::Intact => "intact",
            VerifyStatus::Tampered => "TAMPERED",
            VerifyStatus::Unreadable => "UNREADABLE",
        };
        writeln!(f, "audit trail: {verdict}")?;
        writeln!(
            f,
            "segments: {}, records: {}, checkpoints: {} ({} in checkpoint log), attempts without outcome: {}, recoveries: {}",
            self.segments, self.records, self.checkpoints, self.checkpoints_logged,
            self.attempts_without_outcome, self.recoveries
        )?;
        if let Some(x) = &self.failure {
            write!(f, "first failure: {}", x.file.display())?;
            if let Some(l) = x.line {
                write!(f, " line {l}")?;
            }
            if let Some(s) = x.seq {
                write!(f, " seq {s}")?;
            }
            writeln!(f, ": {}", x.reason)?;
        }
        Ok(())
    }
}

type Fail = (VerifyStatus, Failure);

fn fail(
    status: VerifyStatus,
    file: &Path,
    line: Option<usize>,
    seq: Option<u64>,
    reason: impl Into<String>,
) -> Fail {
    let reason = reason.into();
    (
        status,
        Failure {
            file: file.to_owned(),
            line,
            seq,
            reason,
        },
    )
}

/// Verifies the audit trail in `dir`. With `public_key`, checkpoint signatures must verify under
/// that key (keep a copy off-host); without it, under the key named in the first segment header,
/// which proves consistency but not authorship.
pub fn verify(dir: &Path, public_key: Option<&Path>) -> VerifyReport {
    let mut report = VerifyReport {
        status: VerifyStatus::Intact,
        segments: 0,
        records: 0,
        checkpoints: 0,
        checkpoints_logged: 0,
        attempts_without_outcome: 0,
        recoveries: 0,
        failure: None,
    };
    if let Err((status, failure)) = run(dir, public_key, &mut report) {
        report.status = status;
        report.failure = Some(failure);
    }
    report
}

struct Walk {
    key: Option<VerifyingKey>,
    last: Option<(u64, Hash)>,
    prev_segment: Option<String>,
    open_attempts: HashSet<String>,
    checkpoints: HashSet<(String, u64, String)>,
}

fn run(dir: &Path, public_key: Option<&Path>, report: &mut VerifyReport) -> Result<(), Fail> {
    use VerifyStatus::Unreadable;
    let key = match public_key {
        Some(p) => {
            Some(load_public_key(p).map_err(|e| fail(Unreadable, p, None, None, e.to_string()))?)
        }
        None => None,
    };
    let segs = list_segments(dir).map_err(|e| fail(Unreadable, dir, None, None, e.to_string()))?;
    if segs.is_empty() {
        return Err(fail(Unreadable, dir, None, None, "no audit segments"));
    }
    let mut walk = Walk {
        key,
        last: None,
        prev_segment: None,
        open_attempts: HashSet::new(),
        checkpoints: HashSet::new(),
    };
    for (expected, (index, path)) in (1u64..).zip(&segs) {
        if *index != expected {
            let missing = dir.join(segment_name(expected));
            return Err(fail(
                VerifyStatus::Tampered,
                &missing,
                None,
                None,
                "segment missing",
            ));
        }
        let data = fs::read(path).map_err(|e| fail(Unreadable, path, None, None, e.to_string()))?;
        check_segment(&mut walk, report, path, *index, &data)?;
        report.segments += 1;
    }
    report.attempts_without_outcome = walk.open_attempts.len() as u64;
    check_log(&walk, report, dir)
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: Option<u64>,
}

/// The `seq` of a line whose hash fails, for the report (best effort).
fn seq_of(bytes: &[u8]) -> Option<u64> {
    serde_json::from_slice::<SeqOnly>(bytes)
        .ok()
        .and_then(|s| s.seq)
}

fn check_segment(
    walk: &mut Walk,
    report: &mut VerifyReport,
    path: &Path,
    index: u64,
    data: &[u8],
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
        let t = |seq: Option<u64>, reason: &str| {
            fail(VerifyStatus::Tampered, path, Some(l.line_no), seq, reason)
        };
        if let Some(s) = skips.get(&l.offset) {
            if !s.intact {
                return Err(t(
                    None,
                    "bytes skipped by a recovery record do not match its skipped_sha256",
                ));
            }
            skip_until = s.to;
            continue;
        }
        if !l.complete {
            return Err(t(
                None,
                "incomplete final line (a crash not yet recovered by a restart, or a cut)",
            ));
        }
        let (hash, e) = parse_line(l.bytes).map_err(|fault| match fault {
            LineFault::HashMismatch => t(
                seq_of(l.bytes),
                "record modified: hash does not match its content",
            ),
            LineFault::NoHash => t(
                seq_of(l.bytes),
                "malformed line: not a chained audit record",
            ),
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
    if first {
        return Err(fail(
            VerifyStatus::Tampered,
            path,
            None,
            None,
            "segment has no header",
        ));
    }
    walk.prev_segment = Some(name);
    Ok(())
}

fn check_header(walk: &mut Walk, e: &Entry, name: &str, index: u64) -> Result<(), &'static str> {
    if e.kind != "segment" || e.segment.as_deref() != Some(name) || e.index != Some(index) {
        return Err("first line is not this segment's header");
    }
    if e.prev_segment != walk.prev_segment {
        return Err("segment header does not name the previous segment");
    }
    if walk.key.is_none() {
        walk.key = Some(
            e.key
                .as_deref()
                .and_then(decode_key)
                .ok_or("segment header has no valid key")?,
        );
    }
    Ok(())
}

fn check_link(walk: &Walk, e: &Entry) -> Result<(), &'static str> {
    let (want_seq, want_prev) = match walk.last {
        Some((seq, hash)) => (seq + 1, hash),
        None => (0, GENESIS),
    };
    if e.seq < want_seq {
        return Err("record out of order or duplicated (seq goes back)");
    }
    if e.seq > want_seq {
        return Err("records missing before this one (seq gap)");
    }
    if parse_hash(&e.prev) != Some(want_prev) {
        return Err("chain broken: prev is not the previous record's hash (record inserted, deleted or reordered)");
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
            let id = e
                .request_id
                .clone()
                .ok_or("access record without request_id")?;
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
            walk.checkpoints
                .insert((cp.segment, cp.covers_seq, cp.covers_hash));
        }
        "recovery" => {
            // An empty skip range is impossible (the writer only recovers torn bytes); a range
            // that does not end here was not registered by `skips`.
            if e.skip_to != Some(l.offset) || e.skip_from >= e.skip_to {
                return Err("recovery record does not declare the bytes before it");
            }
            report.recoveries += 1;
        }
        _ => return Err("unknown record kind"),
    }
    Ok(())
}

fn check_log(walk: &Walk, report: &mut VerifyReport, dir: &Path) -> Result<(), Fail> {
    let path = dir.join(CHECKPOINT_LOG);
    let data = match fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && report.checkpoints == 0 => {
            return Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail(
                VerifyStatus::Tampered,
                &path,
                None,
                None,
                format!("checkpoint log missing: {e}"),
            ))
        }
        Err(e) => {
            return Err(fail(
                VerifyStatus::Unreadable,
                &path,
                None,
                None,
                e.to_string(),
            ))
        }
    };
    for l in split_lines(&data) {
        // A crash between the segment's sync and the log's write may tear the log's last line;
        // the checkpoint itself is in the segment.
        if !l.complete {
            break;
        }
        let t =
            |seq, reason: &str| fail(VerifyStatus::Tampered, &path, Some(l.line_no), seq, reason);
        let cp: Checkpoint = serde_json::from_slice(l.bytes)
            .map_err(|_| t(None, "malformed checkpoint log line"))?;
        if !walk.key.as_ref().is_some_and(|k| cp.verifies(k)) {
            return Err(t(
                Some(cp.covers_seq),
                "checkpoint log signature invalid (another key, or altered)",
            ));
        }
        if !walk
            .checkpoints
            .contains(&(cp.segment.clone(), cp.covers_seq, cp.covers_hash.clone()))
        {
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
