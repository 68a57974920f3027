//! `shared.windows`: the detectors' windows counted over every replica through a real
//! `redis-server`. A principal whose reads are spread over replicas, each under the threshold,
//! is alerted once, by the replica whose addition took the total over; patients read on two
//! replicas count once; an excess one replica already alerted on is not alerted again; a
//! `block` decided this way is shared; Redis sees only keyed hashes.

#![allow(clippy::unwrap_used)] // test helpers

mod common;

use std::path::Path;
use std::sync::Arc;

use common::redis_server::{conn, eventually, key_file, refuses, replica_with, RedisServer};
use common::{read, search, Harness};
use phigate_exfil::SharedConfig;
use phigate_plugin::{Principal, Readiness, Stage};

const WINDOW_KEYS: &str = "phigate:exfil:window:*";

/// A replica alerting on more than 10 distinct patients an hour, sharing through `redis`.
fn distinct_replica(redis: &RedisServer, key: &Path, windows: bool) -> Harness {
    let h = Harness::new(|c| {
        c.distinct_patients.enabled = true;
        c.distinct_patients.threshold = 10;
        c.distinct_patients.window_secs = 3600;
        let mut shared = SharedConfig::new(redis.url(), key);
        shared.windows = windows;
        c.shared = Some(shared);
    });
    h.spawn_writer();
    h
}

async fn linked(h: &Harness) {
    eventually("shared link up", async || h.stage.readiness() == Readiness::Ready(None)).await;
}

/// Reads each patient by a search naming it; then waits until this replica's additions are
/// counted in Redis (one more batch than before).
async fn reads(h: &Harness, p: &Arc<Principal>, patients: &[&str]) {
    let before = h.stage.stats().shared_window_batches;
    for id in patients {
        h.run(search(p, &[id], Some(1), 200)).await.unwrap();
    }
    eventually("the additions are counted in redis", async || h.stage.stats().shared_window_batches > before)
        .await;
}

fn over_replicas(alerts: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    alerts.iter().filter(|a| a["counted_on"] == "all_replicas").collect()
}

#[tokio::test]
async fn a_principal_spread_over_replicas_is_alerted_once_on_the_sum_of_distinct_patients() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let key = key_file(tmp.path(), 9);
    let (a, b) = (distinct_replica(&redis, &key, true), distinct_replica(&redis, &key, true));
    linked(&a).await;
    linked(&b).await;
    let eve = common::principal("eve");

    // 6 patients on each replica, 3 of them on both: 9 distinct, not over 10.
    reads(&a, &eve, &["pt-1", "pt-2", "pt-3", "pt-4", "pt-5", "pt-6"]).await;
    reads(&b, &eve, &["pt-4", "pt-5", "pt-6", "pt-7", "pt-8", "pt-9"]).await;
    assert!(a.alerts().await.is_empty() && b.alerts().await.is_empty(), "9 distinct patients");

    // Two more on B: 11 over both replicas, though neither saw more than 8.
    reads(&b, &eve, &["pt-10", "pt-11"]).await;
    let on_b = b.alerts().await;
    assert_eq!(on_b.len(), 1, "{on_b:?}");
    let alert = &on_b[0];
    assert_eq!(alert["rule"], "distinct_patients");
    assert_eq!(alert["counted_on"], "all_replicas");
    assert_eq!(alert["observed"], 11);
    assert_eq!(alert["threshold"], 10);
    assert_eq!(alert["principal"]["sub"], "eve");
    assert_eq!(alert["sample_patient_ids"][0], "pt-11", "the newest patient first");
    assert!(alert["request_id"].is_string());

    // Once per window over all replicas: A's next patient is over too, but not alerted again.
    reads(&a, &eve, &["pt-12"]).await;
    assert!(a.alerts().await.is_empty());
    assert_eq!(b.alerts().await.len(), 1);

    // Redis holds keyed hashes only: no subject, no patient id, in any key or value.
    let mut c = conn(&redis).await;
    let keys: Vec<String> = redis::cmd("KEYS").arg(WINDOW_KEYS).query_async(&mut c).await.unwrap();
    assert!(!keys.is_empty());
    for k in &keys {
        assert!(!k.contains("eve") && !k.contains("pt-"), "{k}");
        let value: Vec<u8> = redis::cmd("DUMP").arg(k).query_async(&mut c).await.unwrap();
        let text = String::from_utf8_lossy(&value);
        assert!(!text.contains("eve") && !text.contains("pt-"), "{k}");
    }
}

#[tokio::test]
async fn an_excess_one_replica_alerted_on_itself_is_not_alerted_again_over_the_replicas() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let key = key_file(tmp.path(), 10);
    let (a, b) = (distinct_replica(&redis, &key, true), distinct_replica(&redis, &key, true));
    linked(&a).await;
    linked(&b).await;
    let eve = common::principal("eve");
    let eleven: Vec<String> = (1..=11).map(|i| format!("pt-{i}")).collect();
    let eleven: Vec<&str> = eleven.iter().map(String::as_str).collect();
    reads(&a, &eve, &eleven).await;
    let on_a = a.alerts().await;
    assert_eq!(on_a.len(), 1);
    assert_eq!(on_a[0]["counted_on"], "replica");

    reads(&b, &eve, &["pt-12"]).await;
    assert!(b.alerts().await.is_empty(), "the same excess, already alerted on A");
    assert_eq!(a.alerts().await.len(), 1);
}

#[tokio::test]
async fn probes_spread_over_replicas_block_the_principal_on_every_replica() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let key = key_file(tmp.path(), 11);
    // More than 2 missed reads a minute blocks (see `replica_with`).
    let (a, b) = (
        replica_with(SharedConfig::new(redis.url(), &key), 300),
        replica_with(SharedConfig::new(redis.url(), &key), 300),
    );
    linked(&a).await;
    linked(&b).await;
    let eve = common::principal("eve");
    let batches = a.stage.stats().shared_window_batches;
    for id in ["a", "b"] {
        a.run(read(&eve, "Patient", id, 404)).await.unwrap();
    }
    eventually("A's probes counted", async || a.stage.stats().shared_window_batches > batches).await;
    let batches = b.stage.stats().shared_window_batches;
    b.run(read(&eve, "Patient", "c", 404)).await.unwrap();
    eventually("B's probe counted", async || b.stage.stats().shared_window_batches > batches).await;

    let on_b = over_replicas(&b.alerts().await).into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(on_b.len(), 1, "{on_b:?}");
    assert_eq!(on_b[0]["rule"], "id_enumeration");
    assert_eq!(on_b[0]["observed"], 3);
    assert_eq!(on_b[0]["action"], "block");
    assert!(refuses(&b, &eve).await, "blocked where the total went over");
    eventually("A refuses eve too", async || refuses(&a, &eve).await).await;
    assert!(a.alerts().await.is_empty(), "A never went over on its own");
    assert!(!refuses(&a, &common::principal("bob")).await, "only eve");
}

#[tokio::test]
async fn without_windows_nothing_is_counted_in_redis() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let key = key_file(tmp.path(), 12);
    let (a, b) = (distinct_replica(&redis, &key, false), distinct_replica(&redis, &key, false));
    linked(&a).await;
    linked(&b).await;
    let eve = common::principal("eve");
    for (h, ids) in [
        (&a, ["pt-1", "pt-2", "pt-3", "pt-4", "pt-5", "pt-6"]),
        (&b, ["pt-7", "pt-8", "pt-9", "pt-10", "pt-11", "pt-12"]),
    ] {
        for id in ids {
            h.run(search(&eve, &[id], Some(1), 200)).await.unwrap();
        }
    }
    assert!(a.alerts().await.is_empty() && b.alerts().await.is_empty());
    assert_eq!(a.stage.stats().shared_window_batches + b.stage.stats().shared_window_batches, 0);
    let mut c = conn(&redis).await;
    let keys: Vec<String> = redis::cmd("KEYS").arg(WINDOW_KEYS).query_async(&mut c).await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}
