//! `phigate policy eval --input FILE`: one decision for a hand-written input, outside the gateway.

use std::path::Path;
use std::time::Duration;

use regorus::Value;
use thiserror::Error;

use crate::error::{EvalError, LoadError};
use crate::revision::{GatewaySettings, Revision, Sources};
use crate::{decision, DEFAULT_ENTRYPOINT};

/// Why [`eval_input`] produced no decision.
#[derive(Debug, Error)]
pub enum EvalInputError {
    /// The policies did not load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The input is not a JSON document.
    #[error("input is not valid JSON: {0}")]
    Input(String),
    /// The policy failed on this input (the gateway would answer `policy_error`).
    #[error(transparent)]
    Eval(#[from] EvalError),
}

/// Evaluates `data.phigate.authz.decision` of the policies in `dir` (data from `dir/data`) for
/// `input_json` (an input document, see `policies/README.md`). Returns
/// `{"revision", "decision": <the policy's value>, "code": <error code when denied, else null>,
/// "withheld_labels": <the security labels the gateway would withhold, else null>}`.
///
/// # Errors
/// Load, input and evaluation errors, with the engine's full message (this is the operator's
/// own input, not live traffic).
pub fn eval_input(dir: &Path, input_json: &str) -> Result<serde_json::Value, EvalInputError> {
    let revision = load(dir)?;
    let input = Value::from_json_str(input_json).map_err(|e| EvalInputError::Input(e.to_string()))?;
    let out = revision.evaluate(input)?;
    let parsed = decision::parse(&out, &revision)?;
    let code = (!parsed.allow).then(|| decision::deny_code(&parsed.reasons).as_str());
    let raw: serde_json::Value =
        serde_json::from_str(&out.to_json_str().map_err(|e| EvalError::Rego(e.to_string()))?)
            .map_err(|e| EvalError::Rego(e.to_string()))?;
    Ok(serde_json::json!({
        "revision": &*revision.id,
        "decision": raw,
        "code": code,
        "withheld_labels": parsed.obligations.withheld_labels.as_deref(),
    }))
}

/// The policies of `dir` with the data in `dir/data`, as the tools evaluate them (gateway
/// defaults, the default entrypoint, a generous time limit).
fn load(dir: &Path) -> Result<Revision, LoadError> {
    let settings = GatewaySettings::default();
    let sources = Sources::read(dir, &dir.join("data"), &settings)?;
    Revision::compile(&sources, &settings, DEFAULT_ENTRYPOINT, Duration::from_secs(5))
}

/// One input on which two policy directories decide differently (see [`diff_inputs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The input's name (its key in the corpus object, or `line N` in JSON Lines).
    pub name: String,
    /// `would_allow`, `would_deny` or `would_differ` (same verdict, another code or other
    /// obligations), as the shadow policy counts them; `error` when only one side failed.
    pub outcome: &'static str,
    /// What the first directory decided: `allow`, the error code of a denial, or `error`.
    pub from: String,
    /// What the second directory decided.
    pub to: String,
}

/// The result of [`diff_inputs`].
#[derive(Debug, Clone, Default)]
pub struct DiffReport {
    /// Both revisions (content hashes).
    pub revisions: (String, String),
    /// Inputs compared.
    pub inputs: usize,
    /// Inputs decided alike.
    pub agree: usize,
    /// The others, in corpus order.
    pub differences: Vec<Difference>,
}

impl std::fmt::Display for DiffReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for d in &self.differences {
            writeln!(f, "DIFF {} {}: {} -> {}", d.outcome, d.name, d.from, d.to)?;
        }
        write!(
            f,
            "{} -> {}: {} inputs, {} decided alike, {} differently",
            self.revisions.0,
            self.revisions.1,
            self.inputs,
            self.agree,
            self.differences.len()
        )
    }
}

/// Named inputs from a corpus: a JSON object `{name: input}` (the `probes.json` shape) or JSON
/// Lines (one input per line, named `line N`).
fn corpus(text: &str) -> Result<Vec<(String, String)>, EvalInputError> {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text) {
        let named_inputs = map.values().all(serde_json::Value::is_object) && !map.contains_key("v");
        if named_inputs {
            return Ok(map.into_iter().map(|(k, v)| (k, v.to_string())).collect());
        }
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line)
            .map_err(|e| EvalInputError::Input(format!("line {}: {e}", i + 1)))?;
        out.push((format!("line {}", i + 1), line.to_owned()));
    }
    Ok(out)
}

/// Decides every input of `corpus_text` with the policies of `from` and of `to` (data from each
/// directory's `data/`) and lists the inputs decided differently: what a change to the policies
/// or their data would change, before it is rolled out (`phigate policy diff`).
///
/// # Errors
/// Either directory failing to load, or a corpus that is neither a JSON object of inputs nor
/// JSON Lines.
pub fn diff_inputs(from: &Path, to: &Path, corpus_text: &str) -> Result<DiffReport, EvalInputError> {
    let (a, b) = (load(from)?, load(to)?);
    let inputs = corpus(corpus_text)?;
    let decide = |rev: &Revision, input: &str| -> Result<phigate_plugin::Decision, String> {
        let value = Value::from_json_str(input).map_err(|e| e.to_string())?;
        let out = rev.evaluate(value).map_err(|e| e.to_string())?;
        decision::parse(&out, rev).map_err(|e| e.to_string())
    };
    let verdict = |d: &Result<phigate_plugin::Decision, String>| match d {
        Ok(d) if d.allow => "allow".to_owned(),
        Ok(d) => decision::deny_code(&d.reasons).as_str().to_owned(),
        Err(_) => "error".to_owned(),
    };
    let mut report = DiffReport { revisions: (a.id.to_string(), b.id.to_string()), ..DiffReport::default() };
    for (name, input) in inputs {
        report.inputs += 1;
        let (x, y) = (decide(&a, &input), decide(&b, &input));
        let outcome = match (&x, &y) {
            (Ok(x), Ok(y)) => crate::shadow::compare(x, y).as_str(),
            (Err(_), Err(_)) => "agree",
            _ => "error",
        };
        if outcome == "agree" {
            report.agree += 1;
        } else {
            report.differences.push(Difference { name, outcome, from: verdict(&x), to: verdict(&y) });
        }
    }
    Ok(report)
}
