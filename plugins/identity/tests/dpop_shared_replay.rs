//! The DPoP replay memory shared through a real Redis (RFC 9449 §11.1): two replicas (two
//! stages) refuse each other's proofs; Redis holds only a hash with an expiry; with Redis down
//! `deny` answers 503 and `local` falls back to the replica's own memory; the gateway is not
//! ready until Redis answers; and the section's config errors name their keys.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderValue;
use phigate_identity::dev::DevIssuer;
use phigate_identity::{IdentityConfig, IdentityStage};
use phigate_plugin::{ConfigIssue, ErrorCode, Flow, Readiness, RequestCtx, RouteMeta, Stage, StageBuildCtx};
use phigate_test_redis::{eventually, RedisServer};
use serde_json::json;
use sha2::{Digest, Sha256};
use support::*;

const ISS: &str = "https://idp.test";
const HOST: &str = "gw.phigate.test";
const PATH: &str = "/a/Patient/1";

struct Replicas {
    idp: DevIssuer,
    a: IdentityStage,
    b: IdentityStage,
    routes: Vec<Arc<RouteMeta>>,
    client: DevIssuer,
    token: String,
}

/// Two stages built from the same config (as two gateway replicas), with `shared` as the
/// `dpop.shared_replay` section (`None`: no shared memory), their background tasks running.
fn replicas(shared: Option<String>) -> Replicas {
    let idp = DevIssuer::es256(ISS).unwrap();
    let dir = temp_dir("dpop-shared");
    let jwks = file_issuer(&dir, "idp", &[&idp]);
    let dpop = shared.map_or(String::new(), |s| format!("dpop:\n  shared_replay: {s}\n"));
    let yaml = format!(
        "issuers:\n  - issuer: {ISS}\n    audiences: [\"{AUD}\"]\n    jwks_path: {jwks}\n{dpop}\
         defaults: {{ require_mfa: false }}\n"
    );
    let routes = routes(&["a"]);
    let [a, b] = [0, 1].map(|_| {
        let stage = build(&yaml, &routes, &dir);
        for task in stage.background_tasks() {
            tokio::spawn(task);
        }
        stage
    });
    let client = DevIssuer::es256("client").unwrap();
    let jkt = client.jwk_thumbprint().unwrap();
    let token = idp.sign(&idp.claims("alice", AUD, now()).set("cnf", json!({"jkt": jkt})));
    Replicas { idp, a, b, routes, client, token }
}

fn shared(url: &str, mode: &str) -> Option<String> {
    Some(format!("{{ redis_url: \"{url}\", failure_mode: {mode}, timeout_ms: 500 }}"))
}

impl Replicas {
    fn proof(&self, jti: &str) -> String {
        let claims = json!({
            "jti": jti, "htm": "GET", "htu": format!("https://{HOST}{PATH}"), "iat": now(),
            "ath": URL_SAFE_NO_PAD.encode(Sha256::digest(self.token.as_bytes())),
        });
        let header = json!({"typ": "dpop+jwt", "alg": self.client.alg(), "jwk": self.client.jwk()});
        self.client.sign_raw(&header, &claims)
    }

    fn request(&self, proof: &str) -> RequestCtx {
        let mut ctx = request(&self.routes[0], &[&format!("DPoP {}", self.token)]);
        ctx.request.headers.insert(http::header::HOST, HeaderValue::from_static(HOST));
        ctx.request.headers.insert("dpop", HeaderValue::from_str(proof).unwrap());
        ctx
    }

    /// `Ok(())` when `stage` accepts `proof`, else the refusal's code.
    async fn send(&self, stage: &IdentityStage, proof: &str) -> Result<(), (ErrorCode, Option<String>)> {
        match run(stage, &mut self.request(proof)).await {
            Ok(Flow::Continue) => Ok(()),
            Ok(other) => panic!("unexpected flow {other:?}"),
            Err(d) => {
                let retry = d
                    .headers
                    .iter()
                    .find(|(n, _)| n == "retry-after")
                    .map(|(_, v)| v.to_str().unwrap().to_owned());
                Err((d.code, retry))
            }
        }
    }

    async fn wait_ready(&self) {
        eventually("both replicas ready", async || {
            matches!(self.a.readiness(), Readiness::Ready(_))
                && matches!(self.b.readiness(), Readiness::Ready(_))
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_accepted_by_one_replica_is_refused_by_the_other() {
    let redis = RedisServer::start();
    let r = replicas(shared(&redis.url(), "deny"));
    r.wait_ready().await;
    let first = r.proof("shared-1");
    assert_eq!(r.send(&r.a, &first).await, Ok(()));
    assert_eq!(r.send(&r.b, &first).await, Err((ErrorCode::DpopProofInvalid, None)));
    // And the other way round; fresh proofs are accepted by either.
    let second = r.proof("shared-2");
    assert_eq!(r.send(&r.b, &second).await, Ok(()));
    assert_eq!(r.send(&r.a, &second).await, Err((ErrorCode::DpopProofInvalid, None)));
    assert_eq!(r.send(&r.a, &r.proof("shared-3")).await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_shared_memory_another_replica_accepts_the_replay() {
    // What the section closes: each replica alone only knows its own proofs.
    let r = replicas(None);
    let proof = r.proof("alone-1");
    assert_eq!(r.send(&r.a, &proof).await, Ok(()));
    assert_eq!(r.send(&r.b, &proof).await, Ok(()));
    assert_eq!(r.send(&r.b, &proof).await, Err((ErrorCode::DpopProofInvalid, None)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_only_a_hash_of_key_and_jti_expiring_with_the_proof() {
    let redis = RedisServer::start();
    let r = replicas(shared(&redis.url(), "deny"));
    r.wait_ready().await;
    assert_eq!(r.send(&r.a, &r.proof("visible-jti")).await, Ok(()));
    let keys = redis.command("KEYS *\r\n").unwrap();
    assert!(keys.contains("phigate:dpop:jti:"), "{keys}");
    assert!(!keys.contains("visible-jti") && !keys.contains("alice"), "no jti or subject in Redis: {keys}");
    let key = keys.lines().find(|l| l.starts_with("phigate:dpop:jti:")).unwrap();
    assert_eq!(key.len(), "phigate:dpop:jti:".len() + 64, "{key}");
    // proof_max_age_secs (60) + skew (5) + 1, in milliseconds.
    let ttl: i64 =
        redis.command(&format!("PTTL {key}\r\n")).unwrap().trim_start_matches(':').trim().parse().unwrap();
    assert!(ttl > 60_000 && ttl <= 66_000, "{ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_denies_503_with_retry_after_and_recovers_when_it_returns() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let r = replicas(shared(&redis.url(), "deny"));
    r.wait_ready().await;
    redis.kill();
    assert_eq!(r.send(&r.a, &r.proof("down-1")).await, Err((ErrorCode::NotReady, Some("1".into()))));
    // Plain bearer tokens do not need Redis.
    let plain = r.idp.sign(&r.idp.claims("bob", AUD, now()));
    assert!(run(&r.a, &mut bearer(&r.routes[0], &plain)).await.is_ok());
    let _redis = RedisServer::start_on(port).expect("restart on the same port");
    // Each replica's keeper reconnects on its own (after a request's report or its next PING).
    let mut n = 0;
    for stage in [&r.a, &r.b] {
        eventually("a DPoP request is accepted again", async || {
            n += 1;
            r.send(stage, &r.proof(&format!("back-{n}"))).await.is_ok()
        })
        .await;
    }
    let proof = r.proof("after");
    assert_eq!(r.send(&r.b, &proof).await, Ok(()));
    assert_eq!(r.send(&r.a, &proof).await, Err((ErrorCode::DpopProofInvalid, None)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_with_local_falls_back_to_the_replicas_own_memory() {
    let mut redis = RedisServer::start();
    let r = replicas(shared(&redis.url(), "local"));
    r.wait_ready().await;
    redis.kill();
    let proof = r.proof("local-1");
    assert_eq!(r.send(&r.a, &proof).await, Ok(()));
    assert_eq!(r.send(&r.a, &proof).await, Err((ErrorCode::DpopProofInvalid, None)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_redis_answers_in_deny_mode_but_ready_in_local_mode() {
    let port = phigate_test_redis::free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let deny = replicas(shared(&url, "deny"));
    assert!(matches!(deny.a.readiness(), Readiness::NotReady(_)));
    let local = replicas(shared(&url, "local"));
    assert!(matches!(local.a.readiness(), Readiness::Ready(_)));
    let _redis = RedisServer::start_on(port).expect("start on the chosen port");
    deny.wait_ready().await;
}

fn issues(dir: &Path, shared: &str) -> Vec<ConfigIssue> {
    let idp = DevIssuer::es256(ISS).unwrap();
    let jwks = file_issuer(dir, "idp", &[&idp]);
    let yaml = format!(
        "issuers:\n  - issuer: {ISS}\n    audiences: [\"{AUD}\"]\n    jwks_path: {jwks}\n\
         dpop:\n  shared_replay: {shared}\n"
    );
    let cfg: IdentityConfig = serde_yaml::from_str(&yaml).unwrap();
    let routes = routes(&["a"]);
    cfg.build(&StageBuildCtx { routes: &routes, config_dir: dir }).err().unwrap_or_default()
}

#[test]
fn config_errors_name_their_keys_and_never_echo_the_url() {
    let dir = temp_dir("dpop-shared-config");
    let cases = [
        ("{ redis_url: \"redis://:s3cret@127.0.0.1:1/0\", timeout_ms: 0 }", "dpop.shared_replay.timeout_ms"),
        ("{ redis_url: \"http://s3cret@x\" }", "dpop.shared_replay.redis_url"),
        ("{ redis_url: \"rediss://:s3cret@127.0.0.1:1/0#insecure\" }", "dpop.shared_replay.redis_url"),
        ("{ redis_url: \"redis://127.0.0.1:1/0\", key_prefix: \"a b\" }", "dpop.shared_replay.key_prefix"),
        ("{ redis_url: \"redis://127.0.0.1:1/0\", tls: { ca_path: ca.pem } }", "dpop.shared_replay.tls"),
    ];
    for (section, key) in cases {
        let found = issues(&dir, section);
        assert!(found.iter().any(|i| i.key_path == key), "{section}: {found:?}");
        assert!(found.iter().all(|i| !i.message.contains("s3cret")), "{found:?}");
    }
    assert!(issues(&dir, "{ redis_url: \"redis://127.0.0.1:1/0\" }").is_empty());
}
