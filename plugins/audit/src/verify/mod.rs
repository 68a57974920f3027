//! `phigate audit verify DIR [--public-key FILE]`: re-checks every chain, segment link and
//! checkpoint signature, and cross-checks the checkpoint log.
//!
//! What each tampering looks like here: a modified line fails its own hash; a deleted, inserted
//! or reordered line breaks `seq` continuity or the `prev` link; a missing segment leaves a gap
//! in the numbering or a header whose `prev` does not match; a segment tail cut after a
//! checkpoint leaves that checkpoint in the checkpoint log with nothing matching it; a checkpoint
//! signed with another key fails the signature check.

mod checks;
mod stream;

pub use stream::verify_stream;

use checks::{check_log, check_segment};

use std::collections::HashSet;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;

use crate::chain::Hash;
use crate::keys::load_public_key;
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
    /// Operator records (actions such as lifting an exfiltration block, and changes to what the
    /// gateway enforces: policy revisions, listener certificates), chained like the rest.
    pub operator_records: u64,
    /// Checkpoints found and verified in the segments.
    pub checkpoints: u64,
    /// Checkpoint-log entries verified against the segments.
    pub checkpoints_logged: u64,
    /// `attempt` records with no later `outcome`/`denied` for the same request (a crash between
    /// the two; not tampering).
    pub attempts_without_outcome: u64,
    /// `recovery` records (torn writes closed after a crash or a write failure).
    pub recoveries: u64,
    /// Bytes of an incomplete last line at the end of the newest segment: a write in flight on a
    /// trail a gateway is writing, or a crash its next start closes with a `recovery` record.
    /// Not a record and not tampering (0 when the trail ends with a complete line).
    pub incomplete_tail_bytes: u64,
    /// For a copy ([`verify_stream`]): lines received again (delivery is at least once) and
    /// skipped, each proven identical to its first copy by the chain.
    pub resent_lines: u64,
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
            "segments: {}, records: {}, operator records: {}, checkpoints: {} ({} in checkpoint log), attempts without outcome: {}, recoveries: {}",
            self.segments, self.records, self.operator_records, self.checkpoints, self.checkpoints_logged,
            self.attempts_without_outcome, self.recoveries
        )?;
        if self.resent_lines > 0 {
            writeln!(f, "lines sent again (identical, skipped): {}", self.resent_lines)?;
        }
        if self.incomplete_tail_bytes > 0 {
            writeln!(
                f,
                "incomplete final line: {} bytes at the end of the newest segment, not a record yet (a write in flight, or a crash the next start closes with a recovery record)",
                self.incomplete_tail_bytes
            )?;
        }
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
    (status, Failure { file: file.to_owned(), line, seq, reason })
}

/// Verifies the audit trail in `dir`. With `public_key`, checkpoint signatures must verify under
/// that key (keep a copy off-host); without it, under the key named in the first segment header,
/// which proves consistency but not authorship.
pub fn verify(dir: &Path, public_key: Option<&Path>) -> VerifyReport {
    VerifyReport::of(|report| run(dir, public_key, report))
}

impl VerifyReport {
    /// The report of a check: intact with its counts, else the first failure.
    fn of(check: impl FnOnce(&mut VerifyReport) -> Result<(), Fail>) -> VerifyReport {
        let mut report = VerifyReport {
            status: VerifyStatus::Intact,
            segments: 0,
            records: 0,
            operator_records: 0,
            checkpoints: 0,
            checkpoints_logged: 0,
            attempts_without_outcome: 0,
            recoveries: 0,
            incomplete_tail_bytes: 0,
            resent_lines: 0,
            failure: None,
        };
        if let Err((status, failure)) = check(&mut report) {
            report.status = status;
            report.failure = Some(failure);
        }
        report
    }
}

struct Walk {
    /// A copy starting after the trail's first segment: its first header is taken as it comes
    /// (segment, previous segment, seq and `prev`); everything after must link to it.
    anchored: bool,
    key: Option<VerifyingKey>,
    last: Option<(u64, Hash)>,
    prev_segment: Option<String>,
    open_attempts: HashSet<String>,
    checkpoints: HashSet<(String, u64, String)>,
}

fn run(dir: &Path, public_key: Option<&Path>, report: &mut VerifyReport) -> Result<(), Fail> {
    use VerifyStatus::Unreadable;
    let key = match public_key {
        Some(p) => Some(load_public_key(p).map_err(|e| fail(Unreadable, p, None, None, e.to_string()))?),
        None => None,
    };
    // The log before the segments (see `check_log`): a trail still being written verifies too.
    let log = fs::read(dir.join(crate::checkpoint::CHECKPOINT_LOG));
    let segs = list_segments(dir).map_err(|e| fail(Unreadable, dir, None, None, e.to_string()))?;
    if segs.is_empty() {
        return Err(fail(Unreadable, dir, None, None, "no audit segments"));
    }
    let mut walk = Walk {
        anchored: false,
        key,
        last: None,
        prev_segment: None,
        open_attempts: HashSet::new(),
        checkpoints: HashSet::new(),
    };
    let newest = segs.len();
    for (expected, (index, path)) in (1u64..).zip(&segs) {
        if *index != expected {
            let missing = dir.join(segment_name(expected));
            return Err(fail(VerifyStatus::Tampered, &missing, None, None, "segment missing"));
        }
        let data = fs::read(path).map_err(|e| fail(Unreadable, path, None, None, e.to_string()))?;
        check_segment(&mut walk, report, path, *index, &data, expected == newest as u64)?;
        report.segments += 1;
    }
    report.attempts_without_outcome = walk.open_attempts.len() as u64;
    check_log(&walk, report, dir, log)
}
