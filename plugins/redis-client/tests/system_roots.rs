//! `rediss://` without `tls.ca_path` trusts the operating system's roots as they were when the
//! client was built: they are read once, never again at a (re)connection (which would be
//! blocking file I/O on a tokio worker). The test points the system store at its own CA with
//! `SSL_CERT_FILE`, builds the clients, then points it at an unrelated CA and at a missing file:
//! a client that re-read the store at connection would fail (redis 1.x, built without
//! `tls-rustls-webpki-roots`, does: it gives up when the store cannot be read, even though it
//! then uses the roots it was given). `SSL_CERT_FILE` is process-wide: this binary holds this
//! one test, which sets it before starting any thread of its own.

use phigate_redis::{client, ConfigKeys};
use phigate_test_redis::pki::{self, Pki};
use phigate_test_redis::{install_tls13_provider, tls_server};

#[test]
fn system_roots_are_read_when_the_client_is_built_not_at_each_connection() {
    let pki = Pki::new();
    std::env::set_var("SSL_CERT_FILE", pki.path(pki::CA));
    std::env::remove_var("SSL_CERT_DIR");
    install_tls13_provider();
    let server = tls_server(&pki, (pki::SERVER_CERT, pki::SERVER_KEY), false);
    let mut issues = Vec::new();
    let keys = ConfigKeys { url: "url", tls: "tls" };
    let c = client(&server.tls_url(), None, pki.dir(), keys, &mut issues).expect("valid");
    let other = client(&server.tls_url(), None, pki.dir(), keys, &mut issues).expect("valid");

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    let runtime = runtime.expect("runtime");
    for store in [pki.path(pki::OTHER_CA), pki.path("missing.pem")] {
        std::env::set_var("SSL_CERT_FILE", store);
        runtime.block_on(async {
            for c in [&c, &other, &c] {
                let mut conn = c.get_multiplexed_async_connection().await.expect("no store read");
                let pong: String = redis::cmd("PING").query_async(&mut conn).await.expect("PING");
                assert_eq!(pong, "PONG");
            }
        });
    }

    let mut issues = Vec::new();
    std::env::set_var("SSL_CERT_FILE", pki.path("missing.pem"));
    assert!(client(&server.tls_url(), None, pki.dir(), keys, &mut issues).is_none());
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].key_path, "tls.ca_path", "no usable system root: set ca_path");
}
