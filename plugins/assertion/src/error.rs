//! Errors of the assertion stage. None of them carries key material or request data.

use std::path::PathBuf;

use thiserror::Error;

/// Why a key file could not be used.
#[derive(Debug, Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a key of an accepted kind.
    #[error("{path}: {what}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the file's content).
        what: &'static str,
    },
}

impl KeyError {
    /// The problem without the path, for a config issue (whose key path names the file).
    pub(crate) fn reason(&self) -> String {
        match self {
            KeyError::Io { source, .. } => format!("cannot read the key file: {source}"),
            KeyError::Format { what, .. } => (*what).to_owned(),
        }
    }
}

/// Why an assertion could not be signed.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum SignError {
    /// The token expires now or earlier: an assertion may not outlive it, so none is made.
    #[error("the token has expired")]
    TokenExpired,
    /// The signing primitive failed (ECDSA's random source).
    #[error("signing failed")]
    Crypto,
}
