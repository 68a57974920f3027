//! Config errors: one line per problem, `FILE:LINE: KEY.PATH: message`.
//!
//! A config file holds secrets (key paths, sometimes tokens pasted by mistake), and `phigate check`
//! output ends up in CI logs and tickets, so no message here ever carries a configured value: the
//! file, the line and the key path are enough to find it.

use std::fmt;
use std::path::PathBuf;

/// One problem in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// The 1-based line of the offending key, when known.
    pub line: Option<usize>,
    /// The key path, like `routes[2].upstream`; empty for a problem with the whole file.
    pub key_path: String,
    /// What is wrong. Never contains the configured value.
    pub message: String,
}

impl ConfigError {
    /// A new error.
    pub fn new(
        file: impl Into<PathBuf>,
        line: Option<usize>,
        key_path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError { file: file.into(), line, key_path: key_path.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key_path.is_empty() {
            write!(f, ": {}", self.key_path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a config file, in file order where lines are known.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// A list holding one error.
    pub fn one(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }

    /// The errors.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }

    /// Whether no error was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when empty, else `Err(self)` with the errors sorted by line (errors without a
    /// line last), keeping the order of discovery among equals.
    pub fn into_result(mut self) -> Result<(), ConfigErrors> {
        if self.0.is_empty() {
            return Ok(());
        }
        self.0.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        Err(self)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors::one(error)
    }
}
