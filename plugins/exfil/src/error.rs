//! Errors of the exfiltration stage.

use thiserror::Error;

/// Why [`ExfilStage::flush`](crate::ExfilStage::flush) could not confirm the alerts on disk.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum FlushError {
    /// The writer task is not running (never spawned, or stopped).
    #[error("the alert writer is not running")]
    WriterStopped,
    /// Some alert line since the previous flush could not be written or synced.
    #[error("alert lines could not be written to the alerts file")]
    Io,
}
