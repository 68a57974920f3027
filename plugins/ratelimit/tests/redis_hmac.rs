//! `redis.hmac_key_path` against a real `redis-server`: Redis keys name callers by an HMAC under
//! the shared key, so neither the identity nor its plain SHA-256 (which anyone can compute from
//! a guess) appears in Redis; gateways with the same key share limits, with another key they
//! do not. Plus the key file's config errors, named like exfil's `shared.hmac_key_path`.

mod common;

use std::path::{Path, PathBuf};

use common::{ctx, ready, stage, RedisServer};
use phigate_plugin::{ConfigIssue, ErrorCode, Stage, StageBuildCtx};
use phigate_ratelimit::{BackendKind, FailureMode, LimitConfig, RateLimitConfig, RedisConfig};
use sha2::{Digest, Sha256};

const ISSUER: &str = "https://issuer.test";
/// The address `common::ctx` gives every request.
const ADDRESS: [u8; 4] = [192, 0, 2, 10];

fn config(url: &str, key: Option<PathBuf>, limits: Vec<LimitConfig>) -> RateLimitConfig {
    let mut cfg = RateLimitConfig::new(limits);
    cfg.backend = BackendKind::Redis;
    let redis = RedisConfig { failure_mode: FailureMode::Deny, timeout_ms: 500, ..RedisConfig::new(url) };
    cfg.redis = Some(RedisConfig { hmac_key_path: key, ..redis });
    cfg
}

fn slow(name: &str, key: &str) -> LimitConfig {
    LimitConfig { burst: Some(3), ..LimitConfig::new(name, key, 3, 3600) }
}

fn key_file(dir: &Path, name: &str, byte: u8) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, [byte; 32]).expect("write key");
    p
}

/// The name a plain SHA-256 gives `fields` (tag, bytes): what anyone can compute from a guess.
fn plain_name(fields: &[(u8, &[u8])]) -> String {
    let mut h = Sha256::new();
    for (tag, bytes) in fields {
        h.update([*tag]);
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn keys(server: &RedisServer, pattern: &str) -> String {
    server.command(&format!("KEYS {pattern}\r\n")).expect("KEYS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_hmac_key_no_redis_key_holds_the_identity_or_its_plain_sha256() {
    let server = RedisServer::start();
    let tmp = tempfile::tempdir().expect("temp dir");
    let by_principal = plain_name(&[(b'i', ISSUER.as_bytes()), (b's', b"alice@example.org"), (b'n', b"")]);
    let by_address = plain_name(&[(b'a', b""), (b'4', &ADDRESS)]);

    // Without a key the names are the plain SHA-256: the computation above is the real one.
    let plain =
        stage(config(&server.url(), None, vec![slow("plain_p", "principal"), slow("plain_ip", "client_ip")]));
    ready(&plain).await;
    assert!(plain.on_request(&mut ctx(Some("alice@example.org"), 0)).await.is_ok());
    let unkeyed = keys(&server, "phigate:rl:plain_*");
    assert!(unkeyed.contains(&format!("plain_p:{by_principal}")), "{unkeyed}");
    assert!(unkeyed.contains(&format!("plain_ip:{by_address}")), "{unkeyed}");

    let key = key_file(tmp.path(), "rl.key", 1);
    let limits = vec![
        slow("keyed_p", "principal"),
        slow("keyed_ip", "client_ip"),
        slow("keyed_pr", "principal+route"),
    ];
    let keyed = stage(config(&server.url(), Some(key), limits));
    ready(&keyed).await;
    assert!(keyed.on_request(&mut ctx(Some("alice@example.org"), 0)).await.is_ok());
    let names = keys(&server, "phigate:rl:keyed_*");
    assert!(names.starts_with("*3"), "one key per limit: {names}");
    for hidden in [by_principal.as_str(), by_address.as_str(), "alice", "example.org", "192.0.2.10", "issuer"]
    {
        assert!(!names.contains(hidden), "{hidden} in {names}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_with_the_same_hmac_key_share_the_limit_and_with_another_key_do_not() {
    let server = RedisServer::start();
    let tmp = tempfile::tempdir().expect("temp dir");
    let (one, other) = (key_file(tmp.path(), "one.key", 1), key_file(tmp.path(), "other.key", 2));
    let gateway = |key: &PathBuf| {
        stage(config(&server.url(), Some(key.clone()), vec![slow("hmac_shared", "principal")]))
    };
    let (a, b, c) = (gateway(&one), gateway(&one), gateway(&other));
    for s in [&a, &b, &c] {
        ready(s).await;
    }
    assert!(a.on_request(&mut ctx(Some("alice"), 0)).await.is_ok());
    assert!(b.on_request(&mut ctx(Some("alice"), 0)).await.is_ok());
    assert!(a.on_request(&mut ctx(Some("alice"), 0)).await.is_ok());
    let d = b.on_request(&mut ctx(Some("alice"), 0)).await.expect_err("burst of 3 spent across a and b");
    assert_eq!(d.code, ErrorCode::RateLimited);
    for n in 0..3 {
        assert!(c.on_request(&mut ctx(Some("alice"), 0)).await.is_ok(), "another key, another bucket ({n})");
    }
    assert_eq!(
        c.on_request(&mut ctx(Some("alice"), 0)).await.expect_err("its own burst").code,
        ErrorCode::RateLimited
    );
    assert!(keys(&server, "phigate:rl:hmac_shared:*").starts_with("*2"), "two buckets, one per key");
}

#[test]
fn a_short_or_missing_hmac_key_is_named_by_its_key_and_paths_are_relative() {
    let tmp = tempfile::tempdir().expect("temp dir");
    std::fs::write(tmp.path().join("short.key"), [1u8; 31]).expect("write");
    key_file(tmp.path(), "good.key", 1);
    let routes = common::routes();
    let build = |key: &str| {
        let cfg = config("redis://127.0.0.1:1/0", Some(key.into()), vec![slow("l", "principal")]);
        cfg.build(&StageBuildCtx { routes: &routes, config_dir: tmp.path() }).err()
    };
    let paths = |issues: &[ConfigIssue]| issues.iter().map(|i| i.key_path.clone()).collect::<Vec<_>>();
    let short = build("short.key").expect("too short");
    assert_eq!(paths(&short), ["redis.hmac_key_path"]);
    assert_eq!(short[0].message, "key shorter than 32 bytes");
    let missing = build("secret-dir/none.key").expect("missing");
    assert_eq!(paths(&missing), ["redis.hmac_key_path"]);
    assert!(missing[0].message.starts_with("cannot be read") && !missing[0].message.contains("secret-dir"));
    assert!(build("good.key").is_none(), "relative to the config dir");
}
