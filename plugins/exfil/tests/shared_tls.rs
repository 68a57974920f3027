//! `shared:` blocks over `rediss://` through a real `redis-server` with a TLS 1.3-only port and
//! an rcgen PKI (fails, not skips, without `redis-server`): blocks cross replicas over TLS, and a
//! TLS failure is a Redis failure like any other (counted as `tls`, shown in readiness) while
//! every replica still blocks what it sees itself.

#![allow(clippy::unwrap_used)] // test helpers

mod common;

use std::path::{Path, PathBuf};

use common::redis_server::{eventually, key_file, probe, refuses, replica_with, shared_errors};
use common::{principal, Harness};
use phigate_exfil::{RedisTlsConfig, SharedConfig};
use phigate_plugin::{Readiness, Stage};
use phigate_test_redis::pki::{self, Pki};
use phigate_test_redis::{install_tls13_provider, tls_server};

/// A replica blocking after 3 missed reads, sharing through `url` with `tls`.
fn replica(url: &str, tls: RedisTlsConfig, key: &Path) -> Harness {
    replica_with(SharedConfig { tls: Some(tls), ..SharedConfig::new(url, key) }, 300)
}

fn trusting(ca: PathBuf) -> RedisTlsConfig {
    RedisTlsConfig { ca_path: Some(ca), ..RedisTlsConfig::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_recorded_over_rediss_is_refused_by_a_second_replica_over_rediss() {
    install_tls13_provider();
    let pki = Pki::new();
    let server = tls_server(&pki, (pki::SERVER_CERT, pki::SERVER_KEY), true);
    let key = key_file(pki.dir(), 9);
    let mutual = || RedisTlsConfig {
        client_cert_path: Some(pki.path(pki::CLIENT_CERT)),
        client_key_path: Some(pki.path(pki::CLIENT_KEY)),
        ..trusting(pki.path(pki::CA))
    };
    let (a, b) = (replica(&server.tls_url(), mutual(), &key), replica(&server.tls_url(), mutual(), &key));
    for h in [&a, &b] {
        eventually("shared link up over TLS", async || h.stage.readiness() == Readiness::Ready(None)).await;
    }
    let eve = principal("eve");
    probe(&a, &eve).await;
    assert!(refuses(&a, &eve).await);
    eventually("replica B refuses eve", async || refuses(&b, &eve).await).await;
    assert!(!refuses(&b, &principal("bob")).await, "only the blocked principal");
    assert_eq!((a.stage.stats().shared_published, b.stage.stats().shared_received), (1, 1));
    let keys = server.command("KEYS phigate:exfil:block:*\r\n").unwrap();
    assert!(keys.starts_with("*1"), "recorded in the TLS server: {keys}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_ca_fails_the_shared_link_as_tls_and_blocking_stays_local() {
    install_tls13_provider();
    let pki = Pki::new();
    let server = tls_server(&pki, (pki::SERVER_CERT, pki::SERVER_KEY), false);
    let key = key_file(pki.dir(), 9);
    let before = shared_errors(Some("tls"));
    let a = replica(&server.tls_url(), trusting(pki.path(pki::OTHER_CA)), &key);
    eventually("the TLS failure is counted", async || a.stage.stats().shared_errors >= 1).await;
    assert!(shared_errors(Some("tls")) > before, "counted under kind=\"tls\"");
    let Readiness::Ready(Some(detail)) = a.stage.readiness() else { panic!("ready, with a detail") };
    assert!(detail.contains("unavailable"), "{detail}");
    let port = server.tls_port.unwrap().to_string();
    assert!(!detail.contains(&port), "no address in the detail: {detail}");

    let eve = principal("eve");
    probe(&a, &eve).await;
    assert!(refuses(&a, &eve).await, "blocked locally whatever Redis does");
    assert_eq!(a.stage.stats().shared_published, 0, "nothing crossed the untrusted link");
    assert!(server.ping(), "the server itself is up: only TLS failed");
    let keys = server.command("KEYS *\r\n").unwrap();
    assert!(keys.starts_with("*0"), "nothing reached Redis: {keys}");
}
