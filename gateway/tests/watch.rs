//! The watch stages end to end: rate limits (429 before policy runs, recorded in the audit
//! trail) and the exfiltration watch (break-glass alerts, a principal blocked after touching too
//! many patients), with the demo's personas, policies and a real upstream.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod common;

use common::FullEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_is_429_with_retry_after_and_never_reaches_policy_or_upstream() {
    let extra = "rate_limits:\n  limits:\n    - { name: per_principal, key: principal, requests: 2, period_secs: 3600 }\n";
    let mut env = FullEnv::start_with(|_| {}, extra).await;
    for _ in 0..2 {
        assert_eq!(env.get_as("clinician_a", "/fhir/Patient/a-p1").await.0, 200);
    }
    let res = env
        .pki
        .public_client()
        .get(&env.gw.url("/fhir/Patient/a-p1"))
        .bearer(&env.token("clinician_a"))
        .send()
        .await
        .unwrap();
    assert_eq!((res.status.as_u16(), common::error_code(&res.body).as_str()), (429, "rate_limited"));
    let retry: u64 = res.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=1800).contains(&retry), "Retry-After {retry}");
    let limited = res.header("x-request-id").unwrap().to_owned();
    assert_eq!(env.upstream.recorder.count(), 2, "the limited request was not forwarded");

    // Another principal has its own bucket.
    assert_eq!(env.get_as("clinician_a2", "/fhir/Patient/a-p3").await.0, 200);

    // Durable before the 429 was sent: no wait.
    assert!(env
        .audit_records()
        .iter()
        .any(|r| r["request_id"] == limited.as_str() && r["phase"] == "denied"));
    env.gw.stop();
    let recs = env.audit_records();
    let denied = recs.iter().find(|r| r["request_id"] == limited.as_str()).unwrap();
    assert_eq!((denied["phase"].as_str(), denied["error"].as_str()), (Some("denied"), Some("rate_limited")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_access_raises_an_alert_that_never_copies_the_reason() {
    let extra = "exfil:\n  alerts_path: alerts/exfil.jsonl\n";
    let env = FullEnv::start_with(|_| {}, extra).await;
    let reason = "unconscious patient in the ER";
    let res = env.get_break_glass("er_doctor_a", "/fhir/Patient/a-p3", reason).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let rid = res.header("x-request-id").unwrap().to_owned();

    let lines = common::exfil_alerts(&env, 1).await;
    let alert = &lines[0];
    assert_eq!(alert["rule"], "policy");
    assert_eq!(alert["policy_alert"], "break_glass_access");
    assert_eq!(alert["principal"]["sub"], "er_doctor_a");
    assert_eq!(alert["request_id"], rid.as_str());
    assert_eq!(alert["break_glass"]["reason_given"], true);
    assert!(!alert.to_string().contains(reason), "the justification stays in the audit trail only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_touching_too_many_patients_is_alerted_and_blocked() {
    let extra = "exfil:\n  alerts_path: alerts/exfil.jsonl\n  distinct_patients: { threshold: 1, window_secs: 3600, action: block, block_secs: 600 }\n";
    let env = FullEnv::start_with(|_| {}, extra).await;
    assert_eq!(env.get_as("clinician_a", "/fhir/Patient/a-p1").await.0, 200);
    assert_eq!(env.get_as("clinician_a", "/fhir/Patient/a-p2").await.0, 200);
    // The block is in force once its alert is written (the block is recorded first).
    let lines = common::exfil_alerts(&env, 1).await;
    assert_eq!(
        (lines[0]["rule"].as_str(), lines[0]["action"].as_str()),
        (Some("distinct_patients"), Some("block"))
    );
    assert_eq!((lines[0]["observed"].as_u64(), lines[0]["threshold"].as_u64()), (Some(2), Some(1)));
    let forwarded = env.upstream.recorder.count();

    let (status, code, _) = env.get_as("clinician_a", "/fhir/Patient/a-p1").await;
    assert_eq!((status, code.as_str()), (403, "principal_blocked"));
    assert_eq!(env.upstream.recorder.count(), forwarded, "a blocked principal's request is not forwarded");
    // Only that principal is blocked.
    assert_eq!(env.get_as("clinician_a2", "/fhir/Patient/a-p3").await.0, 200);

    let metrics = common::admin_get(env.gw.admin, "/metrics").await;
    assert!(metrics.contains("phigate_exfil_blocked_requests_total 1"), "{metrics}");
    assert!(!metrics.contains("clinician_a"), "no principal in any metric");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_limits_key_on_the_real_client_address() {
    let extra = "trusted_proxies: [127.0.0.0/8]\n\
                 rate_limits:\n  limits:\n    - { name: per_ip, key: client_ip, requests: 1, period_secs: 3600 }\n";
    let env = FullEnv::start_with(|_| {}, extra).await;
    let token = env.token("clinician_a");
    let via_proxy = |client: &'static str| {
        env.pki
            .public_client()
            .get(&env.gw.url("/fhir/Patient/a-p1"))
            .bearer(&token)
            .header("x-forwarded-for", client)
    };
    assert_eq!(via_proxy("203.0.113.7").send().await.unwrap().status, 200);
    let second = via_proxy("203.0.113.7").send().await.unwrap();
    assert_eq!((second.status.as_u16(), common::error_code(&second.body).as_str()), (429, "rate_limited"));
    // Another client behind the same proxy has its own bucket; a forged leftmost element does
    // not choose the address (the proxy appended the one it saw).
    assert_eq!(via_proxy("198.51.100.1").send().await.unwrap().status, 200);
    let forged = via_proxy("192.0.2.99, 203.0.113.7").send().await.unwrap();
    assert_eq!(forged.status, 429);
}
