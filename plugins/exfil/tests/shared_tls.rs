//! `shared:` blocks over `rediss://` through a real `redis-server` with a TLS 1.3-only port and
//! an rcgen PKI (fails, not skips, without `redis-server`): blocks cross replicas over TLS, and a
//! TLS failure is a Redis failure like any other (counted as `tls`, shown in readiness) while
//! every replica still blocks what it sees itself.

#![allow(clippy::unwrap_used)] // test helpers

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::redis_server::eventually;
use common::{principal, read, Harness};
use phigate_exfil::{Action, RedisTlsConfig, SharedConfig};
use phigate_plugin::{ErrorCode, Principal, Readiness, Stage};
use phigate_test_redis::pki::{self, Pki};
use phigate_test_redis::{install_tls13_provider, tls_server};

/// A 32-byte HMAC key file in `dir`.
fn key_file(dir: &Path) -> PathBuf {
    let p = dir.join("exfil-shared.key");
    std::fs::write(&p, [9u8; 32]).unwrap();
    p
}

/// A replica blocking after 3 missed reads, sharing through `url` with `tls`, tasks spawned.
fn replica(url: &str, tls: RedisTlsConfig, key: &Path) -> Harness {
    let h = Harness::new(|c| {
        c.id_enumeration.enabled = true;
        c.id_enumeration.threshold = 2;
        c.id_enumeration.window_secs = 60;
        c.id_enumeration.action = Action::Block;
        c.id_enumeration.block_secs = 300;
        c.shared = Some(SharedConfig { tls: Some(tls), ..SharedConfig::new(url, key) });
    });
    h.spawn_writer();
    h
}

fn trusting(ca: PathBuf) -> RedisTlsConfig {
    RedisTlsConfig { ca_path: Some(ca), ..RedisTlsConfig::default() }
}

async fn probe(h: &Harness, p: &Arc<Principal>) {
    for id in ["a", "b", "c"] {
        h.run(read(p, "Patient", id, 404)).await.unwrap();
    }
}

async fn refuses(h: &Harness, p: &Arc<Principal>) -> bool {
    let mut ctx = read(p, "Patient", "x", 200);
    matches!(h.stage.on_request(&mut ctx).await, Err(d) if d.code == ErrorCode::PrincipalBlocked)
}

/// `phigate_exfil_shared_errors_total{kind}` (process-wide).
fn shared_errors_of(kind: &str) -> u64 {
    let families = prometheus::gather();
    let family = families.iter().find(|f| f.name() == "phigate_exfil_shared_errors_total");
    let of_kind = |m: &&prometheus::proto::Metric| m.get_label().iter().any(|l| l.value() == kind);
    family.map_or(0, |f| {
        f.get_metric().iter().filter(of_kind).map(|m| m.get_counter().get_value() as u64).sum()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_recorded_over_rediss_is_refused_by_a_second_replica_over_rediss() {
    install_tls13_provider();
    let pki = Pki::new();
    let server = tls_server(&pki, (pki::SERVER_CERT, pki::SERVER_KEY), true);
    let key = key_file(pki.dir());
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
    let key = key_file(pki.dir());
    let before = shared_errors_of("tls");
    let a = replica(&server.tls_url(), trusting(pki.path(pki::OTHER_CA)), &key);
    eventually("the TLS failure is counted", async || a.stage.stats().shared_errors >= 1).await;
    assert!(shared_errors_of("tls") > before, "counted under kind=\"tls\"");
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
