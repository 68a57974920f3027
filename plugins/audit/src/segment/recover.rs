//! Opening the newest segment on start (or after a failed write) and repairing a torn tail:
//! the bytes are copied aside, closed with a newline and declared by a chained `recovery` record.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{list_segments, segment_name, OpenSegment, SegmentStore};
use crate::chain::{append_line, GENESIS};
use crate::error::SinkError;
use crate::record::now_ts;
use crate::scan::{classify_tail, Tail};

impl SegmentStore {
    /// Opens the last segment (recovering a torn tail) or creates the first one.
    pub(super) fn ensure_open(&mut self) -> Result<(), SinkError> {
        if self.open.is_some() {
            return Ok(());
        }
        DirBuilder::new()
            .recursive(true)
            // Group read on files (0640) is useless without group search on the directory.
            .mode(if self.s.file_mode & 0o040 != 0 { 0o750 } else { 0o700 })
            .create(&self.s.dir)
            .map_err(|e| SinkError::unwritable(&self.s.dir, e))?;
        loop {
            let segs = list_segments(&self.s.dir).map_err(|e| SinkError::unwritable(&self.s.dir, e))?;
            let Some((index, path)) = segs.last().cloned() else {
                return self.create_segment(1, None, GENESIS, 0);
            };
            let data = fs::read(&path).map_err(|e| SinkError::unwritable(&path, e))?;
            let (seq, hash, valid_end) = match self.tail_of(index, &data) {
                Tail::Clean { seq, hash } => (seq, hash, data.len() as u64),
                Tail::Torn { seq, hash, valid_end } => (seq, hash, valid_end),
                Tail::Corrupt { offset } => return Err(SinkError::Corrupt { path, offset }),
                Tail::NoHeader => {
                    // Crash while creating the segment: it holds no acknowledged record (the
                    // header is synced before any record goes in). Move it aside, look again.
                    let aside = path.with_extension(format!("jsonl.{}.torn", data.len()));
                    fs::rename(&path, &aside).map_err(|e| SinkError::unwritable(&path, e))?;
                    self.recoveries += 1;
                    continue;
                }
            };
            return self.reopen(index, &path, &data, (seq, hash), valid_end);
        }
    }

    /// After a failed write of this process, everything past the committed length is
    /// unacknowledged; otherwise (start-up) the file itself says where the valid prefix ends.
    fn tail_of(&self, index: u64, data: &[u8]) -> Tail {
        let known = self.failed_at.filter(|&(i, len)| i == index && len > 0 && len <= data.len() as u64);
        match known {
            Some((_, len)) => Tail::Torn { seq: self.next_seq - 1, hash: self.last_hash, valid_end: len },
            None => classify_tail(data),
        }
    }

    /// Opens `path` for appending after its valid prefix, repairing whatever follows it.
    fn reopen(
        &mut self,
        index: u64,
        path: &Path,
        data: &[u8],
        (seq, hash): (u64, crate::chain::Hash),
        valid_end: u64,
    ) -> Result<(), SinkError> {
        let file = self.open_file(path, false)?;
        self.open = Some(OpenSegment {
            file,
            name: segment_name(index),
            index,
            len: valid_end,
            end: data.len() as u64,
            opened: (self.s.clock)(),
        });
        if let Some(forward) = &self.forward {
            // Durable and whole up to `valid_end` (a torn tail after it goes with its repair); a
            // first start sends this segment from its header.
            crate::forward::publish_start(forward, crate::forward::Pos { segment: index, offset: valid_end });
        }
        self.next_seq = seq + 1;
        self.last_hash = hash;
        // Lines written after the last checkpoint before a restart (and the recovery record
        // below) are not covered yet: let the next timer or rotation sign them.
        self.since_checkpoint = self.since_checkpoint.max(1);
        if (data.len() as u64) > valid_end {
            let torn = data.get(valid_end as usize..).unwrap_or_default();
            if let Err(e) = self.repair(path, torn, valid_end) {
                self.open = None;
                return Err(e);
            }
        }
        self.failed_at = None;
        Ok(())
    }

    /// Copies a torn tail aside, closes it with a newline and chains a `recovery` record that
    /// declares the skipped range, so `verify` can tell a crash from an edit.
    fn repair(&mut self, path: &Path, torn: &[u8], from: u64) -> Result<(), SinkError> {
        let aside = path.with_extension(format!("jsonl.{from}.torn"));
        let mut copy = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(self.s.file_mode)
            .open(&aside)
            .map_err(|e| SinkError::unwritable(&aside, e))?;
        copy.write_all(torn).and_then(|()| copy.sync_data()).map_err(SinkError::from_write)?;
        let mut skipped = torn.to_vec();
        if !torn.ends_with(b"\n") {
            skipped.push(b'\n');
        }
        let to = from + skipped.len() as u64;
        let name = self.open.as_ref().map(|o| o.name.clone()).unwrap_or_default();
        let inner = format!(
            "\"ts\":\"{}\",\"segment\":\"{name}\",\"reason\":\"torn_tail\",\"skip_from\":{from},\"skip_to\":{to},\"skipped_sha256\":\"{}\"",
            now_ts(),
            hex::encode(Sha256::digest(&skipped)),
        );
        let mut buf = skipped[torn.len()..].to_vec();
        let hash = append_line(&mut buf, "recovery", self.next_seq, inner.as_bytes(), &self.last_hash);
        self.write_sync(&buf)?;
        if let Some(o) = self.open.as_mut() {
            o.len = to + (buf.len() - (skipped.len() - torn.len())) as u64;
        }
        self.next_seq += 1;
        self.last_hash = hash;
        self.recoveries += 1;
        log::warn!("audit: recovered torn tail of {} ({} bytes at {from})", path.display(), torn.len());
        Ok(())
    }
}
