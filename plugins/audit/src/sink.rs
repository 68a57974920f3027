//! The sink interface: where batches of records become durable.
//!
//! The group-commit writer ([`crate::writer`]) is generic over [`AuditSink`]: it collects
//! records into a batch, calls [`AuditSink::append_batch`] once, and acknowledges every record of
//! the batch with that call's result. The local segment store ([`crate::SegmentStore`]) is the only
//! implementation and the source of truth. An external append-only store fits the same shape:
//! a PostgreSQL sink would `INSERT` the batch in one transaction (the role holding INSERT-only
//! grants) and return after `COMMIT`; an object-storage sink would upload the sealed segment with
//! a retention lock. Either would chain the records itself (or mirror the local chain) so that
//! `verify` semantics carry over.

use crate::error::SinkError;
use crate::record::Phase;

/// What a record is: a request's access record at one phase, or an operator's action (such as
/// lifting an exfiltration block, or a policy revision or certificate taking effect) that changed
/// what the gateway enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// `kind: "access"`.
    Access(Phase),
    /// `kind: "operator"`.
    Operator,
}

impl RecordKind {
    /// The `kind` member the chain writes.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Access(_) => "access",
            RecordKind::Operator => "operator",
        }
    }
}

/// One record waiting to be chained and written: its members, serialized once on the caller's
/// task so the single writer thread only chains, hashes and writes.
#[derive(Debug)]
pub struct PendingRecord {
    pub(crate) kind: RecordKind,
    pub(crate) body: Vec<u8>,
}

impl PendingRecord {
    /// What the record is.
    pub fn kind(&self) -> RecordKind {
        self.kind
    }

    /// The record's JSON members without braces (`"ts":"…","phase":"attempt",…`).
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

/// A durable, append-only destination for audit records. Runs on the writer thread: blocking
/// I/O is expected here and nowhere else.
pub trait AuditSink: Send + 'static {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// Appends the batch in order and returns only once all of it is durable. On error, no
    /// record of the batch may be acknowledged; the sink repairs itself on a later call (or
    /// fails again), never silently dropping what it already holds.
    ///
    /// # Errors
    /// The batch is not durable.
    fn append_batch(&mut self, batch: &[PendingRecord]) -> Result<(), SinkError>;

    /// Called when no record arrived for a while: time-based checkpoints and rotation, and a
    /// probe (reopen, repair) while the sink is broken, so readiness recovers without traffic.
    ///
    /// # Errors
    /// The sink is (still) broken.
    fn tick(&mut self) -> Result<(), SinkError>;
}
