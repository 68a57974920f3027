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
/// `{"revision", "decision": <the policy's value>, "code": <error code when denied, else null>}`.
///
/// # Errors
/// Load, input and evaluation errors, with the engine's full message (this is the operator's
/// own input, not live traffic).
pub fn eval_input(dir: &Path, input_json: &str) -> Result<serde_json::Value, EvalInputError> {
    let settings = GatewaySettings::default();
    let sources = Sources::read(dir, &dir.join("data"), &settings)?;
    let revision = Revision::compile(&sources, &settings, DEFAULT_ENTRYPOINT, Duration::from_secs(5))?;
    let input = Value::from_json_str(input_json).map_err(|e| EvalInputError::Input(e.to_string()))?;
    let out = revision.evaluate(input)?;
    let parsed = decision::parse(&out, &revision.id)?;
    let code = (!parsed.allow).then(|| decision::deny_code(&parsed.reasons).as_str());
    let raw: serde_json::Value =
        serde_json::from_str(&out.to_json_str().map_err(|e| EvalError::Rego(e.to_string()))?)
            .map_err(|e| EvalError::Rego(e.to_string()))?;
    Ok(serde_json::json!({
        "revision": &*revision.id,
        "decision": raw,
        "code": code,
    }))
}
