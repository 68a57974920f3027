//! Signed checkpoints: `{segment, seq, hash, ts}` signed with Ed25519.
//!
//! A checkpoint commits to the chain head at `seq` (the line just before it). Since every line
//! hashes its predecessor, one signature covers the whole chain up to there: rewriting any
//! earlier line means forging a signature. Each checkpoint goes both into the segment (as a
//! chained `checkpoint` line) and into the checkpoint log, which operators copy off-host: a
//! segment tail cut after a checkpoint still leaves that checkpoint in the log.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The checkpoint log's file name inside the audit directory.
pub const CHECKPOINT_LOG: &str = "checkpoints.jsonl";

/// One checkpoint, as it appears in the checkpoint log (and, with chain members, in a segment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// The segment file name holding the covered line.
    pub(crate) segment: String,
    /// The seq of the covered line.
    pub(crate) covers_seq: u64,
    /// The hash (hex) of the covered line.
    pub(crate) covers_hash: String,
    /// When the checkpoint was made.
    pub(crate) ts: String,
    /// The signer's public key, base64 (informational; `verify --public-key` pins it).
    pub(crate) key: String,
    /// Ed25519 signature over [`Checkpoint::message`], base64.
    pub(crate) sig: String,
}

impl Checkpoint {
    /// The signed bytes: a domain tag, then the fields NUL-separated (none can hold a NUL).
    fn message(segment: &str, covers_seq: u64, covers_hash: &str, ts: &str) -> Vec<u8> {
        format!("phigate-audit-checkpoint-v1\0{segment}\0{covers_seq}\0{covers_hash}\0{ts}").into_bytes()
    }

    /// Signs a checkpoint.
    pub(crate) fn sign(
        key: &SigningKey,
        segment: &str,
        covers_seq: u64,
        covers_hash: &str,
        ts: String,
    ) -> Self {
        let sig = key.sign(&Self::message(segment, covers_seq, covers_hash, &ts));
        Checkpoint {
            segment: segment.to_owned(),
            covers_seq,
            covers_hash: covers_hash.to_owned(),
            ts,
            key: STANDARD.encode(key.verifying_key().as_bytes()),
            sig: STANDARD.encode(sig.to_bytes()),
        }
    }

    /// Whether the signature verifies under `key`.
    pub(crate) fn verifies(&self, key: &VerifyingKey) -> bool {
        let Ok(raw) = STANDARD.decode(&self.sig) else {
            return false;
        };
        let Ok(sig) = Signature::from_slice(&raw) else {
            return false;
        };
        let msg = Self::message(&self.segment, self.covers_seq, &self.covers_hash, &self.ts);
        key.verify(&msg, &sig).is_ok()
    }

    /// The members for the in-segment `checkpoint` line (without braces).
    pub(crate) fn inner_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        if v.len() >= 2 {
            v.pop();
            v.remove(0);
        }
        v
    }
}

/// Decodes a base64 public key as written in headers and checkpoints.
pub(crate) fn decode_key(b64: &str) -> Option<VerifyingKey> {
    let raw = STANDARD.decode(b64).ok()?;
    let raw: [u8; 32] = raw.as_slice().try_into().ok()?;
    VerifyingKey::from_bytes(&raw).ok()
}
