//! Starting the sample FHIR upstream for a test.

use phigate::demo::upstream::{RunningUpstream, SampleUpstream, SampleUpstreamBuilder};

use crate::TestPki;

/// A builder preset like the demo: `upstream.crt` as server identity, client certificates
/// required from the internal CA, base path `/fhir`, generated sample data. Adjust, then
/// `.bind("127.0.0.1:0")`.
pub fn upstream_builder(pki: &TestPki) -> SampleUpstreamBuilder {
    SampleUpstream::builder().identity(&pki.upstream).client_ca(&pki.internal_ca)
}

/// Starts the mTLS sample upstream on `127.0.0.1:0`.
///
/// # Panics
/// When binding fails.
pub async fn start_upstream(pki: &TestPki) -> RunningUpstream {
    upstream_builder(pki).bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"))
}

/// Starts the sample upstream in plaintext mode on `127.0.0.1:0` (tests of the gateway's
/// plaintext-upstream option only).
///
/// # Panics
/// When binding fails.
pub async fn start_plaintext_upstream() -> RunningUpstream {
    SampleUpstream::builder().insecure_plaintext().bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"))
}
