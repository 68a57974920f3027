//! The detector sub-sections of `exfil:`. Each has the same core (`enabled`, `threshold`,
//! `window_secs`, `action`, `block_secs`) plus its own options; they are separate structs so that
//! an option put under the wrong detector is an error, not silently ignored.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// What a detector does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Write an alert line and count it; the principal keeps access.
    Alert,
    /// Write the alert and refuse the principal's later requests with 403 `principal_blocked`
    /// for `block_secs`.
    Block,
}

impl Action {
    /// The label used in alerts and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Alert => "alert",
            Action::Block => "block",
        }
    }
}

/// What `bulk_paging` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PagingMeasure {
    /// Bundle entries returned (`Bundle.entry` counted by the gateway on the response path);
    /// responses whose entries were not counted add nothing.
    Entries,
    /// Successful search, history and operation responses: one per page fetched.
    Pages,
}

macro_rules! core_defaults {
    ($($f:ident = $v:expr;)*) => { $(fn $f() -> u64 { $v })* };
}
core_defaults! {
    default_distinct_threshold = 50;
    default_distinct_window_secs = 3600;
    default_paging_threshold = 5000;
    default_paging_window_secs = 600;
    default_probe_threshold = 20;
    default_probe_window_secs = 300;
    default_denial_threshold = 30;
    default_denial_window_secs = 60;
    default_restricted_threshold = 20;
    default_restricted_window_secs = 3600;
    default_exports_threshold = 3;
    default_exports_window_secs = 86_400;
    default_block_secs = 900;
    default_policy_window_secs = 300;
}
fn default_true() -> bool {
    true
}
fn default_action() -> Action {
    Action::Alert
}
fn default_measure() -> PagingMeasure {
    PagingMeasure::Entries
}

/// One principal touching more distinct patients than a clinician plausibly treats: the classic
/// "browsing the records of people you do not care for" (HIPAA minimum necessary).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DistinctPatientsConfig {
    /// Whether the detector runs. Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Most distinct patients one principal may touch within the window; the next one fires.
    /// Default: 50. Range 1..=100000 (memory per principal grows with it).
    #[serde(default = "default_distinct_threshold")]
    pub threshold: u64,
    /// Length of the sliding window, in seconds. Default: 3600.
    #[serde(default = "default_distinct_window_secs")]
    pub window_secs: u64,
    /// `alert` or `block`. Default: `alert`.
    #[serde(default = "default_action")]
    pub action: Action,
    /// How long `action: block` refuses the principal, in seconds. Default: 900.
    #[serde(default = "default_block_secs")]
    pub block_secs: u64,
    /// Also count the patients a response actually contained, when the body was inspected by
    /// another stage (response verification). Default: true.
    #[serde(default = "default_true")]
    pub count_response_patients: bool,
}

/// A principal paging through everything: more Bundle entries (or search pages) than the window
/// allows.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkPagingConfig {
    /// Whether the detector runs. Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Most entries (or pages, see `measure`) within the window; more fires. Default: 5000.
    #[serde(default = "default_paging_threshold")]
    pub threshold: u64,
    /// Length of the sliding window, in seconds. Default: 600.
    #[serde(default = "default_paging_window_secs")]
    pub window_secs: u64,
    /// `alert` or `block`. Default: `alert`.
    #[serde(default = "default_action")]
    pub action: Action,
    /// How long `action: block` refuses the principal, in seconds. Default: 900.
    #[serde(default = "default_block_secs")]
    pub block_secs: u64,
    /// `entries` (Bundle entries returned) or `pages` (search responses). Default: `entries`.
    #[serde(default = "default_measure")]
    pub measure: PagingMeasure,
}

/// Probing for ids: reads by id that answer 404, 403 or 410, and reads of numerically adjacent
/// ids (`Patient/1001`, `Patient/1002`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdEnumerationConfig {
    /// Whether the detector runs. Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Most probes within the window; the next one fires. Default: 20.
    #[serde(default = "default_probe_threshold")]
    pub threshold: u64,
    /// Length of the sliding window, in seconds. Default: 300.
    #[serde(default = "default_probe_window_secs")]
    pub window_secs: u64,
    /// `alert` or `block`. Default: `alert`.
    #[serde(default = "default_action")]
    pub action: Action,
    /// How long `action: block` refuses the principal, in seconds. Default: 900.
    #[serde(default = "default_block_secs")]
    pub block_secs: u64,
    /// Also count a read whose numeric id is one more or one less than the principal's previous
    /// read (sequential walking), whatever its status. Default: true.
    #[serde(default = "default_true")]
    pub count_sequential: bool,
}

/// Denial storms: a principal collecting 429 and 403 answers (probing policy or limits).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateDenialsConfig {
    /// Whether the detector runs. Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Most 429/403 answers within the window; the next one fires. Answers to an already blocked
    /// principal (`principal_blocked`) are not counted. Default: 30.
    #[serde(default = "default_denial_threshold")]
    pub threshold: u64,
    /// Length of the sliding window, in seconds. Default: 60.
    #[serde(default = "default_denial_window_secs")]
    pub window_secs: u64,
    /// `alert` or `block`. Default: `alert`.
    #[serde(default = "default_action")]
    pub action: Action,
    /// How long `action: block` refuses the principal, in seconds. Default: 900.
    #[serde(default = "default_block_secs")]
    pub block_secs: u64,
}

/// Records withheld for their security labels: a principal collecting search entries left out
/// and reads refused (`security_label_not_permitted`) because of labels it is not cleared for
/// (psychiatry, substance use, a restricted chart) is opening records it should not.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestrictedRecordsConfig {
    /// Whether the detector runs. Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Most withheld records within the window (each search entry left out, each refused read or
    /// write); the next one fires. Default: 20.
    #[serde(default = "default_restricted_threshold")]
    pub threshold: u64,
    /// Length of the sliding window, in seconds. Default: 3600.
    #[serde(default = "default_restricted_window_secs")]
    pub window_secs: u64,
    /// `alert` or `block`. Default: `alert`.
    #[serde(default = "default_action")]
    pub action: Action,
    /// How long `action: block` refuses the principal, in seconds. Default: 900.
    #[serde(default = "default_block_secs")]
    pub block_secs: u64,
}

/// Bulk exports started: a backend service starting export after export (FHIR `$export`, each
/// a copy of a whole tenant's or group's records) is the largest exfiltration there is, even
/// when each one is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkExportsConfig {
    /// Whether the detector runs. Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Most exports started (kick-offs the upstream accepted, 202) within the window; the next
    /// one fires. Default: 3.
    #[serde(default = "default_exports_threshold")]
    pub threshold: u64,
    /// Length of the sliding window, in seconds. Default: 86400 (a day).
    #[serde(default = "default_exports_window_secs")]
    pub window_secs: u64,
    /// `alert` or `block`. Default: `alert`.
    #[serde(default = "default_action")]
    pub action: Action,
    /// How long `action: block` refuses the principal, in seconds. Default: 900.
    #[serde(default = "default_block_secs")]
    pub block_secs: u64,
}

/// Alerts the policy asks for (`obligations.alert`, for example `break_glass_access`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyAlertsConfig {
    /// Whether policy-requested alerts are written. Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// One alert per principal and alert name within this many seconds; 0 writes one per
    /// request. Default: 300.
    #[serde(default = "default_policy_window_secs")]
    pub window_secs: u64,
}

fn default_off_hours_zone() -> String {
    "UTC".into()
}
fn default_work_start() -> String {
    "07:00".into()
}
fn default_work_end() -> String {
    "19:00".into()
}
fn default_work_days() -> Vec<String> {
    ["mon", "tue", "wed", "thu", "fri"].map(str::to_owned).to_vec()
}
fn default_off_hours_window_secs() -> u64 {
    3600
}

/// Patient data reached outside working hours: an account used at 3 a.m. on a Sunday is a
/// classic sign of stolen credentials or of an insider browsing unobserved. Off by default
/// (hours are the site's); staff who work nights are listed in `exempt_roles`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OffHoursConfig {
    /// Whether the detector runs. Default: false.
    #[serde(default)]
    pub enabled: bool,
    /// IANA time zone the hours are in (`America/Chicago`, `Europe/Berlin`), daylight saving
    /// included; from the system's tz database, else a copy built in. Default: `UTC`.
    #[serde(default = "default_off_hours_zone")]
    pub time_zone: String,
    /// Start of working hours, `HH:MM` local time. Default: `07:00`.
    #[serde(default = "default_work_start")]
    pub start: String,
    /// End of working hours (exclusive), `HH:MM` local time; earlier than `start` for a span
    /// across midnight (`22:00` to `06:00`: the day the span starts on must be a working day).
    /// Default: `19:00`.
    #[serde(default = "default_work_end")]
    pub end: String,
    /// Working days (`mon` … `sun`). Default: Monday to Friday.
    #[serde(default = "default_work_days")]
    pub days: Vec<String>,
    /// Public holidays (`YYYY-MM-DD`, local dates): not working days, whatever `days` says. A
    /// night span that starts the evening before still ends as usual. Default: none.
    #[serde(default)]
    pub holidays: Vec<String>,
    /// Principals holding any of these roles are not watched (night shift, emergency
    /// department). Default: none.
    #[serde(default)]
    pub exempt_roles: Vec<String>,
    /// Working hours of particular tenants, for a gateway in front of sites in several time
    /// zones (a request is judged by the tenant it addresses, `routes[].tenant`, else by the
    /// principal's): each key is a tenant id, each value overrides any of
    /// `time_zone`, `start`, `end`, `days` and `holidays` (the rest as above). Default: none.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantHoursConfig>,
    /// One alert per principal within this many seconds. Default: 3600.
    #[serde(default = "default_off_hours_window_secs")]
    pub window_secs: u64,
    /// `alert` or `block`. Default: `alert`.
    #[serde(default = "default_action")]
    pub action: Action,
    /// How long `action: block` refuses the principal, in seconds. Default: 900.
    #[serde(default = "default_block_secs")]
    pub block_secs: u64,
}

/// One tenant's working hours (`off_hours.tenants`): what differs from the section's own.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantHoursConfig {
    /// IANA time zone of this tenant's sites.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Start of its working hours, `HH:MM` local time.
    #[serde(default)]
    pub start: Option<String>,
    /// End of its working hours (exclusive), `HH:MM` local time.
    #[serde(default)]
    pub end: Option<String>,
    /// Its working days (`mon` … `sun`).
    #[serde(default)]
    pub days: Option<Vec<String>>,
    /// Its public holidays (`YYYY-MM-DD`), in place of the section's.
    #[serde(default)]
    pub holidays: Option<Vec<String>>,
}

impl OffHoursConfig {
    /// The section's hours with `tenant`'s overrides applied.
    pub(crate) fn for_tenant(&self, tenant: &TenantHoursConfig) -> OffHoursConfig {
        let mut c = self.clone();
        c.tenants.clear();
        if let Some(z) = &tenant.time_zone {
            c.time_zone.clone_from(z);
        }
        if let Some(s) = &tenant.start {
            c.start.clone_from(s);
        }
        if let Some(e) = &tenant.end {
            c.end.clone_from(e);
        }
        if let Some(d) = &tenant.days {
            c.days.clone_from(d);
        }
        if let Some(h) = &tenant.holidays {
            c.holidays.clone_from(h);
        }
        c
    }
}

macro_rules! impl_default {
    ($($t:ty),*) => { $(impl Default for $t {
        fn default() -> Self {
            serde_json::from_value(serde_json::json!({})).unwrap_or_else(|_| unreachable!())
        }
    })* };
}
impl_default!(
    DistinctPatientsConfig,
    BulkPagingConfig,
    IdEnumerationConfig,
    RateDenialsConfig,
    RestrictedRecordsConfig,
    BulkExportsConfig,
    PolicyAlertsConfig,
    OffHoursConfig
);
