//! The validated detector settings the stage runs with, and the bounded set of rule names.

use std::time::Duration;

use crate::config::{Action, PagingMeasure};

/// A detector's rule name: the `rule` of an alert and the `rule` metric label (a bounded set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RuleId {
    DistinctPatients,
    BulkPaging,
    IdEnumeration,
    RateDenials,
    RestrictedRecords,
    BulkExports,
    /// Requested by the policy decision; the policy's own alert name is a separate field.
    Policy,
    OffHours,
}

impl RuleId {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RuleId::DistinctPatients => "distinct_patients",
            RuleId::BulkPaging => "bulk_paging",
            RuleId::IdEnumeration => "id_enumeration",
            RuleId::RateDenials => "rate_denials",
            RuleId::RestrictedRecords => "restricted_records",
            RuleId::BulkExports => "bulk_exports",
            RuleId::Policy => "policy",
            RuleId::OffHours => "off_hours",
        }
    }
}

/// One enabled detector.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rule {
    /// Most events (patients, entries, probes, denials) allowed within the window.
    pub(crate) threshold: u64,
    pub(crate) window: Duration,
    pub(crate) action: Action,
    pub(crate) block: Duration,
}

/// Every detector's settings (`None`: disabled).
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub(crate) distinct: Option<Rule>,
    pub(crate) count_response_patients: bool,
    pub(crate) paging: Option<Rule>,
    pub(crate) measure: PagingMeasure,
    pub(crate) probes: Option<Rule>,
    pub(crate) count_sequential: bool,
    pub(crate) denials: Option<Rule>,
    /// Records withheld for their security labels.
    pub(crate) restricted: Option<Rule>,
    /// Bulk exports started.
    pub(crate) exports: Option<Rule>,
    /// De-duplication window of policy-requested alerts.
    pub(crate) policy: Option<Duration>,
    /// Patient data reached outside working hours.
    pub(crate) off_hours: Option<OffHoursRule>,
    /// Sample patient ids per alert.
    pub(crate) samples: usize,
}

impl Rules {
    /// The rules with a window and an action, `None` where disabled (policy alerts have neither).
    fn counted(&self) -> [Option<Rule>; 7] {
        let off_hours = self.off_hours.as_ref().map(|o| o.rule);
        [self.distinct, self.paging, self.probes, self.denials, self.restricted, self.exports, off_hours]
    }

    /// The settings of a counting rule, `None` when disabled (or not a counting rule).
    pub(crate) fn rule(&self, id: RuleId) -> Option<&Rule> {
        match id {
            RuleId::DistinctPatients => self.distinct.as_ref(),
            RuleId::BulkPaging => self.paging.as_ref(),
            RuleId::IdEnumeration => self.probes.as_ref(),
            RuleId::RateDenials => self.denials.as_ref(),
            RuleId::RestrictedRecords => self.restricted.as_ref(),
            RuleId::BulkExports => self.exports.as_ref(),
            RuleId::Policy | RuleId::OffHours => None,
        }
    }

    /// How long a principal's windows must be kept after its last request.
    pub(crate) fn longest_window(&self) -> Duration {
        self.counted()
            .iter()
            .flatten()
            .map(|r| r.window)
            .chain(self.policy)
            .max()
            .unwrap_or(Duration::from_secs(1))
    }

    /// The longest block a rule here can impose (zero when no rule blocks).
    pub(crate) fn longest_block(&self) -> Duration {
        self.counted()
            .iter()
            .flatten()
            .filter(|r| r.action == Action::Block)
            .map(|r| r.block)
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

/// The off-hours detector: its alerting settings, the working hours and who is not watched.
#[derive(Debug, Clone)]
pub(crate) struct OffHoursRule {
    pub(crate) rule: Rule,
    pub(crate) hours: crate::hours::Schedules,
    pub(crate) exempt_roles: Vec<String>,
}

impl OffHoursRule {
    /// Whether a request at `wall` time by a principal of `tenant` with `roles` is watched and
    /// outside its tenant's working hours.
    pub(crate) fn fires_for(
        &self,
        tenant: Option<&str>,
        roles: &[String],
        wall: std::time::SystemTime,
    ) -> bool {
        !roles.iter().any(|r| self.exempt_roles.contains(r)) && !self.hours.contains(tenant, wall)
    }
}
