//! The [`RateLimitStage`]: picks the limits that apply to a request, asks the backend, and turns
//! the verdict into `Continue`, a 429 with `Retry-After`, or the failure mode's answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::RETRY_AFTER;
use http::HeaderValue;
use phigate_plugin::{async_trait, BackgroundTask, Denial, ErrorCode, Flow, Readiness, RequestCtx, Stage};

use crate::config::{FailureMode, RedisConfig};
use crate::headers;
use crate::key::Key;
use crate::limit::Limit;
use crate::memory::{LimitClock, MemoryBackend};
use crate::redis_backend::RedisBackend;

/// What the stage leaves in `ctx.extensions` when it refused a request, or let one through
/// unlimited because its backend failed: rate limiting is also an exfiltration and abuse signal.
/// (The gateway also sets `ctx.error` to `rate_limited` or `not_ready` for refusals, which is
/// what the audit record shows.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimitEvent {
    /// A limit refused the request.
    Limited {
        /// The limit's configured name.
        limit: Arc<str>,
        /// How long until that limit would let a request through.
        retry_after: Duration,
    },
    /// The shared backend could not decide; `allowed` tells what `failure_mode` did.
    BackendFailed {
        /// Whether the request was let through (`failure_mode: allow`).
        allowed: bool,
    },
}

/// What one passed limit has left, for the `RateLimit` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Applied {
    /// Index of the limit.
    pub(crate) limit: usize,
    /// Requests that could be sent at once now.
    pub(crate) remaining: u32,
    /// Time until the bucket is full again.
    pub(crate) reset: Duration,
}

/// A backend's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Every applicable limit let the request through.
    Allow,
    /// Limit `limit` refused it; it would conform after `retry_after`.
    Limited { limit: usize, retry_after: Duration },
}

/// A validated `redis:` section.
pub(crate) struct RedisParts {
    pub(crate) cfg: RedisConfig,
    pub(crate) client: redis::Client,
    /// The contents of `hmac_key_path`.
    pub(crate) hmac_key: Option<Vec<u8>>,
}

/// Everything [`RateLimitConfig::build`](crate::RateLimitConfig::build) validated.
pub(crate) struct StageParts {
    pub(crate) limits: Vec<Limit>,
    pub(crate) routes: usize,
    pub(crate) redis: Option<RedisParts>,
    pub(crate) ipv6_prefix_len: u8,
    pub(crate) response_headers: bool,
    pub(crate) sweep_interval: Duration,
}

pub(crate) struct Inner {
    pub(crate) limits: Box<[Limit]>,
    /// For each route index, the limits that count requests on it, in configured order.
    by_route: Box<[Box<[usize]>]>,
    /// The limits without a route filter (for a route index the stage was not built with).
    unrouted: Box<[usize]>,
    /// The shared backend, with `backend: redis`.
    redis: Option<Arc<RedisBackend>>,
    /// In-memory limiters: the backend with `backend: memory`, the fallback with
    /// `failure_mode: local`.
    memory: Option<MemoryBackend>,
    ipv6_prefix_len: u8,
    response_headers: bool,
    sweep_interval: Duration,
}

/// The rate-limit stage. Built by [`RateLimitConfig::build`](crate::RateLimitConfig::build).
pub struct RateLimitStage {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for RateLimitStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitStage").field("limits", &self.inner.limits.len()).finish_non_exhaustive()
    }
}

impl RateLimitStage {
    pub(crate) fn new(parts: StageParts) -> Self {
        Self::with_clock(parts, LimitClock::Monotonic(Instant::now()))
    }

    /// Keys the in-memory backend holds right now, over all limits (0 with Redis). Each costs
    /// about 170 bytes, the map's spare capacity included (measured in `benches/limit.rs`).
    pub fn tracked_keys(&self) -> usize {
        self.inner.memory.as_ref().map_or(0, MemoryBackend::key_count)
    }

    /// Runs the in-memory sweep now (the background task runs it every `sweep_interval_secs`):
    /// forgets the keys whose bucket is full again, and returns the keys left.
    pub fn sweep_now(&self) -> usize {
        self.inner.memory.as_ref().map_or(0, |m| m.sweep(&self.inner.limits))
    }

    pub(crate) fn with_clock(parts: StageParts, clock: LimitClock) -> Self {
        let by_route = (0..parts.routes)
            .map(|r| {
                let on_route = parts.limits.iter().enumerate().filter(|(_, l)| l.counts_route(r));
                on_route.map(|(i, _)| i).collect()
            })
            .collect();
        let unrouted =
            parts.limits.iter().enumerate().filter(|(_, l)| l.routes.is_none()).map(|(i, _)| i).collect();
        let redis = parts.redis.as_ref().map(|r| {
            Arc::new(RedisBackend::new(&r.cfg, r.client.clone(), r.hmac_key.as_deref(), &parts.limits))
        });
        let local = redis.as_ref().is_none_or(|r| r.failure_mode == FailureMode::Local);
        let memory = local.then(|| MemoryBackend::new(&parts.limits, clock));
        let inner = Inner {
            limits: parts.limits.into(),
            by_route,
            unrouted,
            redis,
            memory,
            ipv6_prefix_len: parts.ipv6_prefix_len,
            response_headers: parts.response_headers,
            sweep_interval: parts.sweep_interval,
        };
        RateLimitStage { inner: Arc::new(inner) }
    }
}

impl Inner {
    /// The limits that count this request, in order, with the request's key under each.
    fn applicable<'a>(&'a self, ctx: &'a RequestCtx) -> impl Iterator<Item = (usize, &'a Limit, Key)> + 'a {
        let list = self.by_route.get(ctx.route.index).unwrap_or(&self.unrouted);
        list.iter().filter_map(move |&i| {
            let limit = self.limits.get(i)?;
            let counts = limit.counts_method(&ctx.request.method);
            counts.then(|| (i, limit, Key::of(ctx, limit.dims, self.ipv6_prefix_len)))
        })
    }

    /// The answer for a limited request: 429 `rate_limited` with `Retry-After`.
    fn limited(&self, ctx: &mut RequestCtx, limit: usize, retry_after: Duration) -> Denial {
        let Some(l) = self.limits.get(limit) else { return Denial::new(ErrorCode::InternalError) };
        let secs = retry_after_secs(retry_after);
        let mut denial = Denial::new(ErrorCode::RateLimited)
            .with_header(RETRY_AFTER, HeaderValue::from(secs))
            .with_cause(format!("limit {} exceeded", l.name));
        if self.response_headers {
            for (name, value) in headers::for_denial(l, secs) {
                denial = denial.with_header(name, value);
            }
        }
        ctx.extensions.insert(RateLimitEvent::Limited { limit: Arc::clone(&l.name), retry_after });
        denial
    }

    /// The answer when the backend failed: the failure mode decides, and it is counted.
    fn failed(
        &self,
        ctx: &mut RequestCtx,
        mode: FailureMode,
        why: &str,
        counted: &[usize],
    ) -> Result<Flow, Denial> {
        let allowed = mode != FailureMode::Deny;
        for m in counted.iter().filter_map(|&i| self.limits.get(i)).map(|l| &l.metrics) {
            match mode {
                FailureMode::Allow => m.failure_allowed.inc(),
                FailureMode::Deny => m.failure_denied.inc(),
                FailureMode::Local => m.failure_local.inc(),
            }
        }
        ctx.extensions.insert(RateLimitEvent::BackendFailed { allowed });
        if allowed {
            return Ok(Flow::Continue);
        }
        Err(Denial::new(ErrorCode::NotReady)
            .with_header(RETRY_AFTER, HeaderValue::from_static("1"))
            .with_cause(format!("rate-limit backend failed ({why})")))
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1 (RFC 9110 §10.2.3 has no fractions).
pub(crate) fn retry_after_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

#[async_trait]
impl Stage for RateLimitStage {
    fn name(&self) -> &'static str {
        "ratelimit"
    }

    fn readiness(&self) -> Readiness {
        match &self.inner.redis {
            None => Readiness::Ready(None),
            Some(r) if !r.ever_up() => Readiness::NotReady("redis has not answered yet".into()),
            Some(r) if r.is_up() => Readiness::Ready(None),
            // Every replica shares this Redis: going unready would empty the whole service at
            // once. Requests get the failure mode instead, and the detail shows it.
            Some(r) => Readiness::Ready(Some(match r.failure_mode {
                FailureMode::Deny => "redis unavailable: refusing requests".into(),
                FailureMode::Allow => "redis unavailable: not limiting".into(),
                FailureMode::Local => "redis unavailable: limiting per instance".into(),
            })),
        }
    }

    fn background_tasks(&self) -> Vec<BackgroundTask> {
        let mut tasks: Vec<BackgroundTask> = Vec::new();
        if let Some(r) = &self.inner.redis {
            tasks.push(Box::pin(Arc::clone(r).run()));
        }
        if self.inner.memory.is_some() {
            let inner = Arc::clone(&self.inner);
            tasks.push(Box::pin(async move {
                let mut tick = tokio::time::interval(inner.sweep_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if let Some(m) = &inner.memory {
                        m.sweep(&inner.limits);
                    }
                }
            }));
        }
        tasks
    }

    async fn on_request(&self, ctx: &mut RequestCtx) -> Result<Flow, Denial> {
        let inner = &*self.inner;
        let mut applied = inner.response_headers.then(Vec::new);
        let shared = match &inner.redis {
            Some(r) => match r.check(inner.applicable(ctx), applied.as_mut()).await {
                Ok(v) => Some(v),
                Err((e, counted)) => {
                    let flow = inner.failed(ctx, r.failure_mode, crate::error::kind(e), &counted);
                    if r.failure_mode != FailureMode::Local {
                        return flow;
                    }
                    None
                }
            },
            None => None,
        };
        let verdict = match (shared, &inner.memory) {
            (Some(v), _) => v,
            (None, Some(m)) => m.check(inner.applicable(ctx), applied.as_mut()),
            // Unreachable by construction (no Redis means memory); refuse rather than guess.
            (None, None) => {
                return Err(Denial::new(ErrorCode::InternalError).with_cause("no rate-limit backend"))
            }
        };
        match verdict {
            Verdict::Allow => {
                if let Some(applied) = applied.filter(|a| !a.is_empty()) {
                    ctx.response.add_headers.extend(headers::for_allowed(&inner.limits, &applied));
                }
                Ok(Flow::Continue)
            }
            Verdict::Limited { limit, retry_after } => Err(inner.limited(ctx, limit, retry_after)),
        }
    }
}
