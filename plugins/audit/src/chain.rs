//! The line format and the hash chain.
//!
//! Every line of a segment is one JSON object that starts `{"v":1,"kind":K,"seq":N,` and ends
//! `,"prev":"<hex>","hash":"<hex>"}`. Its canonical form is the line's exact bytes without the
//! `,"hash":"…"` member (so `…,"prev":"<hex>"}`); `hash` is the SHA-256 of that canonical form and
//! `prev` is the `hash` of the line before it in the chain (64 zeros for the very first line).
//! Hashing the exact bytes, not a re-serialization, means any change to a line (a field, a
//! space, the key order) breaks its hash, and no JSON canonicalization scheme is needed.

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub(crate) type Hash = [u8; 32];

/// The `prev` of the first line of the first segment.
pub(crate) const GENESIS: Hash = [0; 32];

/// The record format version.
pub const FORMAT_VERSION: u32 = 1;

/// `,"hash":"` + 64 hex digits + `"}`.
const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;

/// Appends one chained line (with its `\n`) to `out` and returns its hash. `inner` holds the
/// kind-specific members without braces (`"a":1,"b":2`), or nothing.
pub(crate) fn append_line(out: &mut Vec<u8>, kind: &str, seq: u64, inner: &[u8], prev: &Hash) -> Hash {
    let start = out.len();
    out.extend_from_slice(b"{\"v\":1,\"kind\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    if !inner.is_empty() {
        out.push(b',');
        out.extend_from_slice(inner);
    }
    out.extend_from_slice(b",\"prev\":\"");
    push_hex(out, prev);
    out.push(b'"');
    let hash: Hash = Sha256::new().chain_update(&out[start..]).chain_update(b"}").finalize().into();
    out.extend_from_slice(b",\"hash\":\"");
    push_hex(out, &hash);
    out.extend_from_slice(b"\"}\n");
    hash
}

fn push_hex(out: &mut Vec<u8>, h: &Hash) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in h {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0xf)]);
    }
}

/// Hex of a hash.
pub(crate) fn hex(h: &Hash) -> String {
    hex::encode(h)
}

/// Parses a 64-digit hex hash.
pub(crate) fn parse_hash(s: &str) -> Option<Hash> {
    let mut h = [0u8; 32];
    hex::decode_to_slice(s, &mut h).ok()?;
    Some(h)
}

/// Why a line fails its own hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineFault {
    /// The line does not end with a well-formed `hash` member.
    NoHash,
    /// The stored hash is not the SHA-256 of the canonical form: the line was modified.
    HashMismatch,
}

/// Checks a line (without its `\n`) against its own `hash` member and returns the hash.
pub(crate) fn check_line(line: &[u8]) -> Result<Hash, LineFault> {
    if line.len() < HASH_SUFFIX_LEN + 2 || !line.ends_with(b"\"}") {
        return Err(LineFault::NoHash);
    }
    let cut = line.len() - HASH_SUFFIX_LEN;
    let suffix = &line[cut..];
    if !suffix.starts_with(b",\"hash\":\"") {
        return Err(LineFault::NoHash);
    }
    let stored =
        std::str::from_utf8(&suffix[9..9 + 64]).ok().and_then(parse_hash).ok_or(LineFault::NoHash)?;
    let computed: Hash = Sha256::new().chain_update(&line[..cut]).chain_update(b"}").finalize().into();
    if computed == stored {
        Ok(stored)
    } else {
        Err(LineFault::HashMismatch)
    }
}

/// The members of a line that the writer's recovery and `verify` read. Unknown members are
/// ignored here (they are still covered by the hash).
#[derive(Debug, Deserialize)]
pub(crate) struct Entry {
    pub(crate) v: u32,
    pub(crate) kind: String,
    pub(crate) seq: u64,
    pub(crate) prev: String,
    #[serde(default)]
    pub(crate) ts: Option<String>,
    #[serde(default)]
    pub(crate) segment: Option<String>,
    #[serde(default)]
    pub(crate) index: Option<u64>,
    #[serde(default)]
    pub(crate) prev_segment: Option<String>,
    #[serde(default)]
    pub(crate) key: Option<String>,
    #[serde(default)]
    pub(crate) covers_seq: Option<u64>,
    #[serde(default)]
    pub(crate) covers_hash: Option<String>,
    #[serde(default)]
    pub(crate) sig: Option<String>,
    #[serde(default)]
    pub(crate) skip_from: Option<u64>,
    #[serde(default)]
    pub(crate) skip_to: Option<u64>,
    #[serde(default)]
    pub(crate) skipped_sha256: Option<String>,
    #[serde(default)]
    pub(crate) phase: Option<String>,
    #[serde(default)]
    pub(crate) request_id: Option<String>,
}

/// Parses and self-checks one line: its hash, then its members.
pub(crate) fn parse_line(line: &[u8]) -> Result<(Hash, Entry), LineFault> {
    let hash = check_line(line)?;
    let entry: Entry = serde_json::from_slice(line).map_err(|_| LineFault::NoHash)?;
    Ok((hash, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_line_checks_and_any_byte_change_breaks_it() {
        let mut out = Vec::new();
        let h = append_line(&mut out, "access", 7, b"\"a\":1", &GENESIS);
        let line = &out[..out.len() - 1];
        assert_eq!(check_line(line), Ok(h));
        let (_, e) = parse_line(line).unwrap();
        assert_eq!((e.v, e.kind.as_str(), e.seq), (1, "access", 7));
        let mut bad = line.to_vec();
        let i = bad.iter().position(|&b| b == b'1').unwrap();
        bad[i] = b'2';
        assert_eq!(check_line(&bad), Err(LineFault::HashMismatch));
    }
}
