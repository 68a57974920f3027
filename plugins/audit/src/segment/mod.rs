//! The local segment store: the embedded [`AuditSink`] and the trail's source of truth.
//!
//! Files in the audit directory: `seg-000000000001.jsonl`, `seg-000000000002.jsonl`, … (one
//! chain across all of them), `checkpoints.jsonl` (the checkpoint log) and, after a crash,
//! `seg-….jsonl.<offset>.torn` (a copy of the torn bytes). Files are created with the configured
//! mode and opened `O_APPEND` only, so the store works under `chattr +a`: it never truncates,
//! rewrites or deletes a segment. A torn tail is therefore not cut off but closed with a newline
//! and declared by a chained `recovery` record naming the skipped byte range and its SHA-256.

mod recover;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::SigningKey;

use crate::chain::{append_line, hex, Hash, GENESIS};
use crate::checkpoint::{Checkpoint, CHECKPOINT_LOG};
use crate::error::SinkError;
use crate::record::now_ts;
use crate::sink::{AuditSink, PendingRecord};

/// What the store needs from the config.
pub(crate) struct StoreSettings {
    pub(crate) dir: PathBuf,
    pub(crate) file_mode: u32,
    pub(crate) signer: SigningKey,
    pub(crate) segment_max_bytes: u64,
    pub(crate) segment_max_age: Duration,
    pub(crate) checkpoint_every_records: u64,
    pub(crate) checkpoint_every: Duration,
    /// Monotonic clock for checkpoint and rotation timers (injected by tests).
    pub(crate) clock: Clock,
}

/// A monotonic clock.
pub(crate) type Clock = std::sync::Arc<dyn Fn() -> Instant + Send + Sync>;

/// The real clock.
pub(crate) fn system_clock() -> Clock {
    std::sync::Arc::new(Instant::now)
}

/// The file name of segment `index`.
pub(crate) fn segment_name(index: u64) -> String {
    format!("seg-{index:012}.jsonl")
}

/// The index of a segment file name, if it is one.
pub(crate) fn segment_index(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".jsonl")?;
    (digits.len() == 12 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// The segments in `dir`, by index.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(i) = entry.file_name().to_str().and_then(segment_index) {
            out.push((i, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

struct OpenSegment {
    file: File,
    name: String,
    index: u64,
    len: u64,
    /// Bytes in the file, torn ones included (what the forwarder may read).
    end: u64,
    opened: Instant,
}

/// The local, append-only segment store.
pub struct SegmentStore {
    s: StoreSettings,
    key_b64: String,
    open: Option<OpenSegment>,
    log: Option<File>,
    next_seq: u64,
    last_hash: Hash,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// Recoveries performed by this process (start-up and after write failures).
    pub(crate) recoveries: u64,
    /// `(segment index, committed length)` after a failed write: everything past that length is
    /// unacknowledged, whatever it looks like (a failed repair may have left a newline in it).
    failed_at: Option<(u64, u64)>,
    buf: Vec<u8>,
    /// Told how far the files are durable (`forward:`), so the forwarder reads them up to there.
    forward: Option<crate::forward::Publisher>,
}

impl SegmentStore {
    /// A store over `s.dir`; nothing is touched on disk until the first append or tick.
    pub(crate) fn new(s: StoreSettings) -> Self {
        let key_b64 = STANDARD.encode(s.signer.verifying_key().as_bytes());
        let now = (s.clock)();
        SegmentStore {
            s,
            key_b64,
            open: None,
            log: None,
            next_seq: 0,
            last_hash: GENESIS,
            since_checkpoint: 0,
            last_checkpoint: now,
            recoveries: 0,
            failed_at: None,
            buf: Vec::with_capacity(1 << 16),
            forward: None,
        }
    }

    /// The store telling the forwarder where it starts appending and how far the files are
    /// durable after each `fdatasync` (headers, records, checkpoints, recoveries: the whole stream).
    pub(crate) fn forwarding(mut self, forward: Option<crate::forward::Publisher>) -> Self {
        self.forward = forward;
        self
    }

    fn open_file(&self, path: &Path, create_new: bool) -> Result<File, SinkError> {
        let f = OpenOptions::new()
            .append(true)
            .create_new(create_new)
            .mode(self.s.file_mode)
            .open(path)
            .map_err(|e| SinkError::unwritable(path, e))?;
        if create_new {
            // The umask may have narrowed (or a pre-set ACL widened) the mode asked for.
            f.set_permissions(fs::Permissions::from_mode(self.s.file_mode))
                .map_err(|e| SinkError::unwritable(path, e))?;
        }
        Ok(f)
    }

    /// Time on the store's clock since `t`.
    fn since(&self, t: Instant) -> Duration {
        (self.s.clock)().saturating_duration_since(t)
    }

    fn sync_dir(&self) -> Result<(), SinkError> {
        File::open(&self.s.dir).and_then(|d| d.sync_all()).map_err(|e| SinkError::unwritable(&self.s.dir, e))
    }

    fn create_segment(
        &mut self,
        index: u64,
        prev: Option<&str>,
        prev_hash: Hash,
        seq: u64,
    ) -> Result<(), SinkError> {
        let name = segment_name(index);
        let path = self.s.dir.join(&name);
        let file = self.open_file(&path, true)?;
        let prev_segment = prev.map_or("null".to_owned(), |p| format!("\"{p}\""));
        let inner = format!(
            "\"ts\":\"{}\",\"segment\":\"{name}\",\"index\":{index},\"prev_segment\":{prev_segment},\"key\":\"{}\"",
            now_ts(),
            self.key_b64
        );
        let mut buf = Vec::new();
        let hash = append_line(&mut buf, "segment", seq, inner.as_bytes(), &prev_hash);
        self.open = Some(OpenSegment { file, name, index, len: 0, end: 0, opened: (self.s.clock)() });
        if let Some(forward) = &self.forward {
            crate::forward::publish_start(forward, crate::forward::Pos { segment: index, offset: 0 });
        }
        self.write_sync(&buf)?;
        self.sync_dir()?;
        if let Some(o) = self.open.as_mut() {
            o.len = buf.len() as u64;
        }
        self.next_seq = seq + 1;
        self.last_hash = hash;
        // Sign the header right away: the checkpoint log then names every segment, so deleting
        // the newest segment (before it held a checkpoint of its own) is detected too.
        self.checkpoint_now()
    }

    /// Writes and `fdatasync`s; on failure the segment is dropped so the next call re-reads it
    /// from disk and repairs whatever part of `buf` landed.
    fn write_sync(&mut self, buf: &[u8]) -> Result<(), SinkError> {
        let Some(o) = self.open.as_mut() else {
            return Err(SinkError::WriterStopped);
        };
        let res = o.file.write_all(buf).and_then(|()| o.file.sync_data());
        if let Err(e) = res {
            self.failed_at = Some((o.index, o.len));
            self.open = None;
            return Err(SinkError::from_write(e));
        }
        o.end += buf.len() as u64;
        // Only what is durable here leaves the host (never waiting for the collector).
        if let Some(forward) = &self.forward {
            crate::forward::publish_durable(forward, crate::forward::Pos { segment: o.index, offset: o.end });
        }
        Ok(())
    }
}

// === checkpoints and rotation ===

impl SegmentStore {
    /// Appends a signed checkpoint covering the current head to `buf` (not yet written).
    fn push_checkpoint(&mut self, buf: &mut Vec<u8>, seq: &mut u64, head: &mut Hash) -> Checkpoint {
        let name = self.open.as_ref().map(|o| o.name.as_str()).unwrap_or_default();
        let cp = Checkpoint::sign(&self.s.signer, name, *seq - 1, &hex(head), now_ts());
        let prev = *head;
        *head = append_line(buf, "checkpoint", *seq, &cp.inner_json(), &prev);
        *seq += 1;
        cp
    }

    /// Appends the checkpoint to the checkpoint log and syncs it.
    fn log_checkpoint(&mut self, cp: &Checkpoint) -> Result<(), SinkError> {
        if self.log.is_none() {
            let path = self.s.dir.join(CHECKPOINT_LOG);
            let exists = path.exists();
            self.log = Some(self.open_file(&path, !exists)?);
        }
        let mut line = b"{\"v\":1,".to_vec();
        line.extend_from_slice(&cp.inner_json());
        line.extend_from_slice(b"}\n");
        let res = match self.log.as_mut() {
            Some(f) => f.write_all(&line).and_then(|()| f.sync_data()),
            None => Ok(()),
        };
        res.map_err(|e| {
            self.log = None;
            SinkError::from_write(e)
        })?;
        self.since_checkpoint = 0;
        self.last_checkpoint = (self.s.clock)();
        Ok(())
    }

    /// Writes a lone checkpoint (time-based, or sealing a segment before rotation).
    fn checkpoint_now(&mut self) -> Result<(), SinkError> {
        let mut buf = Vec::new();
        let (mut seq, mut head) = (self.next_seq, self.last_hash);
        let cp = self.push_checkpoint(&mut buf, &mut seq, &mut head);
        self.write_sync(&buf)?;
        self.commit(seq, head, buf.len());
        self.log_checkpoint(&cp)
    }

    fn commit(&mut self, seq: u64, head: Hash, written: usize) {
        self.next_seq = seq;
        self.last_hash = head;
        if let Some(o) = self.open.as_mut() {
            o.len += written as u64;
        }
    }

    fn rotation_due(&self) -> bool {
        self.open.as_ref().is_some_and(|o| {
            o.len >= self.s.segment_max_bytes || self.since(o.opened) >= self.s.segment_max_age
        })
    }

    /// Seals the current segment with a checkpoint and starts the next one, whose header links
    /// to the sealed segment's last hash.
    fn rotate(&mut self) -> Result<(), SinkError> {
        if self.since_checkpoint > 0 {
            self.checkpoint_now()?;
        }
        let (index, name) = match self.open.as_ref() {
            Some(o) => (o.index, o.name.clone()),
            None => return Err(SinkError::WriterStopped),
        };
        self.open = None;
        self.create_segment(index + 1, Some(&name), self.last_hash, self.next_seq)
    }
}

impl AuditSink for SegmentStore {
    fn name(&self) -> &'static str {
        "segments"
    }

    fn append_batch(&mut self, batch: &[PendingRecord]) -> Result<(), SinkError> {
        self.ensure_open()?;
        if self.rotation_due() {
            self.rotate()?;
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let (mut seq, mut head) = (self.next_seq, self.last_hash);
        for r in batch {
            head = append_line(&mut buf, r.kind.as_str(), seq, &r.body, &head);
            seq += 1;
        }
        let due = self.since_checkpoint + batch.len() as u64 >= self.s.checkpoint_every_records
            || self.since(self.last_checkpoint) >= self.s.checkpoint_every;
        let cp = due.then(|| self.push_checkpoint(&mut buf, &mut seq, &mut head));
        let res = self.write_sync(&buf);
        let written = buf.len();
        self.buf = buf;
        res?;
        self.commit(seq, head, written);
        self.since_checkpoint += batch.len() as u64;
        match cp {
            Some(cp) => self.log_checkpoint(&cp),
            None => Ok(()),
        }
    }

    fn tick(&mut self) -> Result<(), SinkError> {
        self.ensure_open()?;
        if self.since_checkpoint > 0 && self.since(self.last_checkpoint) >= self.s.checkpoint_every {
            self.checkpoint_now()?;
        }
        if self.rotation_due()
            && self.open.as_ref().is_some_and(|o| self.since(o.opened) >= self.s.segment_max_age)
        {
            self.rotate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
