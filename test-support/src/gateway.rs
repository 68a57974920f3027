//! The gateway harness: start a real phigate on `127.0.0.1:0` from YAML and get its addresses.
//!
//! Reserved for the gateway crate's harness (`Gateway::from_yaml(..).start()`), added with the
//! proxy itself. It will compose the pieces above: a [`TestPki`](crate::TestPki) for the
//! listener and upstream certificates, [`start_upstream`](crate::start_upstream) for the
//! upstream, and [`TestClient`](crate::TestClient) for requests.
