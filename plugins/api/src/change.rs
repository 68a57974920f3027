//! Changes to what the gateway enforces (the policy revision that decides, the certificate a
//! listener presents), reported by whoever made them so that the gateway can chain them into the
//! audit trail beside the accesses they govern (HIPAA 45 CFR 164.312(b): an auditor asks when a
//! revision started deciding, and what changed a certificate).
//!
//! A stage reports through the [`ChangeSink`] the gateway hands it
//! ([`Stage::attach_changes`](crate::Stage::attach_changes)). Reporting never blocks and never
//! fails the change: the change has already happened when it is reported.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

/// What set a change off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeTrigger {
    /// Loaded when the gateway started: what is in force from the first request.
    Startup,
    /// A file watcher, or the periodic check of certificate files, saw the files change.
    Watch,
    /// SIGHUP, or an explicit reload call (what SIGHUP does).
    Sighup,
}

/// One change. Fields are allow-listed: content hashes, names, fixed-text reason classes; never
/// policy source, data values or key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", content = "details", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Change {
    /// A policy revision is now deciding.
    PolicyRevisionApplied {
        /// The revision it replaced (content hash); `None` at startup.
        previous: Option<String>,
        /// The revision now deciding (content hash).
        revision: String,
    },
    /// A new policy revision was refused; `active` keeps deciding.
    PolicyRevisionRejected {
        /// The revision that keeps deciding (content hash).
        active: String,
        /// The refused revision's content hash, when its files could be read.
        attempted: Option<String>,
        /// A fixed reason class (`rego`, `tests_failed`, …), never the error text.
        reason: &'static str,
    },
    /// A listener now presents this certificate.
    CertificateReloaded {
        /// The listener's configured name.
        listener: String,
        /// SHA-256 of the certificate it replaced (DER, hex); `None` at startup.
        previous_sha256: Option<String>,
        /// SHA-256 of the leaf certificate now presented (DER, hex).
        sha256: String,
        /// The certificate's notAfter, RFC 3339 UTC, when it could be read.
        not_after: Option<String>,
    },
    /// A listener's new certificate files were refused; the previous certificate keeps serving.
    CertificateReloadFailed {
        /// The listener's configured name.
        listener: String,
        /// SHA-256 of the certificate that keeps serving (DER, hex).
        active_sha256: String,
        /// A fixed reason class (`unreadable`, `missing`, `invalid`), never file contents.
        reason: &'static str,
    },
}

impl Change {
    /// The change's stable name (`policy_revision_applied`, …), as recorded.
    pub fn action(&self) -> &'static str {
        match self {
            Change::PolicyRevisionApplied { .. } => "policy_revision_applied",
            Change::PolicyRevisionRejected { .. } => "policy_revision_rejected",
            Change::CertificateReloaded { .. } => "certificate_reloaded",
            Change::CertificateReloadFailed { .. } => "certificate_reload_failed",
        }
    }
}

/// A change, when it took effect (or was refused) and what set it off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    /// When the change took effect, or was refused.
    pub at: SystemTime,
    /// What set it off.
    pub trigger: ChangeTrigger,
    /// What changed.
    pub change: Change,
}

impl ChangeEvent {
    /// A change that happens now.
    pub fn now(trigger: ChangeTrigger, change: Change) -> Self {
        ChangeEvent { at: SystemTime::now(), trigger, change }
    }
}

/// Where changes are reported: a cheap, cloneable handle. The gateway's implementation only
/// queues the event (a full queue drops it, logged and counted), so [`ChangeSink::emit`] may be
/// called from a reload thread or an async task alike.
#[derive(Clone)]
pub struct ChangeSink(Arc<dyn Fn(ChangeEvent) + Send + Sync>);

impl ChangeSink {
    /// A sink calling `deliver` for each event. `deliver` must not block (no I/O, no waiting).
    pub fn new(deliver: impl Fn(ChangeEvent) + Send + Sync + 'static) -> Self {
        ChangeSink(Arc::new(deliver))
    }

    /// Reports one change.
    pub fn emit(&self, event: ChangeEvent) {
        (self.0)(event);
    }
}

impl fmt::Debug for ChangeSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChangeSink")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_serializes_as_its_action_and_allow_listed_details() {
        let change =
            Change::PolicyRevisionRejected { active: "aaaa".into(), attempted: None, reason: "tests_failed" };
        let v = serde_json::to_value(&change).unwrap();
        assert_eq!(v["action"], change.action());
        assert_eq!(
            v["details"],
            serde_json::json!({"active": "aaaa", "attempted": null, "reason": "tests_failed"})
        );
    }

    #[test]
    fn every_action_name_is_its_serialized_tag() {
        let (h, r) = (String::from("ab"), "invalid");
        let all = [
            Change::PolicyRevisionApplied { previous: None, revision: h.clone() },
            Change::PolicyRevisionRejected { active: h.clone(), attempted: None, reason: r },
            Change::CertificateReloaded {
                listener: h.clone(),
                previous_sha256: None,
                sha256: h.clone(),
                not_after: None,
            },
            Change::CertificateReloadFailed { listener: h.clone(), active_sha256: h, reason: r },
        ];
        for change in all {
            assert_eq!(serde_json::to_value(&change).unwrap()["action"], change.action());
        }
    }

    #[test]
    fn a_sink_delivers_each_event() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let into = seen.clone();
        let sink = ChangeSink::new(move |e| into.lock().unwrap().push(e.change.action()));
        let change = Change::PolicyRevisionApplied { previous: None, revision: "r1".into() };
        sink.clone().emit(ChangeEvent::now(ChangeTrigger::Startup, change));
        assert_eq!(*seen.lock().unwrap(), ["policy_revision_applied"]);
    }
}
