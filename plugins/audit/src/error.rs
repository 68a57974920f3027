//! Error types of the audit stage. None of them carries request data: causes name files and
//! operating-system errors only.

use std::io;
use std::path::PathBuf;

/// Why the audit sink could not make a batch durable. Each variant maps to one bounded metrics
/// label (see [`SinkError::reason`]).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The audit directory or a segment could not be created or opened.
    #[error("audit directory not writable: {path}: {source}")]
    Unwritable {
        /// The path that failed.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The disk (or the process file-size limit) is full.
    #[error("audit storage full: {0}")]
    Full(io::Error),
    /// Any other write or sync failure.
    #[error("audit write failed: {0}")]
    Io(io::Error),
    /// The segment on disk is not what the writer expects (corrupt head that cannot be recovered).
    #[error("audit segment {path} is corrupt at byte {offset}; run `phigate audit verify`")]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Where the corruption starts.
        offset: u64,
    },
    /// The writer thread is gone.
    #[error("audit writer stopped")]
    WriterStopped,
}

impl SinkError {
    /// A bounded label for the failure counter.
    pub fn reason(&self) -> &'static str {
        match self {
            SinkError::Unwritable { .. } => "unwritable",
            SinkError::Full(_) => "full",
            SinkError::Io(_) => "io",
            SinkError::Corrupt { .. } => "corrupt",
            SinkError::WriterStopped => "writer_stopped",
        }
    }

    /// Classifies a write error: `ENOSPC`, `EDQUOT` and `EFBIG` (file-size limit) mean full.
    pub(crate) fn from_write(e: io::Error) -> Self {
        match e.raw_os_error() {
            // ENOSPC 28, EDQUOT 122, EFBIG 27 (RLIMIT_FSIZE or the filesystem's file-size cap)
            Some(28) | Some(122) | Some(27) => SinkError::Full(e),
            _ if e.kind() == io::ErrorKind::StorageFull => SinkError::Full(e),
            _ => SinkError::Io(e),
        }
    }

    /// Classifies an open/create error.
    pub(crate) fn unwritable(path: impl Into<PathBuf>, source: io::Error) -> Self {
        SinkError::Unwritable { path: path.into(), source }
    }
}

/// Why a key file could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file holds neither a PEM key nor raw key bytes of the right length.
    #[error("key file {path}: {what}")]
    Format {
        /// The key file.
        path: PathBuf,
        /// What is wrong (never the key material).
        what: &'static str,
    },
}
