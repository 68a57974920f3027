//! The `audit:` config section and its validation into a running [`AuditStage`].

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use phigate_plugin::{ConfigIssue, StageBuildCtx};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::keys;
use crate::segment::StoreSettings;
use crate::stage::AuditStage;

/// Config of the audit stage (section `audit:`). The stage runs last, right before forwarding:
/// an `attempt` record is made durable before any byte goes upstream, or the request is refused
/// with 503 `audit_unavailable`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct AuditConfig {
    /// Directory of the segment files and the checkpoint log (relative paths resolve against the
    /// config file's directory). Created if missing with mode 0700 (0750 with `file_mode: "0640"`). Recommended: a dedicated
    /// filesystem with `chattr +a` on the files, or WORM storage.
    pub dir: PathBuf,
    /// Ed25519 key that signs checkpoints: a PKCS#8 PEM file (`-----BEGIN PRIVATE KEY-----`) or a
    /// file holding the raw 32-byte seed. Required; keep it readable by the gateway only (0600).
    pub signing_key_path: PathBuf,
    /// Key for the keyed HMAC-SHA256 of query parameter values (raw bytes, at least 32). Without
    /// it, query values other than patient references are not recorded at all (names only).
    #[serde(default)]
    pub hmac_key_path: Option<PathBuf>,
    /// Longest a request waits for its `attempt` record to be durable, in milliseconds; past it
    /// the request is refused with 503 `audit_unavailable`. Default 250.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: NonZeroU32,
    /// Most records made durable by one `fdatasync` (group commit). Default 4096.
    #[serde(default = "default_max_batch_records")]
    pub max_batch_records: NonZeroU32,
    /// Most bytes written by one group commit, in bytes. Default 4 MiB.
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: NonZeroU32,
    /// Records waiting for the writer before new ones are refused (503). Default 65536.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: NonZeroU32,
    /// A segment is closed (sealed with a checkpoint) and a new one started once it reaches this
    /// size, in bytes. Default 64 MiB.
    #[serde(default = "default_segment_max_bytes")]
    pub segment_max_bytes: u64,
    /// A segment is rotated once it has been open this long, in seconds (counted from when this
    /// process opened it). Default 86400 (a day).
    #[serde(default = "default_segment_max_age_secs")]
    pub segment_max_age_secs: NonZeroU32,
    /// A signed checkpoint is written after this many records. Default 1000.
    #[serde(default = "default_checkpoint_every_records")]
    pub checkpoint_every_records: NonZeroU32,
    /// A signed checkpoint is written at least this often while records arrive, in seconds.
    /// Default 60.
    #[serde(default = "default_checkpoint_every_secs")]
    pub checkpoint_every_secs: NonZeroU32,
    /// Mode of created files, as an octal string: `"0600"` (default) or `"0640"` (lets a log
    /// shipper in the gateway's group read them). Nothing else is accepted.
    #[serde(default = "default_file_mode")]
    pub file_mode: String,
    /// Minimum age of a segment before anything may delete it, in days. Default 2190 (6 years,
    /// HIPAA 45 CFR 164.316(b)(2)). The gateway itself never deletes segments: pruning is an
    /// operator action after this age.
    #[serde(default = "default_retention_days")]
    pub retention_days: NonZeroU32,
    /// A copy of the trail off the host as it is written: every line made durable (segment
    /// headers, access and operator records, checkpoints, recoveries; exactly the segment
    /// stream, hash chain included) is POSTed as NDJSON to a collector over HTTPS, in order. It
    /// is read from the segment files, which are its queue: a collector that is down is retried
    /// for as long as it takes and nothing is dropped, and a restart resumes from the cursor kept
    /// in `forward-cursor.json` in `dir` (at least once: a restart may send up to the last second's
    /// lines again). The first start with `forward` begins with the segment the gateway appends to. The local trail
    /// stays the record: nothing waits for the collector, so a request never does.
    /// `max_pending_bytes` does not apply here. Default: none.
    #[serde(default)]
    pub forward: Option<phigate_shipper::ShipperConfig>,
}

fn default_max_wait_ms() -> NonZeroU32 {
    NonZeroU32::new(250).unwrap_or(NonZeroU32::MIN)
}
fn default_max_batch_records() -> NonZeroU32 {
    NonZeroU32::new(4096).unwrap_or(NonZeroU32::MIN)
}
fn default_max_batch_bytes() -> NonZeroU32 {
    NonZeroU32::new(4 << 20).unwrap_or(NonZeroU32::MIN)
}
fn default_queue_capacity() -> NonZeroU32 {
    NonZeroU32::new(65536).unwrap_or(NonZeroU32::MIN)
}
fn default_segment_max_bytes() -> u64 {
    64 << 20
}
fn default_segment_max_age_secs() -> NonZeroU32 {
    NonZeroU32::new(86_400).unwrap_or(NonZeroU32::MIN)
}
fn default_checkpoint_every_records() -> NonZeroU32 {
    NonZeroU32::new(1000).unwrap_or(NonZeroU32::MIN)
}
fn default_checkpoint_every_secs() -> NonZeroU32 {
    NonZeroU32::new(60).unwrap_or(NonZeroU32::MIN)
}
fn default_file_mode() -> String {
    "0600".to_owned()
}
fn default_retention_days() -> NonZeroU32 {
    NonZeroU32::new(2190).unwrap_or(NonZeroU32::MIN)
}

/// The smallest segment size accepted: a header, a record and a checkpoint must fit.
const MIN_SEGMENT_BYTES: u64 = 64 << 10;

impl AuditConfig {
    /// A config with every default, for tests, the demo and the bench.
    pub fn new(dir: impl Into<PathBuf>, signing_key_path: impl Into<PathBuf>) -> Self {
        AuditConfig {
            dir: dir.into(),
            signing_key_path: signing_key_path.into(),
            hmac_key_path: None,
            max_wait_ms: default_max_wait_ms(),
            max_batch_records: default_max_batch_records(),
            max_batch_bytes: default_max_batch_bytes(),
            queue_capacity: default_queue_capacity(),
            segment_max_bytes: default_segment_max_bytes(),
            segment_max_age_secs: default_segment_max_age_secs(),
            checkpoint_every_records: default_checkpoint_every_records(),
            checkpoint_every_secs: default_checkpoint_every_secs(),
            file_mode: default_file_mode(),
            retention_days: default_retention_days(),
            forward: None,
        }
    }

    /// Validates the section, loads the keys, recovers the segment store (a torn last line is
    /// moved aside and a `recovery` record written) and starts the writer thread.
    ///
    /// Does blocking file I/O (start-up recovery reads the newest segment): call it from start-up
    /// code, not from an async worker.
    ///
    /// I/O problems with `dir` are not config errors: the stage starts, reports not ready, and
    /// refuses requests with 503 `audit_unavailable` until the directory works (fail closed).
    ///
    /// # Errors
    /// Every problem in the section, at once; messages never contain key material.
    pub fn build(self, ctx: &StageBuildCtx<'_>) -> Result<AuditStage, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let resolve = |p: &Path| ctx.config_dir.join(p);
        let file_mode = match self.file_mode.as_str() {
            "0600" | "600" => 0o600,
            "0640" | "640" => 0o640,
            _ => {
                issues.push(ConfigIssue::new("file_mode", "must be \"0600\" or \"0640\""));
                0o600
            }
        };
        if self.segment_max_bytes < MIN_SEGMENT_BYTES {
            issues.push(ConfigIssue::new("segment_max_bytes", "must be at least 65536"));
        }
        let signer = keys::load_signing_key(&resolve(&self.signing_key_path))
            .map_err(|e| issues.push(ConfigIssue::new("signing_key_path", key_msg(&e))))
            .ok();
        let hmac_key = match &self.hmac_key_path {
            Some(p) => keys::load_hmac_key(&resolve(p))
                .map_err(|e| issues.push(ConfigIssue::new("hmac_key_path", key_msg(&e))))
                .ok(),
            None => None,
        };
        let forward = match &self.forward {
            None => None,
            Some(f) => f
                .build_poster(ctx.config_dir, "forward", "audit forward", crate::metrics::forward())
                .map_err(|mut found| issues.append(&mut found))
                .ok(),
        };
        let Some(signer) = signer else {
            return Err(issues);
        };
        if !issues.is_empty() {
            return Err(issues);
        }
        let settings = StoreSettings {
            dir: resolve(&self.dir),
            file_mode,
            signer,
            segment_max_bytes: self.segment_max_bytes,
            segment_max_age: Duration::from_secs(self.segment_max_age_secs.get().into()),
            checkpoint_every_records: self.checkpoint_every_records.get().into(),
            checkpoint_every: Duration::from_secs(self.checkpoint_every_secs.get().into()),
            clock: crate::segment::system_clock(),
        };
        AuditStage::start(self, settings, hmac_key, forward)
            .map_err(|e| vec![ConfigIssue::new("dir", format!("cannot start writer: {e}"))])
    }
}

fn key_msg(e: &crate::error::KeyError) -> String {
    match e {
        crate::error::KeyError::Io { source, .. } => format!("cannot read key file: {source}"),
        crate::error::KeyError::Format { what, .. } => format!("bad key file: {what}"),
    }
}
