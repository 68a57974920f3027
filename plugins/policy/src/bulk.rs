//! Bulk export in the policy stage: an export's URLs serve only the principal that started it,
//! and its files (NDJSON: one resource per line, often far larger than any response the gateway
//! buffers) are checked line by line as they stream. A line is sent only once it has been read
//! whole and checked like any response: a resource naming a patient outside the permit ends the
//! file there (the client sees a truncated transfer, never the line); a resource carrying a
//! withheld security label is left out, like a withheld search entry.

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};
use phigate_plugin::{Denial, ErrorCode, PatientId, RequestCtx};

use crate::events;
use crate::labels::Withheld;
use crate::permit::Permit;
use crate::verify::{verify_collect, Verdict};

/// Longest line (one resource) held back while it is incomplete; longer ends the file.
pub(crate) const MAX_LINE_BYTES: usize = 16 << 20;

/// Refuses a bulk URL to anyone but the principal it was issued to (issuer, subject, tenant and
/// OAuth client: the same user's other app is not the client that started the export).
pub(crate) fn check_owner(ctx: &RequestCtx) -> Result<(), Denial> {
    let Some(access) = &ctx.bulk else { return Ok(()) };
    let owner = ctx.principal.as_ref().is_some_and(|p| {
        *p.issuer == *access.issuer
            && p.subject.as_str() == &*access.subject
            && p.tenant.as_ref().map(|t| t.as_str()) == access.tenant.as_ref().map(|t| t.as_str())
            && p.client_id.as_deref() == access.client_id.as_deref()
    });
    if owner {
        return Ok(());
    }
    events::BULK_REFUSALS.with_label_values(&[access.kind.as_str()]).inc();
    Err(Denial::new(ErrorCode::BulkUrlNotOwner).with_cause("bulk URL issued to another principal"))
}

/// A completed export's manifest without the `count` of its `output` and `deleted` files: a
/// file loses the lines whose labels are withheld, so the upstream's count would tell how many
/// were left out (as `Bundle.total` does for a search). `None` when there is none to remove or
/// the body is not a JSON object (the gateway's manifest rewrite refuses that one).
pub(crate) fn manifest_without_counts(body: &[u8]) -> Option<Vec<u8>> {
    let mut manifest: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = manifest.as_object_mut()?;
    let mut removed = false;
    for list in ["output", "deleted"] {
        let Some(items) = object.get_mut(list).and_then(|v| v.as_array_mut()) else { continue };
        for item in items.iter_mut().filter_map(|i| i.as_object_mut()) {
            removed |= item.remove("count").is_some();
        }
    }
    removed.then(|| serde_json::to_vec(&manifest).ok()).flatten()
}

/// The line-by-line check of one streamed NDJSON file.
#[derive(Debug, Clone)]
pub(crate) struct NdjsonCheck {
    permit: Permit,
    /// The incomplete last line so far.
    pending: BytesMut,
    sent: u32,
    withheld: u32,
    named: BTreeSet<PatientId>,
}

impl NdjsonCheck {
    pub(crate) fn new(permit: Permit) -> Self {
        NdjsonCheck { permit, pending: BytesMut::new(), sent: 0, withheld: 0, named: BTreeSet::new() }
    }

    /// The complete lines of what has arrived, checked: the bytes to send. At `end`, a last line
    /// without its newline counts as complete.
    ///
    /// # Errors
    /// `patient_not_permitted` for a line naming a patient outside the permit, `policy_error` for
    /// a line that is not readable JSON or longer than [`MAX_LINE_BYTES`].
    pub(crate) fn feed(&mut self, chunk: &[u8], end: bool) -> Result<Bytes, Denial> {
        self.pending.extend_from_slice(chunk);
        let complete = if end {
            self.pending.len()
        } else {
            self.pending.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
        };
        if self.pending.len() - complete > MAX_LINE_BYTES {
            events::RESPONSE_CHECKS.with_label_values(&["unreadable"]).inc();
            return Err(Denial::new(ErrorCode::PolicyError).with_cause("bulk file line too long to check"));
        }
        let ready = self.pending.split_to(complete);
        // Built only once a line is left out: until then the lines go out as they came.
        let mut kept: Option<BytesMut> = None;
        let mut start = 0;
        while start < ready.len() {
            let stop = ready[start..].iter().position(|&b| b == b'\n').map_or(ready.len(), |i| start + i + 1);
            let line = &ready[start..stop];
            if self.keep(line)? {
                if let Some(kept) = kept.as_mut() {
                    kept.extend_from_slice(line);
                }
            } else if kept.is_none() {
                kept = Some(BytesMut::from(&ready[..start]));
            }
            start = stop;
        }
        Ok(kept.unwrap_or(ready).freeze())
    }

    /// Whether `line` may be sent (`false`: left out for a withheld label).
    fn keep(&mut self, line: &[u8]) -> Result<bool, Denial> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(true);
        }
        let checked = verify_collect(line, &self.permit);
        match checked.verdict {
            Verdict::Clean if checked.withheld == Withheld::Nothing => {
                self.sent += 1;
                self.named.extend(checked.named);
                Ok(true)
            }
            Verdict::Clean => {
                self.withheld += 1;
                events::WITHHELD_ENTRIES.with_label_values::<&str>(&[]).inc();
                Ok(false)
            }
            Verdict::Violation | Verdict::Unreadable => {
                Err(crate::stage::refusal(&checked, "bulk file line"))
            }
        }
    }

    /// What was sent so far, for the stages after this one and the audit record: the patients the
    /// sent lines named, how many resources were sent and how many were left out.
    pub(crate) fn record(&self, ctx: &mut RequestCtx) {
        ctx.response.patients = Some(self.named.iter().cloned().collect());
        ctx.response.entries = Some(self.sent);
        ctx.response.withheld = (self.withheld > 0).then_some(self.withheld);
    }
}

#[cfg(test)]
mod tests;
