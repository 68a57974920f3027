//! Telling TLS failures from other Redis failures.

use std::sync::Arc;

/// Whether a rustls error is in the chain of `e`: the TLS handshake failed (an untrusted,
/// expired or misnamed server certificate, Redis refused or required the client certificate)
/// or TLS broke the connection. Stages count these apart (`kind="tls"`) so that a certificate
/// problem is not read as Redis being down.
///
/// The client wraps the rustls error as an `io::Error` (tokio-rustls) in an `Arc` (redis), and
/// `io::Error::source` skips its payload, so each layer is opened by hand.
pub fn is_tls_error(e: &redis::RedisError) -> bool {
    let mut next = std::error::Error::source(e);
    while let Some(err) = next {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(arc) = err.downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>() {
            if is_tls_payload(arc.as_ref()) {
                return true;
            }
        }
        if is_tls_payload(err) {
            return true;
        }
        next = err.source();
    }
    false
}

fn is_tls_payload(err: &(dyn std::error::Error + 'static)) -> bool {
    err.is::<rustls::Error>()
        || err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .is_some_and(|p| p.is::<rustls::Error>())
}
