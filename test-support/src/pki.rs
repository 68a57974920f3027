//! [`TestPki`]: the dev PKI written into a temp dir that lives as long as the value.

use std::ops::Deref;
use std::path::Path;

use phigate::demo::pki::{DevPki, DevPkiPaths, UPSTREAM_SERVER_NAME};
use tempfile::TempDir;

use crate::client::{TestClient, TestClientBuilder};

/// The dev PKI of `phigate demo`, generated fresh and written to a temp dir (removed on drop).
/// Derefs to [`DevPki`] for the CAs, leaf certs and `issue_*` builders.
#[derive(Debug)]
pub struct TestPki {
    pki: DevPki,
    /// The written files (PEM).
    pub paths: DevPkiPaths,
    dir: TempDir,
}

impl TestPki {
    /// Generates and writes the PKI.
    ///
    /// # Panics
    /// When generation or the temp dir fails (a broken test environment).
    pub fn new() -> Self {
        let pki = DevPki::generate().unwrap_or_else(|e| panic!("dev PKI generation: {e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let paths = pki.write_to(dir.path()).unwrap_or_else(|e| panic!("writing dev PKI: {e}"));
        TestPki { pki, paths, dir }
    }

    /// The temp dir holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client builder that trusts the public dev CA (what end users of the gateway trust).
    pub fn public_client_builder(&self) -> TestClientBuilder {
        TestClient::builder().root_ca(&self.pki.ca)
    }

    /// A client that trusts the public dev CA, without a client certificate.
    pub fn public_client(&self) -> TestClient {
        build(self.public_client_builder())
    }

    /// A client that trusts the public dev CA and presents the end-user `client.crt`.
    pub fn end_user_client(&self) -> TestClient {
        build(self.public_client_builder().client_cert(&self.pki.client))
    }

    /// A client builder that acts like the gateway towards upstreams: trusts the internal CA,
    /// presents `gateway-client.crt`, and sends SNI `fhir-upstream.internal`.
    pub fn upstream_client_builder(&self) -> TestClientBuilder {
        TestClient::builder()
            .root_ca(&self.pki.internal_ca)
            .client_cert(&self.pki.gateway_client)
            .server_name(UPSTREAM_SERVER_NAME)
    }

    /// [`TestPki::upstream_client_builder`], built.
    pub fn upstream_client(&self) -> TestClient {
        build(self.upstream_client_builder())
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl Deref for TestPki {
    type Target = DevPki;

    fn deref(&self) -> &DevPki {
        &self.pki
    }
}

fn build(builder: TestClientBuilder) -> TestClient {
    builder.build().unwrap_or_else(|e| panic!("test client: {e}"))
}
