//! Test builders shared across the phigate workspace: a dev PKI in a temp dir ([`TestPki`]), the
//! sample FHIR upstream over mutual TLS ([`start_upstream`]), and a TLS HTTP client
//! ([`TestClient`], [`TlsProbe`]) for requests, raw bytes and handshake probes.
//!
//! ```no_run
//! # async fn demo() {
//! use phigate_test_support::{start_upstream, TestPki};
//!
//! let pki = TestPki::new();
//! let upstream = start_upstream(&pki).await;
//! let res = pki
//!     .upstream_client()
//!     .get(&format!("{}/Patient/a-p1", upstream.base_url()))
//!     .send()
//!     .await
//!     .expect("response");
//! assert_eq!(res.status, 200);
//! # }
//! ```
//!
//! Everything binds `127.0.0.1:0` and reports its address; nothing sleeps. Helpers that cannot
//! go wrong in a sane test environment panic with a message instead of returning `Result`: a
//! panic is a failed test.

pub mod client;
pub mod gateway;
mod pki;
mod upstream;

pub use client::{
    ClientError, HandshakeInfo, RawOptions, RequestBuilder, TestClient, TestClientBuilder, TestResponse,
    TlsProbe, TlsVersions,
};
pub use gateway::{free_port, wait_listening, TestGateway};
pub use pki::TestPki;
pub use upstream::{start_plaintext_upstream, start_upstream, upstream_builder};

/// Re-exports of what tests usually need from the gateway crate's demo module.
pub use phigate::demo::{
    data::SampleData,
    pki::{cert_thumbprint, CertAuthority, DevPki, DevPkiPaths, IssuedCert, WhichCa},
    upstream::{
        PemSource, Recorder, RunningUpstream, SampleUpstream, SampleUpstreamBuilder, SeenRequest,
        UpstreamError,
    },
};
