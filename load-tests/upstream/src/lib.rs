//! Load-test tools for phigate (`load-tests/run`).
//!
//! Two binaries share this library:
//! - `bench-upstream`: a fast FHIR upstream over mTLS (TLS 1.3 only, client certificate required)
//!   serving canned, pre-serialized JSON, so that the upstream costs as little as possible and the
//!   measurement is about the proxy in front of it.
//! - `bench-rate`: an open-loop client that sends requests at a fixed offered rate over HTTP/1.1 or
//!   HTTP/2 and records latency in an HDR histogram, corrected for coordinated omission (a slow
//!   response does not silently lower the offered rate).

pub mod fhir;
pub mod rate;
pub mod server;
pub mod tls;
