//! Why the shared backend could not decide, as the metrics label it. Never carries keys, URLs or
//! request data.

use phigate_redis::Failure;

/// The metrics label of a backend failure (`phigate_ratelimit_backend_errors_total{kind}`);
/// Redis answering with an error is `script`, as it was before the connection keeper moved to
/// `phigate-redis`.
pub(crate) fn kind(f: Failure) -> &'static str {
    match f {
        Failure::Unavailable => "unavailable",
        Failure::Timeout => "timeout",
        Failure::Io => "io",
        Failure::Tls => "tls",
        Failure::Reply => "script",
    }
}
