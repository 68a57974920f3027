//! DPoP replay memory shared by every replica through Redis (RFC 9449 §11.1).
//!
//! Each replica remembers the proofs it accepted (`dpop.replay_cache_size`), but a proof
//! captured on the way to one replica could be replayed to another within
//! `proof_max_age_secs`. With `dpop.shared_replay`, a proof that passed every local check is
//! also claimed in Redis with one `SET key 1 NX PX ttl`: the first replica to claim it wins, and
//! any other claim of the same proof is a replay. The key is a SHA-256 of the key thumbprint
//! and `jti` only, so Redis never sees a token, a subject or a proof. Redis is reached through a
//! [`Keeper`]: a request never waits for a connection, and when Redis cannot answer,
//! `failure_mode` decides (refuse, the default; or fall back to this replica's memory).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use phigate_plugin::ConfigIssue;
use phigate_redis::{ConfigKeys, Connected, Failure, Keeper, RedisTlsConfig, Timeouts, Transitions};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::AuthError;
use crate::metrics;

/// Refuse replayed DPoP proofs across replicas: every accepted proof is claimed in a Redis all
/// replicas share, for as long as it could be replayed (`proof_max_age_secs` plus skew).
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SharedReplayConfig {
    /// `rediss://[user:password@]host[:port][/db]` for TLS (TLS 1.3; the server certificate must
    /// name `host`), or `redis://...` in the clear (only on a link that is already encrypted). The
    /// `#insecure` fragment is refused. Never logged. Required.
    pub redis_url: String,
    /// Certificates for a `rediss://` URL: the CA to trust instead of the system roots, and a
    /// client certificate. Refused with `redis://`. Default: none.
    #[serde(default)]
    pub tls: Option<RedisTlsConfig>,
    /// Prefix of the claim keys (`<prefix><64 hex digits>`). Default: `phigate:dpop:jti:`.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Longest a claim may wait for Redis, in milliseconds; past it `failure_mode` applies.
    /// 1..=5000. Default: 100.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// What a DPoP request gets when Redis cannot answer: `deny` (503 `not_ready` with
    /// `Retry-After: 1`; the gateway is also not ready until Redis first answers) or `local`
    /// (this replica's own replay memory only, as without `shared_replay`). Default: deny.
    #[serde(default)]
    pub failure_mode: ReplayFailureMode,
}

/// What a DPoP request gets while the shared replay memory cannot answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplayFailureMode {
    /// Refuse with 503 `not_ready` (a replay to another replica cannot be ruled out).
    #[default]
    Deny,
    /// Accept on this replica's own replay memory (replays to other replicas go unnoticed).
    Local,
}

fn default_key_prefix() -> String {
    "phigate:dpop:jti:".to_owned()
}
fn default_timeout_ms() -> u64 {
    100
}

impl std::fmt::Debug for SharedReplayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("SharedReplayConfig")
            .field("redis_url", &"<redacted>")
            .field("tls", &self.tls)
            .field("key_prefix", &self.key_prefix)
            .field("timeout_ms", &self.timeout_ms)
            .field("failure_mode", &self.failure_mode)
            .finish()
    }
}

/// The shared replay memory.
pub(crate) struct SharedReplay {
    keeper: Arc<Keeper>,
    prefix: String,
    timeout: Duration,
    ttl_ms: u64,
    pub(crate) mode: ReplayFailureMode,
}

/// Log lines and metrics for the keeper's transitions.
struct Logged(ReplayFailureMode);

impl Transitions for Logged {
    fn attempt_failed(&self, why: Failure) {
        metrics::replay_redis_error(why);
    }

    fn changed(&self, up: bool, why: Option<Failure>) {
        metrics::replay_redis_up(up);
        if up {
            log::info!(target: "phigate::identity", "DPoP shared replay memory (redis) is available");
            return;
        }
        let mode = match self.0 {
            ReplayFailureMode::Deny => "refusing DPoP requests (failure_mode: deny)",
            ReplayFailureMode::Local => "checking DPoP replays per instance (failure_mode: local)",
        };
        let why = why.map_or_else(|| "unknown".to_owned(), |w| w.to_string());
        log::warn!(target: "phigate::identity", "DPoP shared replay memory (redis) unavailable ({why}); {mode}");
    }
}

impl SharedReplay {
    /// Checks the section; `ttl` is how long a proof could be replayed. Problems are pushed under
    /// `dpop.shared_replay.*`.
    pub(crate) fn build(
        cfg: &SharedReplayConfig,
        ttl: Duration,
        config_dir: &Path,
        issues: &mut Vec<ConfigIssue>,
    ) -> Option<SharedReplay> {
        let at = |k: &str| format!("dpop.shared_replay.{k}");
        let before = issues.len();
        if !(1..=5000).contains(&cfg.timeout_ms) {
            issues.push(ConfigIssue::new(at("timeout_ms"), "must be between 1 and 5000"));
        }
        if cfg.key_prefix.is_empty()
            || cfg.key_prefix.len() > 128
            || cfg.key_prefix.chars().any(char::is_whitespace)
        {
            issues.push(ConfigIssue::new(at("key_prefix"), "must be 1 to 128 characters without spaces"));
        }
        let (url, tls) = (at("redis_url"), at("tls"));
        let keys = ConfigKeys { url: &url, tls: &tls };
        let client = phigate_redis::client(&cfg.redis_url, cfg.tls.as_ref(), config_dir, keys, issues);
        if issues.len() > before {
            return None;
        }
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let timeouts = Timeouts { connect: timeout.max(Duration::from_secs(1)), response: timeout };
        let keeper = Keeper::new(client?, timeouts, None, Box::new(Logged(cfg.failure_mode)));
        Some(SharedReplay {
            keeper: Arc::new(keeper),
            prefix: cfg.key_prefix.clone(),
            timeout,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            mode: cfg.failure_mode,
        })
    }

    /// The connection keeper's task (runs for the life of the stage).
    pub(crate) fn keeper(&self) -> Arc<Keeper> {
        Arc::clone(&self.keeper)
    }

    /// Whether Redis has answered since start (readiness in `deny` mode).
    pub(crate) fn ever_up(&self) -> bool {
        self.keeper.ever_up()
    }

    /// Claims the proof whose fingerprint is `fp` for every replica: `Ok` when no replica had
    /// claimed it, [`AuthError::DpopProof`] for a replay, and with Redis unable to answer,
    /// [`AuthError::ReplayUnavailable`] (`deny`) or `Ok` (`local`, this replica having checked
    /// its own memory already).
    pub(crate) async fn claim(&self, fp: &[u8; 32]) -> Result<(), AuthError> {
        let outcome = match self.keeper.current() {
            None => Err((Failure::Unavailable, None)),
            Some(c) => match tokio::time::timeout(self.timeout, self.set_nx(&c, fp)).await {
                Ok(Ok(claimed)) => Ok(claimed),
                Ok(Err(e)) => Err((e, Some(c))),
                Err(_) => Err((Failure::Timeout, Some(c))),
            },
        };
        match outcome {
            Ok(true) => {
                metrics::replay_check("new");
                Ok(())
            }
            Ok(false) => {
                metrics::replay_check("replayed");
                Err(AuthError::DpopProof("proof replayed (jti claimed by another replica)"))
            }
            Err((why, conn)) => {
                metrics::replay_redis_error(why);
                self.keeper.failed(why, conn.as_ref());
                match self.mode {
                    ReplayFailureMode::Deny => {
                        metrics::replay_check("failed_denied");
                        Err(AuthError::ReplayUnavailable)
                    }
                    ReplayFailureMode::Local => {
                        metrics::replay_check("failed_local");
                        Ok(())
                    }
                }
            }
        }
    }

    async fn set_nx(&self, c: &Connected, fp: &[u8; 32]) -> Result<bool, Failure> {
        let mut key = String::with_capacity(self.prefix.len() + 64);
        key.push_str(&self.prefix);
        key.push_str(&hex::encode(fp));
        let mut conn = c.conn.clone();
        let cmd = {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&key).arg(1).arg("NX").arg("PX").arg(self.ttl_ms);
            cmd
        };
        let reply: Option<String> = cmd.query_async(&mut conn).await.map_err(|e| Failure::from_redis(&e))?;
        match reply.as_deref() {
            Some("OK") => Ok(true),
            None => Ok(false),
            Some(_) => Err(Failure::Reply),
        }
    }
}
