//! Error types of the policy stage. Messages name files and Rego positions, never request data.

use thiserror::Error;

/// Why a policy revision could not be loaded. The old revision keeps serving.
#[derive(Debug, Error)]
pub enum LoadError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path, relative to the policy directory where possible.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A data file is not valid JSON or YAML.
    #[error("invalid data file {path}: {message}")]
    Data {
        /// The data file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A Rego file did not parse, or the modules do not compile together.
    #[error("rego: {0}")]
    Rego(String),
    /// The entrypoint did not produce a decision object for a probe input.
    #[error("entrypoint {entrypoint} did not produce a decision: {message}")]
    Entrypoint {
        /// The configured entrypoint.
        entrypoint: String,
        /// What was wrong.
        message: String,
    },
    /// The revision's own `*_test.rego` tests failed.
    #[error("{failed} of {total} policy tests failed (first: {first})")]
    TestsFailed {
        /// Failed test count.
        failed: usize,
        /// Total test count.
        total: usize,
        /// The first failing test, `package.rule`.
        first: String,
    },
    /// The bytecode VM and the reference interpreter decide a probe input differently (see
    /// `probes.json`): the policy triggers an engine defect, so the revision is not served.
    #[error("the bytecode VM and the interpreter disagree on probe `{probe}` (probes.json): rewrite the rule it exercises")]
    Disagreement {
        /// The probe's name in `probes.json`.
        probe: String,
    },
    /// The directory holds no `.rego` file.
    #[error("no .rego policy found")]
    Empty,
}

impl LoadError {
    /// A fixed reason class for the audit trail: which check refused the revision, without the
    /// message (it can quote policy source or data).
    pub fn class(&self) -> &'static str {
        match self {
            LoadError::Io { .. } => "unreadable",
            LoadError::Data { .. } => "invalid_data",
            LoadError::Rego(_) => "rego",
            LoadError::Entrypoint { .. } => "entrypoint",
            LoadError::TestsFailed { .. } => "tests_failed",
            LoadError::Disagreement { .. } => "engine_disagreement",
            LoadError::Empty => "no_policy",
        }
    }
}

/// Why one evaluation produced no decision. Every variant denies with `policy_error`.
#[derive(Debug, Error)]
pub enum EvalError {
    /// Evaluation exceeded the configured time limit.
    #[error("evaluation exceeded its time limit")]
    Timeout,
    /// The policy raised an error (conflicting rule values, builtin errors, ...).
    #[error("evaluation failed: {0}")]
    Rego(String),
    /// The entrypoint's value is not a well-formed decision.
    #[error("malformed decision: {0}")]
    Output(&'static str),
}

impl EvalError {
    /// A bounded label for metrics.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            EvalError::Timeout => "timeout",
            EvalError::Rego(_) => "eval",
            EvalError::Output(_) => "output",
        }
    }
}
