//! What the sample upstream received, so tests can assert on exactly what the gateway forwarded
//! (path and query as sent, headers, the gateway's client certificate) without sleeping.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::{HeaderMap, Method, Version};
use tokio::sync::Notify;

/// Bodies up to this size are kept; larger ones are recorded by length only.
pub const MAX_RECORDED_BODY: usize = 64 * 1024;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// Method.
    pub method: Method,
    /// Path and query exactly as received (no decoding or normalization).
    pub path_and_query: String,
    /// Every request header as received.
    pub headers: HeaderMap,
    /// HTTP version of the request (`HTTP/1.1` or `HTTP/2.0`).
    pub version: Version,
    /// RFC 8705 `x5t#S256` of the client certificate (None on the plaintext listener).
    pub client_cert_thumbprint: Option<Arc<str>>,
    /// The SNI the client sent, if any.
    pub sni: Option<Arc<str>>,
    /// The peer's socket address.
    pub peer: SocketAddr,
    /// Body length in bytes.
    pub body_len: usize,
    /// The body, when at most [`MAX_RECORDED_BODY`] bytes.
    pub body: Option<Bytes>,
}

#[derive(Debug, Default)]
struct State {
    ring: VecDeque<SeenRequest>,
    /// Sequence number of `ring[0]`.
    first_seq: u64,
    /// Requests ever recorded.
    total: u64,
    /// Sequence number the next call to `next()` returns.
    cursor: u64,
}

#[derive(Debug)]
struct Inner {
    capacity: usize,
    state: Mutex<State>,
    notify: Notify,
}

/// A bounded ring of received requests. Cheap to clone; clones share the ring and the
/// [`Recorder::next`] cursor.
#[derive(Debug, Clone)]
pub struct Recorder {
    inner: Arc<Inner>,
}

impl Recorder {
    /// A recorder keeping the last `capacity` requests (0 records nothing, for load tests).
    pub fn new(capacity: usize) -> Self {
        Recorder {
            inner: Arc::new(Inner { capacity, state: Mutex::new(State::default()), notify: Notify::new() }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not wedge every later assertion; the ring stays usable.
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether recording is on (capacity above zero).
    pub fn enabled(&self) -> bool {
        self.inner.capacity > 0
    }

    pub(super) fn record(&self, seen: SeenRequest) {
        if !self.enabled() {
            return;
        }
        {
            let mut s = self.state();
            if s.ring.len() == self.inner.capacity {
                s.ring.pop_front();
                s.first_seq += 1;
            }
            s.ring.push_back(seen);
            s.total += 1;
        }
        self.inner.notify.notify_waiters();
    }

    /// The next request not yet returned by `next` (on any clone), waiting for it if needed.
    /// Requests that fell out of the ring before being taken are skipped. Wrap the call in
    /// `tokio::time::timeout` in tests so a missing request fails instead of hanging.
    pub async fn next(&self) -> SeenRequest {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            // Register before checking, so a request recorded in between still wakes us.
            notified.as_mut().enable();
            if let Some(seen) = self.try_next() {
                return seen;
            }
            notified.await;
        }
    }

    /// The next request not yet returned by [`Recorder::next`], if one is already recorded.
    pub fn try_next(&self) -> Option<SeenRequest> {
        let mut s = self.state();
        s.cursor = s.cursor.max(s.first_seq);
        if s.cursor >= s.total {
            return None;
        }
        let index = usize::try_from(s.cursor - s.first_seq).ok()?;
        let seen = s.ring.get(index).cloned();
        s.cursor += 1;
        seen
    }

    /// Every request still in the ring, oldest first.
    pub fn all(&self) -> Vec<SeenRequest> {
        self.state().ring.iter().cloned().collect()
    }

    /// How many requests were recorded since start (including ones that left the ring).
    pub fn count(&self) -> u64 {
        self.state().total
    }

    /// Empties the ring and moves the `next` cursor past everything recorded so far.
    pub fn clear(&self) {
        let mut s = self.state();
        s.first_seq = s.total;
        s.cursor = s.total;
        s.ring.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use super::*;

    fn req(path: &str) -> SeenRequest {
        SeenRequest {
            method: Method::GET,
            path_and_query: path.to_owned(),
            headers: HeaderMap::new(),
            version: Version::HTTP_11,
            client_cert_thumbprint: None,
            sni: None,
            peer: SocketAddr::from((Ipv4Addr::LOCALHOST, 1)),
            body_len: 0,
            body: None,
        }
    }

    #[tokio::test]
    async fn next_waits_for_a_request_recorded_later() {
        let r = Recorder::new(4);
        let waiter = tokio::spawn({
            let r = r.clone();
            async move { r.next().await.path_and_query }
        });
        tokio::task::yield_now().await;
        r.record(req("/a"));
        assert_eq!(waiter.await.expect("join"), "/a");
        assert!(r.try_next().is_none());
    }

    #[tokio::test]
    async fn next_returns_requests_recorded_before_the_call_in_order() {
        let r = Recorder::new(4);
        r.record(req("/1"));
        r.record(req("/2"));
        assert_eq!(r.next().await.path_and_query, "/1");
        assert_eq!(r.next().await.path_and_query, "/2");
    }

    #[test]
    fn ring_is_bounded_and_next_skips_evicted_requests() {
        let r = Recorder::new(2);
        for p in ["/1", "/2", "/3"] {
            r.record(req(p));
        }
        let all: Vec<_> = r.all().into_iter().map(|s| s.path_and_query).collect();
        assert_eq!(all, ["/2", "/3"]);
        assert_eq!(r.count(), 3);
        assert_eq!(r.try_next().map(|s| s.path_and_query).as_deref(), Some("/2"));
        r.clear();
        assert!(r.try_next().is_none());
        assert!(r.all().is_empty());
    }

    #[test]
    fn zero_capacity_records_nothing() {
        let r = Recorder::new(0);
        r.record(req("/1"));
        assert_eq!(r.count(), 0);
        assert!(r.try_next().is_none());
    }
}
