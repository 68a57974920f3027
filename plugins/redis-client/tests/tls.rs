//! Clients against a real `redis-server` with a TLS 1.3-only port (fails, not skips, without
//! `redis-server`): what `client` builds connects, and `is_tls_error` tells certificate
//! failures from Redis being away.

use std::path::Path;

use phigate_redis::{client, is_tls_error, ConfigKeys, RedisTlsConfig};
use phigate_test_redis::pki::{self, Pki};
use phigate_test_redis::{free_port, install_tls13_provider, tls_server};

const KEYS: ConfigKeys<'static> = ConfigKeys { url: "url", tls: "tls" };

fn build(url: &str, tls: Option<&RedisTlsConfig>, dir: &Path) -> redis::Client {
    let mut issues = Vec::new();
    client(url, tls, dir, KEYS, &mut issues).unwrap_or_else(|| panic!("valid: {issues:?}"))
}

async fn ping(c: &redis::Client) -> redis::RedisResult<String> {
    let mut conn = c.get_multiplexed_async_connection().await?;
    redis::cmd("PING").query_async(&mut conn).await
}

fn trusting(ca: &str) -> RedisTlsConfig {
    RedisTlsConfig { ca_path: Some(ca.into()), ..RedisTlsConfig::default() }
}

#[tokio::test]
async fn a_rediss_client_trusting_the_ca_is_served_with_and_without_a_client_certificate() {
    install_tls13_provider();
    let pki = Pki::new();
    let server = tls_server(&pki, (pki::SERVER_CERT, pki::SERVER_KEY), false);
    assert_eq!(ping(&build(&server.tls_url(), Some(&trusting(pki::CA)), pki.dir())).await.unwrap(), "PONG");
    let mutual_server = tls_server(&pki, (pki::SERVER_CERT, pki::SERVER_KEY), true);
    let mutual = RedisTlsConfig {
        client_cert_path: Some(pki::CLIENT_CERT.into()),
        client_key_path: Some(pki::CLIENT_KEY.into()),
        ..trusting(pki::CA)
    };
    let c = build(&mutual_server.tls_url(), Some(&mutual), pki.dir());
    assert_eq!(ping(&c).await.unwrap(), "PONG");
    let without = build(&mutual_server.tls_url(), Some(&trusting(pki::CA)), pki.dir());
    let e = ping(&without).await.expect_err("Redis requires the client certificate");
    assert!(is_tls_error(&e), "{e:?}");
}

#[tokio::test]
async fn an_untrusted_or_expired_server_certificate_is_a_tls_error() {
    install_tls13_provider();
    let pki = Pki::new();
    let server = tls_server(&pki, (pki::SERVER_CERT, pki::SERVER_KEY), false);
    let e = ping(&build(&server.tls_url(), Some(&trusting(pki::OTHER_CA)), pki.dir())).await.unwrap_err();
    assert!(is_tls_error(&e), "{e:?}");
    let expired = tls_server(&pki, (pki::EXPIRED_CERT, pki::EXPIRED_KEY), false);
    let e = ping(&build(&expired.tls_url(), Some(&trusting(pki::CA)), pki.dir())).await.unwrap_err();
    assert!(is_tls_error(&e), "{e:?}");
    assert!(server.ping() && expired.ping(), "the servers are up: only TLS failed");
}

#[tokio::test]
async fn a_refused_connection_is_not_a_tls_error() {
    install_tls13_provider();
    let pki = Pki::new();
    let url = format!("rediss://127.0.0.1:{}/0", free_port());
    let e = ping(&build(&url, Some(&trusting(pki::CA)), pki.dir())).await.unwrap_err();
    assert!(!is_tls_error(&e), "{e:?}");
    let plain = format!("redis://127.0.0.1:{}/0", free_port());
    assert!(!is_tls_error(&ping(&build(&plain, None, pki.dir())).await.unwrap_err()));
}
