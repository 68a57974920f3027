//! The `exfil:` config section, validated all at once by [`ExfilConfig::build`] into an
//! [`ExfilStage`].

mod detectors;
mod shared;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use phigate_plugin::{ConfigIssue, StageBuildCtx};
use schemars::JsonSchema;
use serde::Deserialize;

pub use detectors::{
    Action, BulkExportsConfig, BulkPagingConfig, DistinctPatientsConfig, IdEnumerationConfig, OffHoursConfig,
    PagingMeasure, PolicyAlertsConfig, RateDenialsConfig, RestrictedRecordsConfig, TenantHoursConfig,
};
pub use shared::SharedConfig;
pub(crate) use shared::SharedSettings;

use crate::clock::{Clock, SystemClock};
use crate::rules::{Rule, Rules};
use crate::stage::ExfilStage;
use crate::writer;

/// Exfiltration watch (section `exfil:`): per-principal sliding windows over the patients,
/// Bundle entries, id probes and denials of each request, written as alerts for a SOC and,
/// where configured, answered by blocking the principal for a while.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExfilConfig {
    /// File the alerts are appended to, one JSON line each (schema in the crate README).
    /// Relative to the config file's directory; created with mode 0600 if missing. Required.
    pub alerts_path: PathBuf,
    /// Alerts waiting for the writer; when full, new alerts are dropped and counted in
    /// `phigate_exfil_alerts_dropped_total` (requests are never held up). Default: 4096.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Most principals whose windows are kept; the least recently active are forgotten first.
    /// Default: 100000.
    #[serde(default = "default_max_principals")]
    pub max_principals: u64,
    /// Patient ids quoted in an alert as examples (0 quotes none). Default: 5. Range 0..=20.
    #[serde(default = "default_sample_patient_ids")]
    pub sample_patient_ids: usize,
    /// One principal touching too many distinct patients.
    #[serde(default)]
    pub distinct_patients: DistinctPatientsConfig,
    /// Too many Bundle entries or search pages.
    #[serde(default)]
    pub bulk_paging: BulkPagingConfig,
    /// Reads by id that miss (404/403/410) or walk sequential ids.
    #[serde(default)]
    pub id_enumeration: IdEnumerationConfig,
    /// Storms of 429/403 answers.
    #[serde(default)]
    pub rate_denials: RateDenialsConfig,
    /// Records withheld for security labels the principal is not cleared for.
    #[serde(default)]
    pub restricted_records: RestrictedRecordsConfig,
    /// Bulk exports (`$export`) started.
    #[serde(default)]
    pub bulk_exports: BulkExportsConfig,
    /// Alerts requested by the policy decision (`obligations.alert`).
    #[serde(default)]
    pub policy_alerts: PolicyAlertsConfig,
    /// Patient data reached outside working hours (off by default).
    #[serde(default)]
    pub off_hours: OffHoursConfig,
    /// Blocks shared with the other replicas through Redis. Default: none (each replica blocks
    /// only the principals it saw misbehave).
    #[serde(default)]
    pub shared: Option<SharedConfig>,
    /// Alerts also POSTed to a collector (a SIEM's HTTP input, an incident tool) as NDJSON, over
    /// HTTPS, retried while it is down; the file stays the record. Default: none.
    #[serde(default)]
    pub webhook: Option<phigate_shipper::ShipperConfig>,
}

fn default_queue_capacity() -> usize {
    4096
}
fn default_max_principals() -> u64 {
    100_000
}
fn default_sample_patient_ids() -> usize {
    5
}

/// Longest window or block accepted: a week.
const MAX_SECS: u64 = 7 * 86_400;

impl ExfilConfig {
    /// A config with every default, writing alerts to `alerts_path`.
    pub fn new(alerts_path: impl Into<PathBuf>) -> Self {
        ExfilConfig {
            alerts_path: alerts_path.into(),
            queue_capacity: default_queue_capacity(),
            max_principals: default_max_principals(),
            sample_patient_ids: default_sample_patient_ids(),
            distinct_patients: DistinctPatientsConfig::default(),
            bulk_paging: BulkPagingConfig::default(),
            id_enumeration: IdEnumerationConfig::default(),
            rate_denials: RateDenialsConfig::default(),
            restricted_records: RestrictedRecordsConfig::default(),
            bulk_exports: BulkExportsConfig::default(),
            policy_alerts: PolicyAlertsConfig::default(),
            off_hours: OffHoursConfig::default(),
            shared: None,
            webhook: None,
        }
    }

    /// Validates the section, opens (creates) the alerts file and returns the stage. The alert
    /// writer is the stage's [`background task`](phigate_plugin::Stage::background_tasks): until
    /// the gateway spawns it, alerts queue up (bounded). With `shared`, a second background task
    /// keeps the Redis connection (it never connects before it is spawned).
    ///
    /// Opens files (alerts, HMAC key, TLS material and, for `rediss://` without `tls.ca_path`, the
    /// system's trusted roots): call it from start-up code, not from an async worker.
    ///
    /// # Errors
    /// Every problem in the section at once (never echoing values), or the alerts file not
    /// openable for appending.
    pub fn build(self, ctx: &StageBuildCtx<'_>) -> Result<ExfilStage, Vec<ConfigIssue>> {
        self.build_with_clock(ctx, Arc::new(SystemClock))
    }

    /// [`build`](Self::build) with an injected clock (tests and benchmarks move time by hand).
    ///
    /// # Errors
    /// As [`build`](Self::build).
    pub fn build_with_clock(
        self,
        ctx: &StageBuildCtx<'_>,
        clock: Arc<dyn Clock>,
    ) -> Result<ExfilStage, Vec<ConfigIssue>> {
        let mut issues = self.issues();
        let shared = self.shared.as_ref().and_then(|s| s.settings(ctx.config_dir, &mut issues));
        let webhook = phigate_shipper::build_optional(
            self.webhook.as_ref(),
            ctx.config_dir,
            ("webhook", "exfil webhook"),
            crate::metrics::webhook,
            &mut issues,
        );
        if !issues.is_empty() {
            return Err(issues);
        }
        let path = resolve(ctx.config_dir, &self.alerts_path);
        let file = writer::open_alerts_file(&path)
            .map_err(|e| vec![ConfigIssue::new("alerts_path", format!("cannot open for appending: {e}"))])?;
        let sizes = (self.queue_capacity, self.max_principals);
        Ok(ExfilStage::new(self.rules(), sizes, (file, path), shared, clock).with_webhook(webhook))
    }

    fn issues(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let mut bad = |k: &str, m: &str| issues.push(ConfigIssue::new(k, m));
        if !(1..=1 << 20).contains(&self.queue_capacity) {
            bad("queue_capacity", "must be between 1 and 1048576");
        }
        if !(1..=10_000_000).contains(&self.max_principals) {
            bad("max_principals", "must be between 1 and 10000000");
        }
        if self.sample_patient_ids > 20 {
            bad("sample_patient_ids", "must be between 0 and 20");
        }
        let d = &self.distinct_patients;
        let p = &self.bulk_paging;
        let e = &self.id_enumeration;
        let r = &self.rate_denials;
        let l = &self.restricted_records;
        let x = &self.bulk_exports;
        for (name, enabled, threshold, max, window, block) in [
            ("distinct_patients", d.enabled, d.threshold, 100_000, d.window_secs, d.block_secs),
            ("bulk_paging", p.enabled, p.threshold, u64::from(u32::MAX), p.window_secs, p.block_secs),
            ("id_enumeration", e.enabled, e.threshold, 1_000_000, e.window_secs, e.block_secs),
            ("rate_denials", r.enabled, r.threshold, 1_000_000, r.window_secs, r.block_secs),
            ("restricted_records", l.enabled, l.threshold, 1_000_000, l.window_secs, l.block_secs),
            ("bulk_exports", x.enabled, x.threshold, 1_000_000, x.window_secs, x.block_secs),
        ] {
            if !enabled {
                continue;
            }
            if !(1..=max).contains(&threshold) {
                bad(&format!("{name}.threshold"), &format!("must be between 1 and {max}"));
            }
            if !(1..=MAX_SECS).contains(&window) {
                bad(&format!("{name}.window_secs"), "must be between 1 and 604800");
            }
            if !(1..=MAX_SECS).contains(&block) {
                bad(&format!("{name}.block_secs"), "must be between 1 and 604800");
            }
        }
        if self.policy_alerts.window_secs > MAX_SECS {
            bad("policy_alerts.window_secs", "must be between 0 and 604800");
        }
        let o = &self.off_hours;
        if o.enabled {
            if let Err((key, message)) = crate::hours::Schedules::parse(o) {
                bad(&format!("off_hours.{key}"), message);
            }
            if !(1..=MAX_SECS).contains(&o.window_secs) {
                bad("off_hours.window_secs", "must be between 1 and 604800");
            }
            if !(1..=MAX_SECS).contains(&o.block_secs) {
                bad("off_hours.block_secs", "must be between 1 and 604800");
            }
        }
        issues
    }

    fn rules(&self) -> Rules {
        let rule = |enabled: bool, threshold: u64, window: u64, action: Action, block: u64| {
            enabled.then(|| Rule {
                threshold,
                window: Duration::from_secs(window),
                action,
                block: Duration::from_secs(block),
            })
        };
        let (d, p, e, r) =
            (&self.distinct_patients, &self.bulk_paging, &self.id_enumeration, &self.rate_denials);
        Rules {
            distinct: rule(d.enabled, d.threshold, d.window_secs, d.action, d.block_secs),
            count_response_patients: d.count_response_patients,
            paging: rule(p.enabled, p.threshold, p.window_secs, p.action, p.block_secs),
            measure: p.measure,
            probes: rule(e.enabled, e.threshold, e.window_secs, e.action, e.block_secs),
            count_sequential: e.count_sequential,
            denials: rule(r.enabled, r.threshold, r.window_secs, r.action, r.block_secs),
            restricted: {
                let l = &self.restricted_records;
                rule(l.enabled, l.threshold, l.window_secs, l.action, l.block_secs)
            },
            exports: {
                let x = &self.bulk_exports;
                rule(x.enabled, x.threshold, x.window_secs, x.action, x.block_secs)
            },
            policy: self.policy_alerts.enabled.then(|| Duration::from_secs(self.policy_alerts.window_secs)),
            off_hours: self
                .off_hours
                .enabled
                .then(|| crate::hours::Schedules::parse(&self.off_hours).ok())
                .flatten()
                .map(|hours| {
                    let o = &self.off_hours;
                    crate::rules::OffHoursRule {
                        rule: Rule {
                            threshold: 0,
                            window: Duration::from_secs(o.window_secs),
                            action: o.action,
                            block: Duration::from_secs(o.block_secs),
                        },
                        hours,
                        exempt_roles: o.exempt_roles.clone(),
                    }
                }),
            samples: self.sample_patient_ids,
        }
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}
