//! Policy tests the OPA way: every `test_*` rule of every `*_test.rego` must evaluate to `true`.
//! Used by `phigate policy test`, and before any revision is served.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use regorus::Engine;

use crate::error::LoadError;
use crate::revision::{GatewaySettings, Revision, Sources};

/// Longest one test rule may run.
const TEST_TIME_LIMIT: Duration = Duration::from_secs(5);

/// How one test rule ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestOutcome {
    /// The rule evaluated to `true`.
    Pass,
    /// The rule was undefined or not `true`.
    Fail,
    /// Evaluation raised an error (message included: these are the author's own test inputs).
    Error(String),
}

/// One test rule's result.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// The test file, relative to the policy directory.
    pub file: String,
    /// The rule path, like `data.phigate.tenant_test.test_cross_tenant_denied`.
    pub rule: String,
    /// The outcome.
    pub outcome: TestOutcome,
}

/// Line coverage of one policy file (test files excluded).
#[derive(Debug, Clone)]
pub struct FileCoverage {
    /// The policy file.
    pub path: String,
    /// Lines evaluated by the tests.
    pub covered: usize,
    /// Executable lines no test reached.
    pub not_covered: Vec<u32>,
}

/// The result of running a directory's policy tests.
#[derive(Debug, Clone, Default)]
pub struct TestReport {
    /// Every test rule, in file order.
    pub results: Vec<TestResult>,
    /// Coverage per policy file.
    pub coverage: Vec<FileCoverage>,
    /// The revision tested (content hash), when the files loaded.
    pub revision: Option<String>,
    /// Why the files did not load (then there are no results).
    pub load_error: Option<String>,
    /// The bytecode agreement check over `probes.json`, when the directory has one: the number
    /// of probes both engines decided alike, or why the revision would be rejected.
    pub agreement: Option<Result<usize, String>>,
}

impl TestReport {
    /// Whether the files loaded, at least one test ran and every test passed.
    pub fn success(&self) -> bool {
        self.load_error.is_none()
            && !matches!(self.agreement, Some(Err(_)))
            && !self.results.is_empty()
            && self.results.iter().all(|r| r.outcome == TestOutcome::Pass)
    }

    /// How many tests did not pass.
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| r.outcome != TestOutcome::Pass).count()
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = &self.load_error {
            return writeln!(f, "ERROR: {e}");
        }
        for r in &self.results {
            match &r.outcome {
                TestOutcome::Pass => writeln!(f, "PASS {} ({})", r.rule, r.file)?,
                TestOutcome::Fail => writeln!(f, "FAIL {} ({})", r.rule, r.file)?,
                TestOutcome::Error(e) => writeln!(f, "FAIL {} ({}): {e}", r.rule, r.file)?,
            }
        }
        let (mut cov, mut total) = (0usize, 0usize);
        writeln!(f, "coverage:")?;
        for c in &self.coverage {
            let t = c.covered + c.not_covered.len();
            (cov, total) = (cov + c.covered, total + t);
            writeln!(
                f,
                "  {:<24} {:>5.1}% ({}/{}) uncovered lines: {:?}",
                c.path,
                pct(c.covered, t),
                c.covered,
                t,
                c.not_covered
            )?;
        }
        writeln!(f, "  total {:>5.1}% ({cov}/{total})", pct(cov, total))?;
        match &self.agreement {
            Some(Ok(n)) => writeln!(f, "bytecode agreement: {n}/{n} probe inputs decided alike")?,
            Some(Err(e)) => writeln!(f, "FAIL bytecode agreement: {e}")?,
            None => writeln!(f, "bytecode agreement: no probes.json")?,
        }
        let passed = self.results.len() - self.failed();
        write!(f, "{passed}/{} tests passed", self.results.len())
    }
}

fn pct(n: usize, d: usize) -> f64 {
    if d == 0 {
        100.0
    } else {
        n as f64 * 100.0 / d as f64
    }
}

impl TestReport {
    /// Line coverage over every policy file, in percent (100 when there is nothing to cover).
    pub fn coverage_percent(&self) -> f64 {
        let covered = self.coverage.iter().map(|c| c.covered).sum();
        let total = self.coverage.iter().map(|c| c.covered + c.not_covered.len()).sum();
        pct(covered, total)
    }

    /// The report as one JSON document, for CI systems: `revision`, `results` (`rule`, `file`,
    /// `outcome` pass | fail | error, `error`), `coverage` (`files`, `percent`), `agreement`
    /// (`probes` or `error`), `passed`, `failed`, `load_error`.
    pub fn to_json(&self) -> serde_json::Value {
        let results: Vec<serde_json::Value> = self
            .results
            .iter()
            .map(|r| {
                let (outcome, error) = match &r.outcome {
                    TestOutcome::Pass => ("pass", None),
                    TestOutcome::Fail => ("fail", None),
                    TestOutcome::Error(e) => ("error", Some(e.as_str())),
                };
                serde_json::json!({"rule": r.rule, "file": r.file, "outcome": outcome, "error": error})
            })
            .collect();
        let files: Vec<serde_json::Value> = self
            .coverage
            .iter()
            .map(|c| {
                let total = c.covered + c.not_covered.len();
                serde_json::json!({"path": c.path, "covered": c.covered, "lines": total,
                    "percent": pct(c.covered, total), "uncovered_lines": c.not_covered})
            })
            .collect();
        let agreement = match &self.agreement {
            Some(Ok(n)) => serde_json::json!({"probes": n}),
            Some(Err(e)) => serde_json::json!({"error": e}),
            None => serde_json::Value::Null,
        };
        serde_json::json!({
            "revision": self.revision,
            "load_error": self.load_error,
            "results": results,
            "coverage": {"files": files, "percent": self.coverage_percent()},
            "agreement": agreement,
            "passed": self.results.len() - self.failed(),
            "failed": self.failed(),
        })
    }
}

/// Runs every `test_*` rule under `dir` (data from `dir/data`, default gateway settings).
pub fn run_policy_tests(dir: &Path) -> TestReport {
    run_policy_tests_with(dir, &dir.join("data"))
}

/// Like [`run_policy_tests`] with an explicit data directory.
pub fn run_policy_tests_with(dir: &Path, data_dir: &Path) -> TestReport {
    run_policy_tests_matching(dir, data_dir, &|_| true)
}

/// Like [`run_policy_tests_with`], running only the tests whose full rule path
/// (`data.phigate.tenant_test.test_cross_tenant_denied`) `keep` accepts; coverage is then that
/// of the tests run.
pub fn run_policy_tests_matching(dir: &Path, data_dir: &Path, keep: &dyn Fn(&str) -> bool) -> TestReport {
    let settings = GatewaySettings::default();
    let sources = match Sources::read(dir, data_dir, &settings) {
        Ok(s) => s,
        Err(e) => return TestReport { load_error: Some(e.to_string()), ..TestReport::default() },
    };
    let agreement = (!sources.probes.is_empty()).then(|| {
        Revision::compile(&sources, &settings, crate::DEFAULT_ENTRYPOINT, TEST_TIME_LIMIT)
            .map(|_| sources.probes.len())
            .map_err(|e| e.to_string())
    });
    match run(&sources, &settings, true, keep) {
        Ok((results, coverage)) => TestReport {
            results,
            coverage,
            revision: Some(sources.revision.to_string()),
            load_error: None,
            agreement,
        },
        Err(e) => TestReport { load_error: Some(e.to_string()), ..TestReport::default() },
    }
}

/// Fails unless every test of `sources` passes (the reload gate).
pub(crate) fn require_passing(sources: &Sources, settings: &GatewaySettings) -> Result<(), LoadError> {
    let (results, _) = run(sources, settings, false, &|_| true)?;
    let failed: Vec<&TestResult> = results.iter().filter(|r| r.outcome != TestOutcome::Pass).collect();
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(LoadError::TestsFailed {
            failed: failed.len(),
            total: results.len(),
            first: first.rule.clone(),
        }),
    }
}

/// The `test_*` rule names of a test module: rules start at column 0 (as `opa fmt` writes them).
fn test_rules(text: &str) -> (Option<String>, Vec<String>) {
    let mut package = None;
    let mut rules: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(p) = line.strip_prefix("package ") {
            package.get_or_insert_with(|| format!("data.{}", p.trim()));
        }
        if line.starts_with("test_") {
            let name: String = line.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !rules.contains(&name) {
                rules.push(name);
            }
        }
    }
    (package, rules)
}

fn run(
    sources: &Sources,
    settings: &GatewaySettings,
    coverage: bool,
    keep: &dyn Fn(&str) -> bool,
) -> Result<(Vec<TestResult>, Vec<FileCoverage>), LoadError> {
    let mut engine: Engine = sources.engine(settings, true)?;
    engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
        limit: TEST_TIME_LIMIT,
        check_interval: crate::revision::TIMER_CHECK_INTERVAL,
    });
    engine.set_enable_coverage(coverage);
    let mut results = Vec::new();
    for (file, text) in &sources.tests {
        let (Some(package), rules) = test_rules(text) else {
            continue;
        };
        for name in rules {
            let rule = format!("{package}.{name}");
            if !keep(&rule) {
                continue;
            }
            let outcome = match engine.eval_rule(rule.clone()) {
                Ok(regorus::Value::Bool(true)) => TestOutcome::Pass,
                Ok(_) => TestOutcome::Fail,
                Err(e) => TestOutcome::Error(e.to_string()),
            };
            results.push(TestResult { file: file.clone(), rule, outcome });
        }
    }
    let coverage = if coverage { coverage_of(&engine) } else { Vec::new() };
    Ok((results, coverage))
}

fn coverage_of(engine: &Engine) -> Vec<FileCoverage> {
    let Ok(report) = engine.get_coverage_report() else {
        return Vec::new();
    };
    report
        .files
        .into_iter()
        .filter(|f| !f.path.ends_with("_test.rego"))
        .map(|f| FileCoverage {
            path: f.path,
            covered: f.covered.len(),
            not_covered: f.not_covered.into_iter().collect(),
        })
        .collect()
}
