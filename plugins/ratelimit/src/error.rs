//! Why the shared backend could not decide. Never carries keys, URLs or request data.

use thiserror::Error;

/// A failure of the Redis backend; `failure_mode` decides what the request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(crate) enum BackendError {
    /// No connection to Redis (never made, or dropped and not yet made again).
    #[error("no connection to redis")]
    Unavailable,
    /// Redis did not answer within `timeout_ms`.
    #[error("redis did not answer in time")]
    Timeout,
    /// The connection failed while the check was in flight.
    #[error("redis connection failed")]
    Io,
    /// The TLS handshake failed or TLS broke the connection: an untrusted, expired or misnamed
    /// server certificate, or Redis refused (or required) the client certificate.
    #[error("redis TLS failed")]
    Tls,
    /// Redis answered with an error or an unexpected reply.
    #[error("redis script failed")]
    Script,
}

impl BackendError {
    /// The metrics label of this kind (`phigate_ratelimit_backend_errors_total{kind}`).
    pub(crate) fn kind(self) -> &'static str {
        match self {
            BackendError::Unavailable => "unavailable",
            BackendError::Timeout => "timeout",
            BackendError::Io => "io",
            BackendError::Tls => "tls",
            BackendError::Script => "script",
        }
    }

    /// Classifies a client error; only its kind is kept (the text may quote the address).
    pub(crate) fn from_redis(e: &redis::RedisError) -> BackendError {
        if e.is_timeout() {
            BackendError::Timeout
        } else if phigate_redis::is_tls_error(e) {
            BackendError::Tls
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
            BackendError::Io
        } else {
            BackendError::Script
        }
    }

    /// Whether the connection should be replaced.
    pub(crate) fn needs_reconnect(self) -> bool {
        matches!(self, BackendError::Io | BackendError::Tls)
    }
}
