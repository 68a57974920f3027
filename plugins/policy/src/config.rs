//! `policy:` config section: typed, documented, validated all at once by [`PolicyConfig::build`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use phigate_plugin::{ConfigIssue, StageBuildCtx};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::revision::GatewaySettings;
use crate::stage::{PolicyStage, ShadowSettings, StageSettings};

/// Authorization by Rego policies (regorus): tenant isolation, patient access, SMART scopes,
/// break-glass, bulk-export rules; search narrowing and response verification.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Directory holding the `.rego` policies and their `*_test.rego` tests (searched
    /// recursively; hidden entries skipped). Relative to the config file's directory. Required.
    pub dir: PathBuf,
    /// Directory of data documents (`.json`, `.yaml`, `.yml`, each an object merged into `data`).
    /// Relative to the config file's directory. Default: `<dir>/data`.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// The rule whose value is the decision `{allow, reasons, obligations}`.
    /// Default: `data.phigate.authz.decision`.
    #[serde(default = "default_entrypoint")]
    pub entrypoint: String,
    /// Longest one evaluation may run, in milliseconds (regorus execution timer); a slower
    /// evaluation is denied with `policy_error`. Default: 50. Range 1..=10000.
    #[serde(default = "default_max_eval_ms")]
    pub max_eval_ms: u64,
    /// The role that may use break-glass access (exposed to policies as
    /// `data.gateway.break_glass_role`). Default: `break_glass`.
    #[serde(default = "default_break_glass_role")]
    pub break_glass_role: String,
    /// Longest accepted `X-Break-Glass-Reason` header, in bytes; an empty, longer or non-text
    /// reason is refused with `break_glass_not_permitted`. Default: 256.
    #[serde(default = "default_max_break_glass_reason_bytes")]
    pub max_break_glass_reason_bytes: usize,
    /// Most patients a narrowed search may name; a larger permitted set refuses the search
    /// (`policy_denied`) instead of forwarding an enormous query. Default: 100.
    #[serde(default = "default_max_narrow_patients")]
    pub max_narrow_patients: usize,
    /// A search asking for more than the decision's `max_page_size` (`_count`): `clamp` lowers
    /// `_count` to the maximum (the client pages on), `refuse` answers 400 `page_size_exceeded`.
    /// A search without `_count` always gains `_count=<max>`. Default: clamp.
    #[serde(default)]
    pub oversized_page: crate::page::OversizedPage,
    /// While a principal has security labels withheld, remove the `total` and the `last` paging
    /// link of every Bundle answered (search and history results, `_summary=count` too), and the
    /// `count` of a bulk export manifest's files: a count includes the labelled records left out, so it would tell that a patient has, say, a
    /// psychiatry note (HAPI's consent service suppresses totals for the same reason). Set false
    /// only if the upstream already leaves such records out of its counts. Default: true.
    #[serde(default = "default_true")]
    pub hide_counts: bool,
    /// Whether a search result that lost entries for their security labels says so: `outcome`
    /// adds an `OperationOutcome` entry (issue `suppressed`) saying some results were withheld,
    /// not which or how many (the clinician knows the record is incomplete and can ask for
    /// break-glass, and learns that this page had such a record); `silent` only leaves them
    /// out, and answers a read of such a record (a version of it, its history, a write to it)
    /// 404 `resource_not_found` as if it did not exist (the audit keeps
    /// `security_label_not_permitted`; with `hide_counts`, nothing then tells that anything is
    /// missing). Default: outcome.
    #[serde(default)]
    pub withheld_notice: crate::labels::WithheldNotice,
    /// Run the revision's own `*_test.rego` tests before serving it, at start and on every
    /// reload; a revision that fails them is rejected. Default: true.
    #[serde(default = "default_true")]
    pub test_on_reload: bool,
    /// Watch `dir` and `data_dir` and reload on change (SIGHUP reloads too). Default: true.
    #[serde(default = "default_true")]
    pub watch: bool,
    /// Optional decision cache. Default: off.
    #[serde(default)]
    pub decision_cache: DecisionCacheConfig,
    /// A candidate policy evaluated beside the active one on every request and never enforced,
    /// to see what a rollout would change on real traffic before it happens (like Envoy's RBAC
    /// shadow rules). Default: none.
    #[serde(default)]
    pub shadow: Option<ShadowConfig>,
}

/// A shadow policy: loaded, tested and hot-reloaded like the active one (a broken shadow
/// revision is rejected and the previous one keeps being compared), evaluated on the same input
/// after the active decision, and compared with it. Its decisions only count
/// (`phigate_policy_shadow_decisions_total{outcome}`: `agree`, `would_allow`, `would_deny`,
/// `would_differ` for the same verdict with another error code or other obligations, `error`),
/// go into each access's audit record (`decision.shadow`: revision, outcome, verdict, and what
/// differs by name; `phigate audit report --shadow would_deny` lists what the candidate would
/// refuse) and each disagreement is logged with the request id, route, FHIR interaction and
/// type, both verdicts and reasons, and what differs (target `phigate::policy::shadow`; never
/// patients, claims or obligation values).
/// Costs one more evaluation per request while configured.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// Directory of the candidate `.rego` policies and their tests. Relative to the config file's
    /// directory. Required.
    pub dir: PathBuf,
    /// Its data documents. Default: `<dir>/data`.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Its decision rule. Default: the active policy's `entrypoint`.
    #[serde(default)]
    pub entrypoint: Option<String>,
}

/// Decision cache: decisions keyed by the whole decision-relevant input (everything but `time`).
/// Only for policies that do not read `input.time`. Emptied on every revision swap.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionCacheConfig {
    /// Whether the cache is used. Default: false.
    #[serde(default)]
    pub enabled: bool,
    /// How long a decision is reused, in seconds. Default: 5.
    #[serde(default = "default_cache_ttl_secs")]
    pub ttl_secs: u64,
    /// Most decisions kept. Default: 10000.
    #[serde(default = "default_cache_max_entries")]
    pub max_entries: u64,
}

impl Default for DecisionCacheConfig {
    fn default() -> Self {
        DecisionCacheConfig {
            enabled: false,
            ttl_secs: default_cache_ttl_secs(),
            max_entries: default_cache_max_entries(),
        }
    }
}

fn default_entrypoint() -> String {
    crate::DEFAULT_ENTRYPOINT.into()
}
fn default_max_eval_ms() -> u64 {
    50
}
pub(crate) fn default_break_glass_role() -> String {
    "break_glass".into()
}
fn default_max_break_glass_reason_bytes() -> usize {
    256
}
fn default_max_narrow_patients() -> usize {
    100
}
fn default_true() -> bool {
    true
}
fn default_cache_ttl_secs() -> u64 {
    5
}
fn default_cache_max_entries() -> u64 {
    10_000
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

impl PolicyConfig {
    /// A config with every default, for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PolicyConfig {
            dir: dir.into(),
            data_dir: None,
            entrypoint: default_entrypoint(),
            max_eval_ms: default_max_eval_ms(),
            break_glass_role: default_break_glass_role(),
            max_break_glass_reason_bytes: default_max_break_glass_reason_bytes(),
            max_narrow_patients: default_max_narrow_patients(),
            oversized_page: crate::page::OversizedPage::default(),
            hide_counts: true,
            withheld_notice: crate::labels::WithheldNotice::default(),
            test_on_reload: true,
            watch: true,
            decision_cache: DecisionCacheConfig::default(),
            shadow: None,
        }
    }

    fn issues(&self, dir: &Path, config_dir: &Path) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let mut bad = |k: &str, m: &str| issues.push(ConfigIssue::new(k, m));
        if !dir.is_dir() {
            bad("dir", "is not a readable directory");
        }
        let rule_path = |e: &str| e.starts_with("data.") && e.len() >= 6;
        if !rule_path(&self.entrypoint) {
            bad("entrypoint", "must be a rule path starting with `data.`");
        }
        if let Some(shadow) = &self.shadow {
            if !resolve(config_dir, &shadow.dir).is_dir() {
                bad("shadow.dir", "is not a readable directory");
            }
            if shadow.entrypoint.as_deref().is_some_and(|e| !rule_path(e)) {
                bad("shadow.entrypoint", "must be a rule path starting with `data.`");
            }
        }
        if !(1..=10_000).contains(&self.max_eval_ms) {
            bad("max_eval_ms", "must be between 1 and 10000");
        }
        if self.break_glass_role.trim().is_empty() {
            bad("break_glass_role", "must not be empty");
        }
        if !(1..=4096).contains(&self.max_break_glass_reason_bytes) {
            bad("max_break_glass_reason_bytes", "must be between 1 and 4096");
        }
        if self.max_narrow_patients == 0 {
            bad("max_narrow_patients", "must be at least 1");
        }
        let c = &self.decision_cache;
        if c.enabled && !(1..=3600).contains(&c.ttl_secs) {
            bad("decision_cache.ttl_secs", "must be between 1 and 3600");
        }
        if c.enabled && c.max_entries == 0 {
            bad("decision_cache.max_entries", "must be at least 1");
        }
        issues
    }

    /// Validates the section, loads and tests the first revision, and returns the stage.
    ///
    /// # Errors
    /// Every config problem at once; a policy that fails to load or fails its tests is reported
    /// on `dir` with the loader's message (file names and Rego positions only).
    pub fn build(self, ctx: &StageBuildCtx<'_>) -> Result<PolicyStage, Vec<ConfigIssue>> {
        let dir = resolve(ctx.config_dir, &self.dir);
        let issues = self.issues(&dir, ctx.config_dir);
        if !issues.is_empty() {
            return Err(issues);
        }
        let data_dir =
            self.data_dir.as_deref().map_or_else(|| dir.join("data"), |d| resolve(ctx.config_dir, d));
        let shadow = self.shadow.map(|s| {
            let dir = resolve(ctx.config_dir, &s.dir);
            ShadowSettings {
                data_dir: s
                    .data_dir
                    .as_deref()
                    .map_or_else(|| dir.join("data"), |d| resolve(ctx.config_dir, d)),
                dir,
                entrypoint: s.entrypoint.unwrap_or_else(|| self.entrypoint.clone()),
            }
        });
        let settings = StageSettings {
            dir,
            data_dir,
            entrypoint: self.entrypoint,
            max_eval: Duration::from_millis(self.max_eval_ms),
            gateway: GatewaySettings { break_glass_role: self.break_glass_role },
            max_reason_bytes: self.max_break_glass_reason_bytes,
            max_narrow_patients: self.max_narrow_patients,
            oversized_page: self.oversized_page,
            hide_counts: self.hide_counts,
            withheld_notice: self.withheld_notice,
            test_on_reload: self.test_on_reload,
            watch: self.watch,
            cache: self.decision_cache.enabled.then(|| {
                (Duration::from_secs(self.decision_cache.ttl_secs), self.decision_cache.max_entries)
            }),
            shadow,
        };
        PolicyStage::new(settings).map_err(|(key, e)| vec![ConfigIssue::new(key, e.to_string())])
    }
}
