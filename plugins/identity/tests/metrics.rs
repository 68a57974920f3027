//! Metrics in the default Prometheus registry (alone in this binary, so counts are exact).
#![allow(clippy::unwrap_used)]

mod support;

use phigate_identity::dev::DevIssuer;
use support::*;

fn value(name: &str, labels: &[(&str, &str)]) -> f64 {
    for fam in prometheus::gather() {
        if fam.name() != name {
            continue;
        }
        for m in fam.get_metric() {
            let ok =
                labels.iter().all(|(k, v)| m.get_label().iter().any(|l| l.name() == *k && l.value() == *v));
            if ok {
                return if fam.get_field_type() == prometheus::proto::MetricType::COUNTER {
                    m.get_counter().get_value()
                } else {
                    m.get_gauge().get_value()
                };
            }
        }
    }
    0.0
}

#[tokio::test]
async fn validations_cache_and_jwks_are_counted() {
    let idp = DevIssuer::es256("https://metrics.test").unwrap();
    let dir = temp_dir("metrics");
    let j = file_issuer(&dir, "idp", &[&idp]);
    let yaml = format!(
        "issuers: [{{ issuer: \"https://metrics.test\", audiences: [\"{AUD}\"], jwks_path: {j} }}]\n\
         defaults: {{ require_mfa: false }}\n"
    );
    let routes = routes(&["a"]);
    let stage = build(&yaml, &routes, &dir);
    assert_eq!(value("phigate_identity_jwks_keys", &[("issuer", "https://metrics.test")]), 1.0);

    let t = idp.sign(&idp.claims("alice", AUD, now()));
    for _ in 0..3 {
        run(&stage, &mut bearer(&routes[0], &t)).await.unwrap();
    }
    let expired = idp.sign(&idp.claims("alice", AUD, now() - 7200));
    assert!(run(&stage, &mut bearer(&routes[0], &expired)).await.is_err());
    assert!(run(&stage, &mut request(&routes[0], &[])).await.is_err());

    assert_eq!(value("phigate_identity_validations_total", &[("result", "ok")]), 3.0);
    assert_eq!(value("phigate_identity_validations_total", &[("result", "token_expired")]), 1.0);
    assert_eq!(value("phigate_identity_validations_total", &[("result", "token_missing")]), 1.0);
    // One miss per distinct token that reached the cache, hits for the repeats.
    assert_eq!(value("phigate_identity_token_cache_total", &[("outcome", "miss")]), 2.0);
    assert_eq!(value("phigate_identity_token_cache_total", &[("outcome", "hit")]), 2.0);

    stage.refresh_jwks_now().await;
    std::fs::remove_file(dir.join(&j)).unwrap();
    stage.refresh_jwks_now().await;
    let refresh = |r| {
        value("phigate_identity_jwks_refresh_total", &[("issuer", "https://metrics.test"), ("result", r)])
    };
    assert_eq!((refresh("success"), refresh("failure")), (1.0, 1.0));
}
