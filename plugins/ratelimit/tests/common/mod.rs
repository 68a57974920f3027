//! Test support: a real `redis-server` on a free loopback port, killed on drop; request contexts.

#![allow(dead_code, unreachable_pub, unused_imports)]

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use http::{HeaderMap, Method};
use phigate_plugin::{
    Principal, Readiness, RequestCtx, RequestId, RequestInfo, RouteMeta, Stage, StageBuildCtx, Subject,
};
use phigate_ratelimit::{RateLimitConfig, RateLimitStage};

pub use phigate_test_redis::{eventually, free_port, install_tls13_provider, pki, tls_server, RedisServer};

pub fn routes() -> Vec<Arc<RouteMeta>> {
    ["fhir", "admin"]
        .iter()
        .enumerate()
        .map(|(index, name)| {
            Arc::new(RouteMeta {
                name: (*name).into(),
                index,
                prefix: format!("/{name}").into(),
                fhir: index == 0,
                upstream: "up".into(),
            })
        })
        .collect()
}

/// Builds the stage and spawns its background tasks on the current runtime.
pub fn stage(cfg: RateLimitConfig) -> Arc<RateLimitStage> {
    stage_in(cfg, Path::new("/"))
}

/// [`stage`], with relative file paths resolved against `config_dir`.
pub fn stage_in(cfg: RateLimitConfig, config_dir: &Path) -> Arc<RateLimitStage> {
    let routes = routes();
    let ctx = StageBuildCtx { routes: &routes, config_dir };
    let stage = Arc::new(cfg.build(&ctx).expect("valid config"));
    for task in stage.background_tasks() {
        tokio::spawn(task);
    }
    stage
}

pub async fn ready(stage: &RateLimitStage) {
    eventually("stage ready", async || matches!(stage.readiness(), Readiness::Ready(None))).await;
}

pub fn principal(sub: &str) -> Arc<Principal> {
    Arc::new(Principal::new("https://issuer.test", Subject::from(sub)))
}

pub fn ctx(sub: Option<&str>, route: usize) -> RequestCtx {
    let info = RequestInfo {
        method: Method::GET,
        path: "/fhir/Patient".into(),
        query: vec![],
        headers: HeaderMap::new(),
        body: None,
    };
    let mut ctx = RequestCtx::new(RequestId::new("r"), Arc::clone(&routes()[route]), info);
    ctx.principal = sub.map(principal);
    ctx.client.ip = Some("192.0.2.10".parse::<IpAddr>().expect("ip"));
    ctx
}

/// The value of `phigate_ratelimit_decisions_total{limit, result}`.
pub fn decisions(limit: &str, result: &str) -> u64 {
    counter("phigate_ratelimit_decisions_total", &[("limit", limit), ("result", result)])
}

/// `phigate_ratelimit_backend_errors_total`, summed over kinds.
pub fn backend_errors() -> u64 {
    counter("phigate_ratelimit_backend_errors_total", &[])
}

/// `phigate_ratelimit_backend_errors_total{kind}`.
pub fn backend_errors_of(kind: &str) -> u64 {
    counter("phigate_ratelimit_backend_errors_total", &[("kind", kind)])
}

fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    let mut total = 0.0;
    for family in prometheus::gather().iter().filter(|f| f.name() == name) {
        for m in family.get_metric() {
            let has = |(k, v): &(&str, &str)| m.get_label().iter().any(|l| l.name() == *k && l.value() == *v);
            if labels.iter().all(has) {
                total += m.get_counter().get_value();
            }
        }
    }
    total as u64
}
