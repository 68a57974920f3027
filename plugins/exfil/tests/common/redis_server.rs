//! The shared `redis-server` test harness (`phigate-test-redis`), plus what these tests add: a
//! client connection for inspecting the server, and replicas sharing blocks through it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use phigate_exfil::{Action, SharedConfig};
use phigate_plugin::{ErrorCode, Principal, Stage};
pub use phigate_test_redis::{eventually, free_port, RedisServer};

use super::{read, Harness};

/// A 32-byte HMAC key file in `dir`, every byte `b`.
pub fn key_file(dir: &Path, b: u8) -> PathBuf {
    let p = dir.join(format!("exfil-{b}.key"));
    std::fs::write(&p, [b; 32]).unwrap();
    p
}

/// A replica blocking after 3 missed reads for `block_secs`, sharing as `shared` says, its
/// tasks spawned.
pub fn replica_with(shared: SharedConfig, block_secs: u64) -> Harness {
    let h = Harness::new(|c| {
        c.id_enumeration.enabled = true;
        c.id_enumeration.threshold = 2;
        c.id_enumeration.window_secs = 60;
        c.id_enumeration.action = Action::Block;
        c.id_enumeration.block_secs = block_secs;
        c.shared = Some(shared);
    });
    h.spawn_writer();
    h
}

/// Three missed reads: over the `id_enumeration` threshold.
pub async fn probe(h: &Harness, p: &Arc<Principal>) {
    for id in ["a", "b", "c"] {
        h.run(read(p, "Patient", id, 404)).await.unwrap();
    }
}

/// Whether the stage refuses `p` as blocked.
pub async fn refuses(h: &Harness, p: &Arc<Principal>) -> bool {
    let mut ctx = read(p, "Patient", "x", 200);
    matches!(h.stage.on_request(&mut ctx).await, Err(d) if d.code == ErrorCode::PrincipalBlocked)
}

/// `phigate_exfil_shared_errors_total` (process-wide), of one `kind` or summed over all.
pub fn shared_errors(kind: Option<&str>) -> u64 {
    let families = prometheus::gather();
    let family = families.iter().find(|f| f.name() == "phigate_exfil_shared_errors_total");
    let of_kind =
        |m: &&prometheus::proto::Metric| kind.is_none_or(|k| m.get_label().iter().any(|l| l.value() == k));
    family.map_or(0, |f| {
        f.get_metric().iter().filter(of_kind).map(|m| m.get_counter().get_value() as u64).sum()
    })
}

/// `redis://127.0.0.1:<port>/0`.
pub fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/0")
}

/// A connection for inspecting (and writing to) the server from the test.
pub async fn conn(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(server.url()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}
