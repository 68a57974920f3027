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

/// Why [`ExfilStage::unblock`](crate::ExfilStage::unblock) refused to lift a block.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum UnblockError {
    /// The reason is empty (after trimming), longer than
    /// [`MAX_REASON_BYTES`](crate::MAX_REASON_BYTES), or holds control characters (which could
    /// forge lines or terminal escapes in whatever displays the alerts file).
    #[error("the reason must be 1 to 512 bytes of text without control characters")]
    ReasonInvalid,
}
