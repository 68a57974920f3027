//! The stage end to end on the in-memory backend, with a fake clock: every decision below is
//! exact, no test waits for real time.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::FakeRelativeClock;
use http::{HeaderMap, Method};
use phigate_plugin::{
    Denial, ErrorCode, Flow, Principal, RequestCtx, RequestId, RequestInfo, RouteMeta, Stage, StageBuildCtx,
    Subject, TenantId,
};

use crate::memory::LimitClock;
use crate::{LimitConfig, RateLimitConfig, RateLimitEvent, RateLimitStage};

fn routes() -> Vec<Arc<RouteMeta>> {
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

fn stage(cfg: RateLimitConfig, clock: &FakeRelativeClock) -> RateLimitStage {
    let routes = routes();
    let ctx = StageBuildCtx { routes: &routes, config_dir: Path::new("/") };
    let parts = cfg.into_parts(&ctx).expect("valid config");
    RateLimitStage::with_clock(parts, LimitClock::Fake(clock.clone()))
}

fn one(limit: LimitConfig) -> RateLimitConfig {
    RateLimitConfig::new(vec![limit])
}

fn limit(name: &str, key: &str, requests: u32, period_secs: u32, burst: u32) -> LimitConfig {
    LimitConfig { burst: Some(burst), ..LimitConfig::new(name, key, requests, period_secs) }
}

fn principal(iss: &str, sub: &str, tenant: Option<&str>) -> Arc<Principal> {
    Arc::new(Principal { tenant: tenant.map(TenantId::from), ..Principal::new(iss, Subject::from(sub)) })
}

struct Req {
    route: usize,
    method: Method,
    who: Option<Arc<Principal>>,
    ip: &'static str,
}

fn req(who: Option<Arc<Principal>>, ip: &'static str) -> Req {
    Req { route: 0, method: Method::GET, who, ip }
}

fn ctx(r: &Req) -> RequestCtx {
    let info = RequestInfo {
        method: r.method.clone(),
        path: "/fhir/Patient".into(),
        query: vec![],
        headers: HeaderMap::new(),
        body: None,
    };
    let mut ctx = RequestCtx::new(RequestId::new("r1"), Arc::clone(&routes()[r.route]), info);
    ctx.principal = r.who.clone();
    ctx.client.ip = Some(r.ip.parse::<IpAddr>().expect("ip"));
    ctx
}

async fn send(s: &RateLimitStage, r: &Req) -> Result<Flow, Denial> {
    s.on_request(&mut ctx(r)).await
}

async fn allowed(s: &RateLimitStage, r: &Req) -> bool {
    match send(s, r).await {
        Ok(Flow::Continue) => true,
        Err(d) if d.code == ErrorCode::RateLimited => false,
        other => panic!("unexpected {other:?}"),
    }
}

fn retry_after(d: &Denial) -> &str {
    let v = d.headers.iter().find(|(n, _)| n == http::header::RETRY_AFTER).expect("Retry-After");
    v.1.to_str().expect("ascii")
}

#[tokio::test]
async fn burst_passes_then_429_rate_limited_with_retry_after_rounded_up() {
    let clock = FakeRelativeClock::default();
    // 10 per minute: one every 6 s, 2 at once.
    let s = stage(one(limit("per_user", "principal", 10, 60, 2)), &clock);
    let alice = req(Some(principal("iss", "alice", None)), "192.0.2.1");
    assert!(allowed(&s, &alice).await);
    assert!(allowed(&s, &alice).await);
    let d = send(&s, &alice).await.expect_err("third is over the burst");
    assert_eq!(d.code, ErrorCode::RateLimited);
    assert_eq!(d.code.status(), 429);
    assert_eq!(retry_after(&d), "6");
    clock.advance(Duration::from_millis(2_500));
    let d = send(&s, &alice).await.expect_err("still limited");
    assert_eq!(retry_after(&d), "4", "3.5 s left rounds up to 4");
    assert!(d.cause.as_deref().is_some_and(|c| c.contains("per_user") && !c.contains("alice")));
}

#[tokio::test]
async fn bucket_refills_one_request_per_emission_interval() {
    let clock = FakeRelativeClock::default();
    let s = stage(one(limit("per_user", "principal", 10, 60, 2)), &clock);
    let alice = req(Some(principal("iss", "alice", None)), "192.0.2.1");
    assert!(allowed(&s, &alice).await && allowed(&s, &alice).await);
    assert!(!allowed(&s, &alice).await);
    clock.advance(Duration::from_secs(6));
    assert!(allowed(&s, &alice).await, "one request refilled after T = 6 s");
    assert!(!allowed(&s, &alice).await, "and only one");
    clock.advance(Duration::from_secs(60));
    assert!(allowed(&s, &alice).await && allowed(&s, &alice).await, "idle key gets its whole burst");
    assert!(!allowed(&s, &alice).await, "never more than the burst");
}

#[tokio::test]
async fn different_principals_and_issuers_have_independent_buckets() {
    let clock = FakeRelativeClock::default();
    let s = stage(one(limit("per_user", "principal", 1, 60, 1)), &clock);
    let alice = req(Some(principal("iss-a", "alice", None)), "192.0.2.1");
    let bob = req(Some(principal("iss-a", "bob", None)), "192.0.2.1");
    let alice_elsewhere = req(Some(principal("iss-b", "alice", None)), "192.0.2.1");
    assert!(allowed(&s, &alice).await);
    assert!(!allowed(&s, &alice).await);
    assert!(allowed(&s, &bob).await, "same IP, other subject");
    assert!(allowed(&s, &alice_elsewhere).await, "same subject, other issuer");
}

#[tokio::test]
async fn route_filter_limits_only_the_named_routes() {
    let clock = FakeRelativeClock::default();
    let mut l = limit("fhir_only", "principal", 1, 60, 1);
    l.routes = Some(vec!["fhir".into()]);
    let s = stage(one(l), &clock);
    let who = Some(principal("iss", "alice", None));
    let on_fhir = req(who.clone(), "192.0.2.1");
    let on_admin = Req { route: 1, ..req(who, "192.0.2.1") };
    assert!(allowed(&s, &on_fhir).await);
    assert!(!allowed(&s, &on_fhir).await);
    for _ in 0..5 {
        assert!(allowed(&s, &on_admin).await, "admin is not limited");
    }
}

#[tokio::test]
async fn method_filter_limits_only_the_named_methods() {
    let clock = FakeRelativeClock::default();
    let mut l = limit("writes", "principal", 1, 60, 1);
    l.methods = Some(vec!["POST".into(), "PUT".into()]);
    let s = stage(one(l), &clock);
    let who = Some(principal("iss", "alice", None));
    let post = Req { method: Method::POST, ..req(who.clone(), "192.0.2.1") };
    let put = Req { method: Method::PUT, ..req(who.clone(), "192.0.2.1") };
    let get = req(who, "192.0.2.1");
    assert!(allowed(&s, &post).await);
    assert!(!allowed(&s, &put).await, "POST and PUT share the bucket");
    for _ in 0..5 {
        assert!(allowed(&s, &get).await, "GET is not limited");
    }
}

#[tokio::test]
async fn requests_without_principal_fall_back_to_client_ip() {
    let clock = FakeRelativeClock::default();
    let s = stage(one(limit("per_user", "principal", 1, 60, 1)), &clock);
    let anon_1 = req(None, "192.0.2.1");
    let anon_2 = req(None, "192.0.2.2");
    let alice_on_1 = req(Some(principal("iss", "alice", None)), "192.0.2.1");
    assert!(allowed(&s, &anon_1).await);
    assert!(!allowed(&s, &anon_1).await, "anonymous requests are limited per address");
    assert!(allowed(&s, &anon_2).await, "another address has its own bucket");
    assert!(allowed(&s, &alice_on_1).await, "a principal is not charged for anonymous traffic");
}

#[tokio::test]
async fn tenant_key_shares_a_bucket_and_tenantless_callers_fall_back_to_ip() {
    let clock = FakeRelativeClock::default();
    let s = stage(one(limit("per_tenant", "tenant", 2, 60, 2)), &clock);
    let a1 = req(Some(principal("iss", "u1", Some("tenant-a"))), "192.0.2.1");
    let a2 = req(Some(principal("iss", "u2", Some("tenant-a"))), "192.0.2.9");
    let b1 = req(Some(principal("iss", "u3", Some("tenant-b"))), "192.0.2.1");
    let none = req(Some(principal("iss", "u4", None)), "192.0.2.1");
    assert!(allowed(&s, &a1).await && allowed(&s, &a2).await);
    assert!(!allowed(&s, &a1).await, "tenant-a spent its burst across users");
    assert!(allowed(&s, &b1).await, "tenant-b is independent");
    assert!(allowed(&s, &none).await && allowed(&s, &none).await);
    assert!(!allowed(&s, &none).await, "no tenant: keyed by address");
}

#[tokio::test]
async fn ipv6_clients_in_one_prefix_share_a_bucket() {
    let clock = FakeRelativeClock::default();
    let s = stage(one(limit("per_ip", "client_ip", 1, 60, 1)), &clock);
    assert!(allowed(&s, &req(None, "2001:db8:0:1::1")).await);
    assert!(!allowed(&s, &req(None, "2001:db8:0:1:ffff::2")).await, "same /64");
    assert!(allowed(&s, &req(None, "2001:db8:0:2::1")).await, "other /64");
}

#[tokio::test]
async fn every_applicable_limit_must_pass_and_the_refusal_is_recorded() {
    let clock = FakeRelativeClock::default();
    let cfg = RateLimitConfig::new(vec![
        limit("per_user", "principal", 100, 60, 100),
        limit("route_cap", "route", 2, 60, 2),
    ]);
    let s = stage(cfg, &clock);
    let users: Vec<_> =
        ["u1", "u2", "u3"].iter().map(|u| req(Some(principal("iss", u, None)), "192.0.2.1")).collect();
    assert!(allowed(&s, &users[0]).await && allowed(&s, &users[1]).await);
    let mut c = ctx(&users[2]);
    let d = s.on_request(&mut c).await.expect_err("the route cap is shared");
    assert_eq!(d.code, ErrorCode::RateLimited);
    let event = c.extensions.get::<RateLimitEvent>().expect("event recorded");
    assert_eq!(
        event,
        &RateLimitEvent::Limited { limit: "route_cap".into(), retry_after: Duration::from_secs(30) }
    );
    let admin = Req { route: 1, ..req(Some(principal("iss", "u3", None)), "192.0.2.1") };
    assert!(allowed(&s, &admin).await, "the route cap is per route");
}

#[tokio::test]
async fn sweep_forgets_full_buckets_only_and_keeps_decisions_exact() {
    let clock = FakeRelativeClock::default();
    let s = stage(one(limit("per_ip", "client_ip", 60, 60, 2)), &clock);
    for n in 0..1000u32 {
        let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
        let mut c = ctx(&req(None, "192.0.2.1"));
        c.client.ip = Some(ip);
        assert!(s.on_request(&mut c).await.is_ok());
    }
    assert_eq!(s.sweep_now(), 1000, "no bucket is full again yet");
    clock.advance(Duration::from_secs(5));
    let hot = req(None, "192.0.2.1");
    assert!(allowed(&s, &hot).await && allowed(&s, &hot).await);
    assert!(!allowed(&s, &hot).await);
    assert_eq!(s.sweep_now(), 1, "only the exhausted key is still tracked");
    assert!(!allowed(&s, &hot).await, "the sweep did not reset the exhausted key");
    clock.advance(Duration::from_secs(1));
    assert!(allowed(&s, &hot).await, "one request refilled");
    assert!(!allowed(&s, &hot).await);
    clock.advance(Duration::from_secs(10));
    assert_eq!(s.sweep_now(), 0);
    assert_eq!(s.tracked_keys(), 0);
}

#[tokio::test]
async fn ietf_headers_describe_each_limit_when_enabled() {
    let clock = FakeRelativeClock::default();
    let mut cfg = RateLimitConfig::new(vec![
        limit("per_user", "principal", 10, 60, 2),
        limit("per_ip", "client_ip", 100, 1, 100),
    ]);
    cfg.response_headers = true;
    let s = stage(cfg, &clock);
    let alice = req(Some(principal("iss", "alice", None)), "192.0.2.1");
    let mut c = ctx(&alice);
    assert!(s.on_request(&mut c).await.is_ok());
    let h: Vec<_> = c.response.add_headers.iter().map(|(n, v)| (n.as_str(), v.to_str().unwrap())).collect();
    assert_eq!(
        h,
        [
            ("ratelimit-policy", "\"per_user\";q=10;w=60, \"per_ip\";q=100;w=1"),
            ("ratelimit", "\"per_user\";r=1;t=6, \"per_ip\";r=99;t=1"),
        ]
    );
    assert!(s.on_request(&mut ctx(&alice)).await.is_ok());
    let d = s.on_request(&mut ctx(&alice)).await.expect_err("limited");
    let names: Vec<_> = d.headers.iter().map(|(n, v)| (n.as_str(), v.to_str().unwrap())).collect();
    assert!(names.contains(&("retry-after", "6")));
    assert!(names.contains(&("ratelimit", "\"per_user\";r=0;t=6")));
}

#[tokio::test]
async fn headers_are_off_by_default() {
    let clock = FakeRelativeClock::default();
    let s = stage(one(limit("per_user", "principal", 10, 60, 2)), &clock);
    let mut c = ctx(&req(None, "192.0.2.1"));
    assert!(s.on_request(&mut c).await.is_ok());
    assert!(c.response.add_headers.is_empty());
}

#[tokio::test]
async fn decisions_are_counted_per_limit_name_only() {
    let clock = FakeRelativeClock::default();
    let s = stage(one(limit("counted_limit_xyz", "client_ip", 1, 60, 1)), &clock);
    let r = req(None, "192.0.2.77");
    assert!(allowed(&s, &r).await);
    assert!(!allowed(&s, &r).await);
    assert!(!allowed(&s, &r).await);
    let d = &crate::metrics::DECISIONS;
    assert_eq!(d.with_label_values(&["counted_limit_xyz", "allowed"]).get(), 1);
    assert_eq!(d.with_label_values(&["counted_limit_xyz", "denied"]).get(), 2);
    let text = prometheus::TextEncoder::new().encode_to_string(&prometheus::gather()).unwrap();
    assert!(!text.contains("192.0.2.77"), "no address in any metric");
}

#[tokio::test]
async fn memory_backend_is_ready_and_names_itself() {
    let s = stage(one(limit("l", "client_ip", 1, 1, 1)), &FakeRelativeClock::default());
    assert_eq!(s.readiness(), phigate_plugin::Readiness::Ready(None));
    assert_eq!(s.name(), "ratelimit");
    assert_eq!(s.background_tasks().len(), 1, "the sweeper");
}
