//! Splitting a segment into lines and finding the byte ranges `recovery` records declare as
//! skipped (torn or unacknowledged writes). Shared by the writer's start-up recovery and `verify`.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::chain::{parse_line, Entry, Hash};

/// One line of a segment.
pub(crate) struct RawLine<'a> {
    /// Byte offset of the line's first byte.
    pub(crate) offset: u64,
    /// 1-based line number.
    pub(crate) line_no: usize,
    /// The bytes without the `\n`.
    pub(crate) bytes: &'a [u8],
    /// Whether the line ends with `\n` (only the last line of a file may not).
    pub(crate) complete: bool,
}

/// Splits `data` into lines.
pub(crate) fn split_lines(data: &[u8]) -> Vec<RawLine<'_>> {
    let mut out = Vec::new();
    let mut start = 0usize;
    while start < data.len() {
        let (end, complete) = match data[start..].iter().position(|&b| b == b'\n') {
            Some(i) => (start + i, true),
            None => (data.len(), false),
        };
        out.push(RawLine {
            offset: start as u64,
            line_no: out.len() + 1,
            bytes: &data[start..end],
            complete,
        });
        start = end + 1;
    }
    out
}

/// A byte range a `recovery` line declares skipped.
#[derive(Debug, Clone)]
pub(crate) struct Skip {
    /// End of the range (exclusive): the recovery line's own offset.
    pub(crate) to: u64,
    /// Whether the range's bytes hash to the declared `skipped_sha256`.
    pub(crate) intact: bool,
}

/// The skip ranges declared by self-consistent `recovery` lines, keyed by their start offset.
pub(crate) fn skips(data: &[u8], lines: &[RawLine<'_>]) -> HashMap<u64, Skip> {
    let mut out = HashMap::new();
    for l in lines.iter().filter(|l| l.complete) {
        let Ok((_, e)) = parse_line(l.bytes) else {
            continue;
        };
        let (Some(from), Some(to), Some(sha)) = (e.skip_from, e.skip_to, e.skipped_sha256.as_deref()) else {
            continue;
        };
        if e.kind != "recovery" || from > to || to != l.offset {
            continue;
        }
        let range = usize::try_from(from).ok().zip(usize::try_from(to).ok());
        let intact = range
            .and_then(|(f, t)| data.get(f..t))
            .is_some_and(|bytes| hex::encode(Sha256::digest(bytes)) == sha);
        out.insert(from, Skip { to, intact });
    }
    out
}

/// The lines of a segment outside the ranges `recovery` records declare skipped (torn or
/// unacknowledged writes), in order: what belongs to the chain, plus a torn last line if any.
pub(crate) fn unskipped_lines(data: &[u8]) -> Vec<RawLine<'_>> {
    let lines = split_lines(data);
    let skips = skips(data, &lines);
    let mut skip_until = 0u64;
    let mut out = Vec::with_capacity(lines.len());
    for l in lines {
        if l.offset < skip_until {
            continue;
        }
        if let Some(s) = skips.get(&l.offset) {
            skip_until = s.to;
            continue;
        }
        out.push(l);
    }
    out
}

/// The valid prefix of the last segment as the writer sees it on start.
pub(crate) enum Tail {
    /// The whole file is valid; the chain head is `(seq, hash)`.
    Clean { seq: u64, hash: Hash },
    /// Valid up to `valid_end`, then a torn (incomplete) last line.
    Torn { seq: u64, hash: Hash, valid_end: u64 },
    /// Not even the header line is complete: a crash while the segment was being created.
    NoHeader,
    /// A complete line fails its hash or link: not a crash artefact. Refuse to write.
    Corrupt { offset: u64 },
}

/// Walks the segment's lines honouring skip ranges and classifies its tail.
pub(crate) fn classify_tail(data: &[u8]) -> Tail {
    let mut head: Option<(u64, Hash)> = None;
    let mut valid_end = 0u64;
    for l in &unskipped_lines(data) {
        let parsed = l.complete.then(|| parse_line(l.bytes).ok()).flatten();
        match (parsed, head) {
            (Some((h, e)), None) if e.kind == "segment" => head = Some((e.seq, h)),
            (Some((h, e)), Some((seq, prev))) if linked(&e, seq, &prev) => head = Some((e.seq, h)),
            _ if !l.complete => {
                return match head {
                    Some((seq, hash)) => Tail::Torn { seq, hash, valid_end },
                    None => Tail::NoHeader,
                }
            }
            _ => return Tail::Corrupt { offset: l.offset },
        }
        valid_end = l.offset + l.bytes.len() as u64 + 1;
    }
    match head {
        Some((seq, hash)) => Tail::Clean { seq, hash },
        None => Tail::NoHeader,
    }
}

/// Whether `e` follows the line `(seq, prev)` in the chain.
pub(crate) fn linked(e: &Entry, seq: u64, prev: &Hash) -> bool {
    e.seq == seq.wrapping_add(1) && crate::chain::parse_hash(&e.prev).as_ref() == Some(prev)
}
