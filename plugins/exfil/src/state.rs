//! One principal's windows and what a completed request adds to them.
//!
//! Each detector fires once when its window first goes over the threshold, then stays quiet for
//! one window (one alert per principal per rule per window, not one per request past the line).

use std::time::{Duration, Instant};

use phigate_plugin::{Interaction, PatientId};

use crate::config::{Action, PagingMeasure};
use crate::rules::{Rule, RuleId, Rules};
use crate::window::{DistinctSet, SlidingCount};

/// What one completed request contributes, taken from its context.
#[derive(Debug, Default)]
pub(crate) struct Observation<'a> {
    /// Patients the request named.
    pub(crate) patients: &'a [PatientId],
    /// Patients the response contained, when the body was inspected.
    pub(crate) response_patients: &'a [PatientId],
    /// Final status (upstream's, or the denial's).
    pub(crate) status: Option<u16>,
    /// Whether the request went upstream.
    pub(crate) forwarded: bool,
    /// Bundle entries returned, when counted.
    pub(crate) entries: Option<u32>,
    /// The FHIR interaction, on FHIR routes.
    pub(crate) interaction: Option<Interaction>,
    /// The logical id of a read or vread.
    pub(crate) read_id: Option<&'a str>,
    /// The alert name the policy asked for.
    pub(crate) policy_alert: Option<&'a str>,
    /// Made outside working hours by a watched principal (`off_hours`).
    pub(crate) off_hours: bool,
    /// Records withheld for their security labels: search entries left out, plus one for a read
    /// or write refused with `security_label_not_permitted`.
    pub(crate) withheld: u64,
    /// A bulk export the upstream accepted (a `$export` kick-off answered 202).
    pub(crate) export_started: bool,
}

/// A detector that fired.
#[derive(Debug, Clone)]
pub(crate) struct Finding {
    pub(crate) rule: RuleId,
    pub(crate) observed: u64,
    pub(crate) threshold: u64,
    pub(crate) window: Duration,
    pub(crate) action: Action,
    pub(crate) block: Duration,
    pub(crate) samples: Vec<PatientId>,
}

impl Finding {
    fn of(rule: RuleId, r: &Rule, observed: u64, samples: Vec<PatientId>) -> Self {
        Finding {
            rule,
            observed,
            threshold: r.threshold,
            window: r.window,
            action: r.action,
            block: r.block,
            samples,
        }
    }
}

/// Last alert time of one rule.
#[derive(Debug, Default)]
struct Dedup(Option<Instant>);

impl Dedup {
    /// Whether an alert may go out now; if so, remembers it.
    fn take(&mut self, now: Instant, window: Duration) -> bool {
        let quiet = self.0.is_none_or(|t| now.saturating_duration_since(t) >= window);
        if quiet {
            self.0 = Some(now);
        }
        quiet
    }
}

/// A sliding count with its de-duplication.
#[derive(Debug, Default)]
struct Counted {
    window: SlidingCount,
    dedup: Dedup,
}

impl Counted {
    /// Adds `weight`; the total when it fires.
    fn add(&mut self, r: &Rule, now: Instant, weight: u64) -> Option<u64> {
        if weight == 0 {
            return None;
        }
        let total = self.window.add(now, weight, r.window, r.threshold);
        if total <= r.threshold || !self.dedup.take(now, r.window) {
            return None;
        }
        self.window.clear();
        Some(total)
    }
}

/// Everything the stage remembers about one principal.
#[derive(Debug, Default)]
pub(crate) struct PrincipalState {
    patients: DistinctSet,
    patients_dedup: Dedup,
    paging: Counted,
    probes: Counted,
    last_read: Option<u64>,
    denials: Counted,
    restricted: Counted,
    exports: Counted,
    /// (policy alert name, when last written).
    policy: Vec<(Box<str>, Instant)>,
    off_hours: Dedup,
}

/// The rules whose windows are also counted over the replicas (`shared.windows`), in the order
/// of [`Tally`]'s arrays.
pub(crate) const SHARED_RULES: [RuleId; 6] = [
    RuleId::DistinctPatients,
    RuleId::BulkPaging,
    RuleId::IdEnumeration,
    RuleId::RateDenials,
    RuleId::RestrictedRecords,
    RuleId::BulkExports,
];

/// What one request added to the windows of [`SHARED_RULES`], for counting them over the
/// replicas too.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    /// The weight added per rule (for `distinct_patients`: the patients' count).
    pub(crate) weights: [u64; 6],
    /// The patients served (`distinct_patients`), without repeats.
    pub(crate) patients: Vec<PatientId>,
    /// The rules that fired on this replica (their window over the replicas is then taken as
    /// alerted, so the same excess is not alerted twice).
    pub(crate) fired: [bool; 6],
}

impl Tally {
    /// Nothing to add.
    pub(crate) fn is_empty(&self) -> bool {
        self.weights.iter().all(|w| *w == 0) && !self.fired.iter().any(|f| *f)
    }

    fn add(&mut self, rule: RuleId, weight: u64, fired: bool) {
        if let Some(i) = SHARED_RULES.iter().position(|r| *r == rule) {
            self.weights[i] += weight;
            self.fired[i] |= fired;
        }
    }
}

impl PrincipalState {
    /// Feeds one completed request to every enabled detector; returns those that fired. With
    /// `tally`, also notes what it added to the windows counted over the replicas.
    pub(crate) fn observe(
        &mut self,
        rules: &Rules,
        now: Instant,
        obs: &Observation<'_>,
        mut tally: Option<&mut Tally>,
    ) -> Vec<Finding> {
        let mut found = Vec::new();
        if let Some(r) = &rules.distinct {
            // Only patients whose data was actually served count as touched; refused attempts
            // are the business of `rate_denials`.
            let served = obs.forwarded && obs.status.is_some_and(|s| (200..400).contains(&s));
            let named = if served { obs.patients } else { &[] };
            let returned = if rules.count_response_patients { obs.response_patients } else { &[] };
            let n = self.patients.add(now, named.iter().chain(returned), r.window, limit(r));
            let mut fired = false;
            if let Some(n) = n.map(|n| n as u64).filter(|n| *n > r.threshold) {
                if self.patients_dedup.take(now, r.window) {
                    let samples = self.patients.newest(rules.samples);
                    found.push(Finding::of(RuleId::DistinctPatients, r, n, samples));
                    self.patients.clear();
                    fired = true;
                }
            }
            if let Some(t) = tally.as_deref_mut() {
                for p in named.iter().chain(returned) {
                    if !t.patients.contains(p) {
                        t.patients.push(p.clone());
                    }
                }
                t.weights[0] = t.patients.len() as u64;
                t.fired[0] |= fired;
            }
        }
        let samples = || sample(obs, rules.samples);
        let mut count = |counted: &mut Counted, rule: RuleId, r: &Rule, weight: u64| {
            let fired = counted.add(r, now, weight);
            if let Some(t) = tally.as_deref_mut() {
                t.add(rule, weight, fired.is_some());
            }
            fired.map(|n| Finding::of(rule, r, n, samples()))
        };
        if let Some(r) = &rules.paging {
            found.extend(count(&mut self.paging, RuleId::BulkPaging, r, paging_weight(rules.measure, obs)));
        }
        if let Some(r) = &rules.probes {
            let weight = u64::from(is_probe(&mut self.last_read, rules.count_sequential, obs));
            found.extend(count(&mut self.probes, RuleId::IdEnumeration, r, weight));
        }
        if let Some(r) = &rules.denials {
            let denied = matches!(obs.status, Some(403 | 429));
            found.extend(count(&mut self.denials, RuleId::RateDenials, r, u64::from(denied)));
        }
        if let Some(r) = &rules.restricted {
            found.extend(count(&mut self.restricted, RuleId::RestrictedRecords, r, obs.withheld));
        }
        if let Some(r) = &rules.exports {
            found.extend(count(&mut self.exports, RuleId::BulkExports, r, u64::from(obs.export_started)));
        }
        if let Some(o) = &rules.off_hours {
            // Patient data actually served, off hours: once per principal per window.
            let served = obs.forwarded && obs.status.is_some_and(|s| (200..400).contains(&s));
            let patients = !obs.patients.is_empty() || !obs.response_patients.is_empty();
            if obs.off_hours && served && patients && self.off_hours.take(now, o.rule.window) {
                found.push(Finding::of(RuleId::OffHours, &o.rule, 1, samples()));
            }
        }
        if let (Some(window), Some(name)) = (rules.policy, obs.policy_alert) {
            if self.policy_due(name, now, window) {
                let r = Rule { threshold: 0, window, action: Action::Alert, block: Duration::ZERO };
                found.push(Finding::of(RuleId::Policy, &r, 1, samples()));
            }
        }
        found
    }

    fn policy_due(&mut self, name: &str, now: Instant, window: Duration) -> bool {
        self.policy.retain(|(_, at)| now.saturating_duration_since(*at) < window);
        if self.policy.iter().any(|(n, _)| &**n == name) {
            return false;
        }
        if !window.is_zero() {
            self.policy.push((name.into(), now));
        }
        true
    }
}

/// A read by id that missed, or that walked to a numerically adjacent id (`last_read`: the
/// principal's previous numeric read, updated).
fn is_probe(last_read: &mut Option<u64>, sequential: bool, obs: &Observation<'_>) -> bool {
    let Some(id) = obs.read_id else {
        return false;
    };
    let missed = matches!(obs.status, Some(403 | 404 | 410));
    let mut adjacent = false;
    if sequential {
        let n = id.parse::<u64>().ok();
        adjacent = matches!((*last_read, n), (Some(a), Some(b)) if a.abs_diff(b) == 1);
        *last_read = n;
    }
    missed || adjacent
}

/// The distinct-set threshold as a size.
fn limit(r: &Rule) -> usize {
    usize::try_from(r.threshold).unwrap_or(usize::MAX)
}

fn paging_weight(measure: PagingMeasure, obs: &Observation<'_>) -> u64 {
    let ok = obs.status.is_some_and(|s| (200..300).contains(&s));
    match measure {
        PagingMeasure::Entries => obs.entries.map_or(0, u64::from),
        PagingMeasure::Pages => u64::from(
            ok && matches!(
                obs.interaction,
                Some(
                    Interaction::SearchType
                        | Interaction::SearchSystem
                        | Interaction::SearchCompartment
                        | Interaction::History
                        | Interaction::Operation
                )
            ),
        ),
    }
}

/// Up to `n` patients of this request (named, then returned), without repeats.
fn sample(obs: &Observation<'_>, n: usize) -> Vec<PatientId> {
    let mut out: Vec<PatientId> = Vec::new();
    for p in obs.patients.iter().chain(obs.response_patients) {
        if out.len() >= n {
            break;
        }
        if !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}
