//! Upstream endpoints, health checks and connect retries: each rule names its key and line.

use super::{assert_rule_cases, replace, Fixture};

/// (name, replace this, with this, expected key path, expected line, message fragment)
type Case = (&'static str, &'static str, &'static str, &'static str, usize, &'static str);

const ADDRESS: &str = "    address: fhir.internal:8443\n";

fn cases() -> Vec<Case> {
    vec![
        ("address and endpoints together", ADDRESS, "    address: fhir.internal:8443\n    endpoints:\n      - a.internal:8443\n", "upstreams[0].endpoints", 10, "contradicts `address`"),
        ("neither address nor endpoints", ADDRESS, "", "upstreams[0].address", 8, "is required (or `endpoints`"),
        ("empty endpoints", ADDRESS, "    endpoints: []\n", "upstreams[0].endpoints", 9, "at least one endpoint"),
        ("endpoint needs a port", ADDRESS, "    endpoints:\n      - a.internal:8443\n      - b.internal\n", "upstreams[0].endpoints[1]", 11, "not `host:port`"),
        ("duplicate endpoint", ADDRESS, "    endpoints:\n      - a.internal:8443\n      - a.internal:8443\n", "upstreams[0].endpoints[1]", 11, "duplicate endpoint"),
        ("retries bounded", ADDRESS, "    address: fhir.internal:8443\n    max_connect_retries: 9\n", "upstreams[0].max_connect_retries", 10, "at most 8"),
        ("request limit at least 1", ADDRESS, "    address: fhir.internal:8443\n    max_requests_in_flight: 0\n", "upstreams[0].max_requests_in_flight", 10, "between 1 and 1000000"),
        ("waiting needs a limit", ADDRESS, "    address: fhir.internal:8443\n    max_pending_requests: 10\n", "upstreams[0].max_pending_requests", 10, "needs `max_requests_in_flight`"),
        ("pending timeout bounded", ADDRESS, "    address: fhir.internal:8443\n    pending_timeout_ms: 0\n", "upstreams[0].pending_timeout_ms", 10, "between 1 and 60000"),
        ("addresses per name bounded", ADDRESS, "    address: fhir.internal:8443\n    addresses_per_name: 65\n", "upstreams[0].addresses_per_name", 10, "between 1 and 64"),
        ("address slots at most 64", ADDRESS, "    endpoints: [a.internal:1, b.internal:1, 10.0.0.1:1]\n    addresses_per_name: 32\n", "upstreams[0].addresses_per_name", 10, "at most 64"),
        ("check interval bounded", ADDRESS, "    address: fhir.internal:8443\n    health_check:\n      interval_ms: 10\n      timeout_ms: 5\n", "upstreams[0].health_check.interval_ms", 11, "between 100 and 300000"),
        ("check timeout within the interval", ADDRESS, "    address: fhir.internal:8443\n    health_check:\n      interval_ms: 1000\n      timeout_ms: 2000\n", "upstreams[0].health_check.timeout_ms", 12, "at most `interval_ms`"),
        ("unhealthy threshold at least 1", ADDRESS, "    address: fhir.internal:8443\n    health_check:\n      unhealthy_threshold: 0\n", "upstreams[0].health_check.unhealthy_threshold", 11, "between 1 and 100"),
        ("healthy threshold at most 100", ADDRESS, "    address: fhir.internal:8443\n    health_check:\n      healthy_threshold: 101\n", "upstreams[0].health_check.healthy_threshold", 11, "between 1 and 100"),
        ("check path absolute", ADDRESS, "    address: fhir.internal:8443\n    health_check:\n      path: metadata\n", "upstreams[0].health_check.path", 11, "must start with `/`"),
        ("check path without spaces", ADDRESS, "    address: fhir.internal:8443\n    health_check:\n      path: \"/a b\"\n", "upstreams[0].health_check.path", 11, "visible ASCII"),
    ]
}

#[test]
fn each_upstream_rule_reports_its_key_and_line() {
    assert_rule_cases(cases());
}

#[test]
fn several_endpoints_with_a_health_check_are_accepted() {
    let yaml = replace(
        ADDRESS,
        "    endpoints:\n      - 10.0.0.1:8443\n      - fhir-b.internal:8443\n    max_connect_retries: 1\n    \
         health_check:\n      path: /fhir/metadata\n      interval_ms: 2000\n",
    );
    let loaded = Fixture::new(&yaml).check(false).expect("valid");
    let upstream = &loaded.config.upstreams[0];
    assert_eq!(upstream.endpoint_list().len(), 2);
    let check = upstream.health_check.as_ref().expect("health check");
    assert_eq!((check.interval_ms, check.timeout_ms), (2000, 1000), "timeout defaults to 1000");
    assert_eq!((check.healthy_threshold, check.unhealthy_threshold), (2, 3));
}

#[test]
fn endpoint_values_are_never_echoed() {
    let secret = super::SECRET;
    let yaml = replace(ADDRESS, &format!("    endpoints:\n      - \"{secret}\"\n      - \"{secret}\"\n"));
    let errors = Fixture::new(&yaml).errors();
    assert!(!errors.to_string().contains(secret), "value echoed:\n{errors}");
}
