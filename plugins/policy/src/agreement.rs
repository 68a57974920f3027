//! Bytecode agreement: decisions are served by regorus' bytecode VM, while `phigate policy test`
//! and coverage run on its reference interpreter. The two have disagreed in ways that matter for
//! security (regorus 0.14.1: an `else` branch after one whose `some ... in` loop fails is never
//! tried; `x := data.map[missing]` does not fail the rule body, so a later `not f(x)` succeeds).
//! So before a revision is served, both engines evaluate every input of the policy directory's
//! `probes.json` and must produce the same decision; otherwise the revision is rejected and the
//! old one keeps serving. Security teams keep `probes.json` as a corpus of representative inputs.

use regorus::{Engine, Value};

use crate::error::LoadError;
use crate::revision::Revision;

/// The probe corpus file, in the policy directory: a JSON object `{name: input}`.
pub(crate) const PROBES_FILE: &str = "probes.json";

/// Longest probe name kept in an error.
const MAX_NAME: usize = 80;

/// Reads the probe corpus text into named inputs, in file order.
pub(crate) fn parse(text: &str) -> Result<Vec<(String, Value)>, LoadError> {
    let bad = |message: String| LoadError::Data { path: PROBES_FILE.to_owned(), message };
    let doc: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| bad(format!("{e} (expected an object of name: input)")))?;
    doc.into_iter()
        .map(|(name, input)| match input {
            serde_json::Value::Object(_) => Ok((name, Value::from(input))),
            _ => Err(bad(format!("probe {}: the input must be an object", clip(&name)))),
        })
        .collect()
}

/// The decision, or `None` when the engine produced none (undefined or an error).
fn outcome(r: Result<Value, impl Sized>) -> Option<Value> {
    r.ok().filter(|v| !matches!(v, Value::Undefined))
}

/// Evaluates every probe with the interpreter (`engine`, policies and data loaded) and with the
/// revision's bytecode; the first disagreement rejects the revision.
pub(crate) fn check(
    engine: &mut Engine,
    revision: &Revision,
    entrypoint: &str,
    probes: &[(String, Value)],
) -> Result<(), LoadError> {
    for (name, input) in probes {
        engine.set_input(input.clone());
        let reference = outcome(engine.eval_rule(entrypoint.to_owned()));
        let served = outcome(revision.evaluate(input.clone()));
        if reference != served {
            return Err(LoadError::Disagreement { probe: clip(name).to_owned() });
        }
    }
    Ok(())
}

fn clip(name: &str) -> &str {
    let mut end = name.len().min(MAX_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}
