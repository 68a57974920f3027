//! `shared:` blocks through a real `redis-server`: a principal blocked by one replica is refused
//! by the others, including those started later; Redis never names the principal; without
//! Redis each replica still blocks on its own, and sharing resumes when Redis is back. An
//! operator's lift on any replica ends the block on all of them, including replicas started or
//! reconnected later, and a stale copy of the block does not bring it back.

#![allow(clippy::unwrap_used)] // test helpers

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use common::redis_server::{
    conn, eventually, free_port, key_file, probe, refuses, replica_with, shared_errors, url, RedisServer,
};
use common::{principal, Harness};
use phigate_exfil::{BlockView, SharedConfig};
use phigate_plugin::{Principal, Readiness, Stage};

const PREFIX: &str = "phigate:exfil:block:";

/// A replica blocking after 3 missed reads for `block_secs`, sharing through `url`.
fn replica(url: &str, key: &Path, block_secs: u64) -> Harness {
    replica_with(SharedConfig::new(url, key), block_secs)
}

async fn linked(h: &Harness) {
    eventually("shared link up", async || h.stage.readiness() == Readiness::Ready(None)).await;
}

/// Two replicas sharing `key` through `redis`, both linked.
async fn pair(redis: &RedisServer, key: &Path) -> (Harness, Harness) {
    let (a, b) = (replica(&redis.url(), key, 300), replica(&redis.url(), key, 300));
    linked(&a).await;
    linked(&b).await;
    (a, b)
}

/// [`pair`], with eve blocked by A and refused by B.
async fn eve_blocked_by_a_and_b(redis: &RedisServer, key: &Path) -> (Harness, Harness, Arc<Principal>) {
    let (a, b) = pair(redis, key).await;
    let eve = principal("eve");
    probe(&a, &eve).await;
    eventually("B refuses eve", async || refuses(&b, &eve).await).await;
    (a, b, eve)
}

async fn recorded_keys(redis: &RedisServer) -> Vec<String> {
    let mut conn = conn(redis).await;
    redis::cmd("KEYS").arg(format!("{PREFIX}*")).query_async(&mut conn).await.unwrap()
}

#[tokio::test]
async fn a_block_on_one_replica_is_refused_by_another_that_never_saw_the_principal() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let key = key_file(tmp.path(), 1);
    let (a, b) = pair(&redis, &key).await;
    let (eve, bob) = (principal("eve"), principal("bob"));
    assert!(!refuses(&b, &eve).await);

    probe(&a, &eve).await;
    assert!(refuses(&a, &eve).await);
    eventually("replica B refuses eve", async || refuses(&b, &eve).await).await;
    assert!(!refuses(&b, &bob).await, "only the blocked principal");
    assert_eq!(a.stage.stats().shared_published, 1);
    assert_eq!(b.stage.stats().shared_received, 1);
    assert_eq!(a.stage.stats().shared_received, 0, "a replica skips its own announcement");
    assert_eq!(b.stage.stats().alerts, 0, "B saw none of eve's traffic");
}

#[tokio::test]
async fn a_replica_started_after_the_block_loads_it_from_redis() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let key = key_file(tmp.path(), 2);
    let a = replica(&redis.url(), &key, 300);
    linked(&a).await;
    let eve = principal("eve");
    probe(&a, &eve).await;
    eventually("A recorded the block", async || a.stage.stats().shared_published == 1).await;

    // Subscribed after the announcement: only the recorded key can tell it.
    let late = replica(&redis.url(), &key, 300);
    linked(&late).await;
    assert!(refuses(&late, &eve).await);
    assert_eq!(late.stage.stats().shared_received, 1);
}

#[tokio::test]
async fn redis_names_the_principal_only_by_a_hash_keyed_with_the_shared_key() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let a = replica(&redis.url(), &key_file(tmp.path(), 3), 300);
    linked(&a).await;
    let eve = principal("eve");
    probe(&a, &eve).await;
    eventually("A recorded the block", async || a.stage.stats().shared_published == 1).await;

    let keys = recorded_keys(&redis).await;
    assert_eq!(keys.len(), 1);
    let hash = keys[0].strip_prefix(PREFIX).unwrap();
    assert!(hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()), "{hash}");
    assert!(!keys[0].contains("eve") && !keys[0].contains("idp"));
    let mut conn = conn(&redis).await;
    let until: u64 = redis::cmd("GET").arg(&keys[0]).query_async(&mut conn).await.unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!((now + 290..=now + 302).contains(&until), "until {until}, now {now}");
    let ttl: i64 = redis::cmd("TTL").arg(&keys[0]).query_async(&mut conn).await.unwrap();
    // Rounded up to the second, never shorter than the block.
    assert!((1..=301).contains(&ttl), "the key expires with the block: {ttl}");

    // A replica with another key loads the record but cannot tie it to eve.
    let stranger = replica(&redis.url(), &key_file(tmp.path(), 4), 300);
    linked(&stranger).await;
    assert_eq!(stranger.stage.stats().shared_received, 1);
    assert!(!refuses(&stranger, &eve).await);
}

#[tokio::test]
async fn a_shorter_block_received_keeps_the_longer_one_and_expiry_is_local() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let key = key_file(tmp.path(), 5);
    let (_a, b, eve) = eve_blocked_by_a_and_b(&redis, &key).await;

    // Another replica announces a 10 s block of the same principal.
    let hash = recorded_keys(&redis).await[0].strip_prefix(PREFIX).unwrap().to_owned();
    let soon = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 10;
    let msg = format!("elsewhere {hash} {soon}");
    announce(&redis, msg).await;
    eventually("B applied it", async || b.stage.stats().shared_received == 2).await;

    b.advance_secs(250);
    assert!(refuses(&b, &eve).await, "the 300 s block holds");
    b.advance_secs(52);
    assert!(!refuses(&b, &eve).await, "ended on B's own clock, Redis untouched");
}

#[tokio::test]
async fn without_redis_blocks_apply_locally_errors_are_counted_and_sharing_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let key = key_file(tmp.path(), 6);
    let port = free_port();
    let a = replica(&url(port), &key, 300);
    let eve = principal("eve");
    probe(&a, &eve).await;
    assert!(refuses(&a, &eve).await, "blocked locally whatever Redis does");
    eventually("the failure is counted", async || a.stage.stats().shared_errors >= 1).await;
    let Readiness::Ready(Some(detail)) = a.stage.readiness() else { panic!("ready, with a detail") };
    assert!(detail.contains("unavailable"), "{detail}");
    assert!(!detail.contains(&port.to_string()), "no address in the detail");
    assert!(shared_errors(None) >= 1);

    // Redis comes up: A reconnects and shares the block it queued meanwhile.
    let redis = RedisServer::start_on(port).expect("port still free");
    linked(&a).await;
    eventually("A shared the queued block", async || a.stage.stats().shared_published == 1).await;
    let late = replica(&redis.url(), &key, 300);
    linked(&late).await;
    assert!(refuses(&late, &eve).await);
}

#[tokio::test]
async fn blocks_lost_by_a_redis_restart_are_recorded_again_on_reconnect() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let tmp = tempfile::tempdir().unwrap();
    let key = key_file(tmp.path(), 7);
    let a = replica(&redis.url(), &key, 300);
    linked(&a).await;
    let eve = principal("eve");
    probe(&a, &eve).await;
    eventually("A recorded the block", async || a.stage.stats().shared_published == 1).await;

    redis.kill();
    let redis = RedisServer::start_on(port).expect("port still free");
    assert!(recorded_keys(&redis).await.is_empty(), "the restart lost the record");
    eventually("A recorded it again", async || a.stage.stats().shared_published == 2).await;
    let late = replica(&redis.url(), &key, 300);
    linked(&late).await;
    assert!(refuses(&late, &eve).await);
}

const REASON: &str = "SOC-4411 confirmed false positive";

/// Publishes `msg` on the blocks channel as another replica would.
async fn announce(redis: &RedisServer, msg: String) {
    let mut conn = conn(redis).await;
    let _: i64 =
        redis::cmd("PUBLISH").arg("phigate:exfil:blocks").arg(msg).query_async(&mut conn).await.unwrap();
}

/// Publishes garbage and waits until `h` counted it: every message published before has been
/// handled by then (one channel, one subscriber connection: delivered in order).
async fn drained(redis: &RedisServer, h: &Harness) {
    let before = h.stage.stats().shared_errors;
    announce(redis, "not an announcement".into()).await;
    eventually("the marker was handled", async || h.stage.stats().shared_errors > before).await;
}

#[tokio::test]
async fn a_lift_on_one_replica_ends_the_block_everywhere_and_a_stale_copy_does_not_revive_it() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let key = key_file(tmp.path(), 8);
    let (a, b, eve) = eve_blocked_by_a_and_b(&redis, &key).await;
    let block_key = recorded_keys(&redis).await.pop().unwrap();
    let hash = block_key.strip_prefix(PREFIX).unwrap().to_owned();
    let until = a.stage.blocks()[0].until_unix;

    // B knows the block only by its name in Redis; A by identity, and by the same name.
    let received = BlockView {
        issuer: None,
        subject: None,
        shared_name: Some(hash.clone()),
        until_unix: until,
        source: "shared",
    };
    assert_eq!(b.stage.blocks(), vec![received]);
    let own = &a.stage.blocks()[0];
    assert_eq!(
        (own.subject.as_deref(), own.shared_name.as_deref(), own.source),
        (Some("eve"), Some(hash.as_str()), "local")
    );

    assert_eq!(a.stage.unblock(common::ISSUER, "eve", REASON), Ok(true));
    assert!(!refuses(&a, &eve).await, "lifted here at once");
    eventually("B lets eve through", async || !refuses(&b, &eve).await).await;
    assert_eq!(b.stage.blocks(), vec![]);
    eventually("A recorded the lift", async || a.stage.stats().shared_lifts_published == 1).await;
    assert_eq!(recorded_keys(&redis).await, vec![format!("{PREFIX}lifted:{hash}")], "block record deleted");

    // The same block announced again after the lift (a replica re-sharing it late).
    announce(&redis, format!("elsewhere {hash} {until}")).await;
    drained(&redis, &b).await;
    drained(&redis, &a).await;
    assert!(!refuses(&b, &eve).await && !refuses(&a, &eve).await, "the lift holds");

    let late = replica(&redis.url(), &key, 300);
    linked(&late).await;
    assert!(!refuses(&late, &eve).await, "nothing to load");
    assert_eq!(late.stage.stats().shared_received, 0);
}

#[tokio::test]
async fn a_lift_survives_a_redis_restart_the_lifting_replica_never_records_the_block_again() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let tmp = tempfile::tempdir().unwrap();
    let key = key_file(tmp.path(), 9);
    let a = replica(&redis.url(), &key, 300);
    linked(&a).await;
    let eve = principal("eve");
    probe(&a, &eve).await;
    eventually("A recorded the block", async || a.stage.stats().shared_published == 1).await;
    a.stage.unblock(common::ISSUER, "eve", REASON).unwrap();
    eventually("A recorded the lift", async || a.stage.stats().shared_lifts_published == 1).await;

    redis.kill();
    let redis = RedisServer::start_on(port).expect("port still free");
    eventually("A recorded the lift again", async || a.stage.stats().shared_lifts_published == 2).await;
    let keys = recorded_keys(&redis).await;
    assert!(keys.len() == 1 && keys[0].contains(":lifted:"), "{keys:?}");
    assert_eq!(a.stage.stats().shared_published, 1, "the lifted block was not re-recorded");
}

#[tokio::test]
async fn a_lift_decided_on_another_replica_ends_the_block_where_it_was_decided() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let key = key_file(tmp.path(), 10);
    let (a, b, eve) = eve_blocked_by_a_and_b(&redis, &key).await;

    assert_eq!(b.stage.unblock(common::ISSUER, "eve", REASON), Ok(true), "B held the received block");
    assert!(!refuses(&b, &eve).await);
    // Counted once A's own blocks and windows were walked.
    eventually("A applied the lift", async || a.stage.stats().shared_lifts_received == 1).await;
    assert!(!refuses(&a, &eve).await, "A's own block lifted through the hash");
    assert_eq!(a.stage.blocks(), vec![]);
    eventually("B recorded the lift", async || b.stage.stats().shared_lifts_published == 1).await;
    assert!(recorded_keys(&redis).await.iter().all(|k| k.contains(":lifted:")), "A's record deleted");

    // A's windows started over too: within the same window, the threshold blocks again (it
    // would stay quiet for the rest of the window had A kept its de-duplication state).
    probe(&a, &eve).await;
    assert!(refuses(&a, &eve).await);
}

#[tokio::test]
async fn a_replica_away_during_a_lift_reads_it_on_reconnect_and_drops_its_own_block() {
    let redis = RedisServer::start_with(free_port(), &["--requirepass", "s3cret"]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let key = key_file(tmp.path(), 11);
    let authed = format!("redis://:s3cret@127.0.0.1:{}/0", redis.port);
    let (a, away) = (replica(&authed, &key, 300), replica(&redis.url(), &key, 300));
    linked(&a).await;
    let eve = principal("eve");
    probe(&away, &eve).await;
    eventually("the away replica failed to connect", async || away.stage.stats().shared_errors >= 1).await;
    assert!(refuses(&away, &eve).await, "blocked locally");

    assert_eq!(a.stage.unblock(common::ISSUER, "eve", REASON), Ok(false), "A never heard of it");
    eventually("A recorded the lift", async || a.stage.stats().shared_lifts_published == 1).await;
    // The away replica can now connect: it loads the recorded lift.
    let reply = redis.command("AUTH s3cret\r\nCONFIG SET requirepass \"\"\r\n").unwrap();
    assert!(reply.starts_with("+OK"), "{reply}");
    linked(&away).await;
    eventually("the lift was applied", async || away.stage.stats().shared_lifts_received == 1).await;
    assert!(!refuses(&away, &eve).await, "its own block lifted through the hash");
    assert!(recorded_keys(&redis).await.iter().all(|k| k.contains(":lifted:")), "not re-recorded");
}
