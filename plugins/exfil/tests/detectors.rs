//! Each detector fires exactly when its window goes over the threshold, once per window.

mod common;

use common::{principal, principal_of, read, rules, search, Harness};
use phigate_exfil::{Action, PagingMeasure};
use phigate_plugin::{ErrorCode, PatientId, Stage};

fn distinct(threshold: u64, window_secs: u64) -> Harness {
    Harness::new(|c| {
        c.distinct_patients.enabled = true;
        c.distinct_patients.threshold = threshold;
        c.distinct_patients.window_secs = window_secs;
    })
}

#[tokio::test]
async fn distinct_patients_fires_at_threshold_plus_one_and_not_before() {
    let h = distinct(3, 60);
    h.spawn_writer();
    let alice = principal("alice");
    for id in ["p1", "p2", "p3", "p1", "p2"] {
        h.run(read(&alice, "Patient", id, 200)).await.unwrap();
    }
    assert_eq!(h.stage.stats().alerts, 0, "3 distinct patients is at the threshold, not over it");
    h.run(search(&alice, &["p4"], None, 200)).await.unwrap();
    let alerts = h.alerts().await;
    assert_eq!(rules(&alerts), ["distinct_patients"]);
    assert_eq!(alerts[0]["observed"], 4);
    assert_eq!(alerts[0]["threshold"], 3);
    assert_eq!(alerts[0]["window_secs"], 60);
    assert_eq!(alerts[0]["action"], "alert");
}

#[tokio::test]
async fn distinct_patients_forgets_patients_older_than_the_window() {
    let h = distinct(2, 60);
    let alice = principal("alice");
    h.run(read(&alice, "Patient", "p1", 200)).await.unwrap();
    h.advance_secs(30);
    h.run(read(&alice, "Patient", "p2", 200)).await.unwrap();
    h.advance_secs(30); // p1 is now exactly one window old: out
    h.run(read(&alice, "Patient", "p3", 200)).await.unwrap();
    assert_eq!(h.stage.stats().alerts, 0);
    h.run(read(&alice, "Patient", "p4", 200)).await.unwrap();
    assert_eq!(h.stage.stats().alerts, 1, "p2, p3, p4 within 60 s");
}

#[tokio::test]
async fn distinct_patients_counts_what_a_buffered_response_returned() {
    let h = distinct(2, 60);
    h.spawn_writer();
    let alice = principal("alice");
    let mut ctx = search(&alice, &[], Some(3), 200);
    let body = br#"{"resourceType":"Bundle","entry":[
        {"resource":{"resourceType":"Observation","subject":{"reference":"Patient/r1"}}},
        {"resource":{"resourceType":"Observation","subject":{"reference":"Patient/r2"}}},
        {"resource":{"resourceType":"Patient","id":"r3"}}]}"#;
    h.stage.on_buffered_response(&mut ctx, body).unwrap();
    h.stage.on_complete(&ctx).await;
    let alerts = h.alerts().await;
    assert_eq!(rules(&alerts), ["distinct_patients"]);
    assert_eq!(alerts[0]["observed"], 3);
}

#[tokio::test]
async fn patients_a_stage_before_recorded_are_used_without_parsing_again() {
    let h = distinct(2, 60);
    h.spawn_writer();
    let alice = principal("alice");
    let mut ctx = search(&alice, &[], Some(3), 200);
    ctx.response.patients = Some(["r1", "r2", "r3"].map(PatientId::from).to_vec());
    // Not JSON: had the stage parsed it, it would have found no patient.
    h.stage.on_buffered_response(&mut ctx, b"<Bundle/>").unwrap();
    h.stage.on_complete(&ctx).await;
    let alerts = h.alerts().await;
    assert_eq!(rules(&alerts), ["distinct_patients"]);
    assert_eq!(alerts[0]["observed"], 3);
}

#[tokio::test]
async fn distinct_patients_ignores_patients_of_refused_or_missing_reads() {
    let h = distinct(1, 60);
    let alice = principal("alice");
    let mut refused = read(&alice, "Patient", "p1", 403);
    refused.response.forwarded = false;
    refused.error = Some(ErrorCode::PatientNotPermitted);
    h.run(refused).await.unwrap();
    h.run(read(&alice, "Patient", "p2", 404)).await.unwrap();
    h.run(read(&alice, "Patient", "p3", 200)).await.unwrap();
    assert_eq!(h.stage.stats().alerts, 0, "only p3 was served");
    h.run(read(&alice, "Patient", "p4", 304)).await.unwrap();
    assert_eq!(h.stage.stats().alerts, 1);
}

#[tokio::test]
async fn alerts_are_deduplicated_within_a_window_and_repeat_in_the_next() {
    let h = distinct(2, 100);
    let alice = principal("alice");
    for i in 0..3 {
        h.run(read(&alice, "Patient", &format!("a{i}"), 200)).await.unwrap();
    }
    assert_eq!(h.stage.stats().alerts, 1);
    for i in 0..20 {
        h.advance_secs(1);
        h.run(read(&alice, "Patient", &format!("b{i}"), 200)).await.unwrap();
    }
    assert_eq!(h.stage.stats().alerts, 1, "one alert per principal per rule per window");
    h.advance_secs(80); // 100 s after the first alert
    h.run(read(&alice, "Patient", "c0", 200)).await.unwrap();
    assert_eq!(h.stage.stats().alerts, 2, "still over the threshold in the next window");
}

#[tokio::test]
async fn principals_are_watched_apart_even_with_the_same_subject() {
    let h = distinct(2, 60);
    let a = principal_of("https://idp-a.test", "u1");
    let b = principal_of("https://idp-b.test", "u1");
    for (p, id) in [(&a, "p1"), (&b, "p2"), (&a, "p3"), (&b, "p4"), (&a, "p5")] {
        h.run(read(p, "Patient", id, 200)).await.unwrap();
    }
    assert_eq!(h.stage.stats().alerts, 1, "only a reached 3 patients");
}

#[tokio::test]
async fn bulk_paging_counts_bundle_entries_and_fires_past_the_threshold() {
    let h = Harness::new(|c| {
        c.bulk_paging.enabled = true;
        c.bulk_paging.threshold = 100;
        c.bulk_paging.window_secs = 600;
    });
    h.spawn_writer();
    let bob = principal("bob");
    h.run(search(&bob, &[], Some(50), 200)).await.unwrap();
    h.run(search(&bob, &[], None, 200)).await.unwrap(); // not counted: adds nothing
    h.run(search(&bob, &[], Some(50), 200)).await.unwrap();
    assert_eq!(h.stage.stats().alerts, 0, "100 entries is the threshold");
    h.run(search(&bob, &[], Some(1), 200)).await.unwrap();
    let alerts = h.alerts().await;
    assert_eq!(rules(&alerts), ["bulk_paging"]);
    assert_eq!(alerts[0]["observed"], 101);
}

#[tokio::test]
async fn bulk_paging_by_pages_counts_successful_searches_only() {
    let h = Harness::new(|c| {
        c.bulk_paging.enabled = true;
        c.bulk_paging.measure = PagingMeasure::Pages;
        c.bulk_paging.threshold = 2;
    });
    let bob = principal("bob");
    h.run(search(&bob, &[], Some(10), 200)).await.unwrap();
    h.run(search(&bob, &[], Some(10), 500)).await.unwrap();
    h.run(read(&bob, "Observation", "o1", 200)).await.unwrap();
    h.run(search(&bob, &[], Some(10), 200)).await.unwrap();
    assert_eq!(h.stage.stats().alerts, 0);
    h.run(search(&bob, &[], Some(10), 200)).await.unwrap();
    assert_eq!(h.stage.stats().alerts, 1);
}

fn probes(sequential: bool) -> Harness {
    Harness::new(|c| {
        c.id_enumeration.enabled = true;
        c.id_enumeration.threshold = 3;
        c.id_enumeration.window_secs = 300;
        c.id_enumeration.count_sequential = sequential;
    })
}

#[tokio::test]
async fn id_enumeration_fires_on_the_fourth_miss() {
    let h = probes(false);
    h.spawn_writer();
    let eve = principal("eve");
    for (id, status) in [("x1", 404), ("x9", 403), ("ok", 200), ("x3", 410)] {
        h.run(read(&eve, "Patient", id, status)).await.unwrap();
    }
    assert_eq!(h.stage.stats().alerts, 0);
    h.run(read(&eve, "Observation", "x4", 404)).await.unwrap();
    assert_eq!(rules(&h.alerts().await), ["id_enumeration"]);
}

#[tokio::test]
async fn id_enumeration_counts_reads_of_adjacent_numeric_ids() {
    let h = probes(true);
    let eve = principal("eve");
    for id in ["1000", "1001", "1002", "1003"] {
        h.run(read(&eve, "Patient", id, 200)).await.unwrap();
    }
    assert_eq!(h.stage.stats().alerts, 0, "three adjacent steps is the threshold");
    h.run(read(&eve, "Patient", "1004", 200)).await.unwrap();
    assert_eq!(h.stage.stats().alerts, 1);

    let h = probes(false);
    for id in ["1000", "1001", "1002", "1003", "1004", "1005"] {
        h.run(read(&eve, "Patient", id, 200)).await.unwrap();
    }
    assert_eq!(h.stage.stats().alerts, 0, "count_sequential: false ignores adjacency");
}

#[tokio::test]
async fn rate_denials_fire_on_a_storm_of_429_and_403() {
    let h = Harness::new(|c| {
        c.rate_denials.enabled = true;
        c.rate_denials.threshold = 2;
        c.rate_denials.window_secs = 60;
    });
    let mal = principal("mallory");
    let mut limited = search(&mal, &[], None, 200);
    limited.response.status = None;
    limited.response.forwarded = false;
    limited.error = Some(ErrorCode::RateLimited);
    h.stage.on_complete(&limited).await;
    h.run(search(&mal, &[], None, 200)).await.unwrap();
    h.run(read(&mal, "Patient", "p1", 403)).await.unwrap();
    assert_eq!(h.stage.stats().alerts, 0);
    h.run(read(&mal, "Patient", "p2", 429)).await.unwrap();
    assert_eq!(h.stage.stats().alerts, 1);
}

#[tokio::test]
async fn restricted_records_count_withheld_entries_and_label_refusals() {
    let h = Harness::new(|c| {
        c.restricted_records.enabled = true;
        c.restricted_records.threshold = 5;
        c.restricted_records.window_secs = 3600;
    });
    h.spawn_writer();
    let eve = principal("eve");
    let withheld = |n: u32| {
        let mut ctx = search(&eve, &["p1"], Some(2), 200);
        ctx.response.withheld = Some(n);
        ctx
    };
    h.stage.on_complete(&withheld(3)).await;
    h.run(search(&eve, &["p1"], Some(2), 200)).await.unwrap();
    let mut refused = read(&eve, "Condition", "c-psy", 403);
    refused.error = Some(ErrorCode::SecurityLabelNotPermitted);
    h.stage.on_complete(&refused).await;
    h.run(read(&eve, "Patient", "p2", 403)).await.unwrap();
    assert_eq!(h.stage.stats().alerts, 0, "3 entries and 1 refusal: 4 of 5 (another 403 does not count)");
    h.stage.on_complete(&withheld(2)).await;
    let alerts = h.alerts().await;
    assert_eq!(rules(&alerts), ["restricted_records"]);
    assert_eq!(alerts[0]["observed"], 6);
    assert_eq!(alerts[0]["threshold"], 5);
    assert_eq!(alerts[0]["window_secs"], 3600);
    h.stage.on_complete(&withheld(9)).await;
    assert_eq!(h.stage.stats().alerts, 1, "once per window");
}

#[tokio::test]
async fn disabled_detectors_never_fire() {
    let h = Harness::new(|c| c.distinct_patients.action = Action::Block);
    let alice = principal("alice");
    for i in 0..200 {
        h.run(read(&alice, "Patient", &i.to_string(), 404)).await.unwrap();
    }
    assert_eq!(h.stage.stats().alerts, 0);
}

#[tokio::test]
async fn counted_rules_are_deduplicated_per_window_and_forget_old_events() {
    let h = Harness::new(|c| {
        c.rate_denials.enabled = true;
        c.rate_denials.threshold = 2;
        c.rate_denials.window_secs = 60;
    });
    let mal = principal("mallory");
    // Two denials, then a minute of quiet: they leave the window.
    h.run(read(&mal, "Patient", "a", 403)).await.unwrap();
    h.run(read(&mal, "Patient", "b", 403)).await.unwrap();
    h.advance_secs(60);
    h.run(read(&mal, "Patient", "c", 403)).await.unwrap();
    h.run(read(&mal, "Patient", "d", 403)).await.unwrap();
    assert_eq!(h.stage.stats().alerts, 0, "only 2 denials within any 60 s");
    h.run(read(&mal, "Patient", "e", 429)).await.unwrap();
    assert_eq!(h.stage.stats().alerts, 1);
    for _ in 0..50 {
        h.advance_secs(1);
        h.run(read(&mal, "Patient", "f", 429)).await.unwrap();
    }
    assert_eq!(h.stage.stats().alerts, 1, "quiet for the rest of the window");
    h.advance_secs(10); // 60 s after the alert, still storming
    h.run(read(&mal, "Patient", "g", 429)).await.unwrap();
    assert_eq!(h.stage.stats().alerts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_of_one_principal_raise_one_alert() {
    let h = std::sync::Arc::new(distinct(10, 60));
    let alice = principal("alice");
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let (h, alice) = (h.clone(), alice.clone());
            tokio::spawn(async move { h.run(read(&alice, "Patient", &format!("p{i}"), 200)).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(h.stage.stats().alerts, 1);
}

#[tokio::test]
async fn bulk_paging_counts_entries_of_a_buffered_bundle_the_gateway_did_not_count() {
    let h = Harness::new(|c| {
        c.bulk_paging.enabled = true;
        c.bulk_paging.threshold = 2;
    });
    let mut ctx = search(&principal("bob"), &[], None, 200);
    let body = br#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Observation"}},
        {"resource":{"resourceType":"Observation"}},{"resource":{"resourceType":"Observation"}}]}"#;
    h.stage.on_buffered_response(&mut ctx, body).unwrap();
    h.stage.on_complete(&ctx).await;
    assert_eq!(h.stage.stats().alerts, 1);

    // A count the gateway made wins over the body.
    let h = Harness::new(|c| {
        c.bulk_paging.enabled = true;
        c.bulk_paging.threshold = 2;
    });
    let mut ctx = search(&principal("bob"), &[], Some(1), 200);
    h.stage.on_buffered_response(&mut ctx, body).unwrap();
    h.stage.on_complete(&ctx).await;
    assert_eq!(h.stage.stats().alerts, 0);
}

/// `off_hours`: patient data served outside the site's working hours (its time zone, daylight
/// saving included) alerts once per principal per window; working hours, exempt roles, refused
/// requests and requests naming no patient do not.
#[tokio::test]
async fn off_hours_access_to_patient_data_alerts_once_per_window() {
    // Monday 2026-12-07 05:30 in Chicago (CST, UTC-6): before the 07:00 start.
    let wall: std::time::SystemTime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_643_000);
    let h = Harness::with_clock(phigate_exfil::ManualClock::at(wall), |c| {
        c.off_hours.enabled = true;
        c.off_hours.time_zone = "America/Chicago".into();
        c.off_hours.exempt_roles = vec!["ed_physician".into()];
        c.off_hours.window_secs = 600;
    });
    h.spawn_writer();
    let alice = principal("alice");
    let night_doc = std::sync::Arc::new(phigate_plugin::Principal {
        roles: vec!["clinician".into(), "ed_physician".into()],
        ..(*principal("dr-night")).clone()
    });
    h.run(read(&night_doc, "Patient", "p9", 200)).await.unwrap();
    h.run(read(&alice, "Patient", "p1", 403)).await.unwrap();
    h.run(search(&alice, &[], Some(0), 200)).await.unwrap();
    assert_eq!(h.stage.stats().alerts, 0, "exempt role, a refusal, no patient");
    h.run(read(&alice, "Patient", "p1", 200)).await.unwrap();
    h.run(read(&alice, "Patient", "p2", 200)).await.unwrap();
    let alerts = h.alerts().await;
    assert_eq!(rules(&alerts), ["off_hours"], "once per window");
    assert_eq!(alerts[0]["principal"]["sub"], "alice");
    assert_eq!(alerts[0]["sample_patient_ids"], serde_json::json!(["p1"]));
    assert_eq!(alerts[0]["window_secs"], 600);

    // 07:30: working hours; the window has passed, but nothing fires.
    h.clock.advance(std::time::Duration::from_secs(2 * 3600));
    h.run(read(&alice, "Patient", "p3", 200)).await.unwrap();
    assert_eq!(rules(&h.alerts().await), ["off_hours"]);
}

/// `off_hours.tenants`: a request is judged by the working hours of the tenant it addresses, else
/// of the principal's own.
#[tokio::test]
async fn off_hours_follow_the_addressed_or_the_principals_tenant() {
    // Monday 2026-12-07 11:30 UTC: 05:30 in Chicago (the section's zone), 12:30 in Berlin.
    let wall: std::time::SystemTime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_643_000);
    let h = Harness::with_clock(phigate_exfil::ManualClock::at(wall), |c| {
        c.off_hours.enabled = true;
        c.off_hours.time_zone = "America/Chicago".into();
        let berlin = phigate_exfil::TenantHoursConfig {
            time_zone: Some("Europe/Berlin".into()),
            ..Default::default()
        };
        c.off_hours.tenants.insert("tenant-de".into(), berlin);
    });
    h.spawn_writer();
    // A read of patient `id`, addressing `tenant` (`routes[].tenant`) or none.
    let at = |p: &std::sync::Arc<phigate_plugin::Principal>, id: &str, tenant: Option<&str>| {
        let mut c = read(p, "Patient", id, 200);
        c.tenant = tenant.map(phigate_plugin::TenantId::from);
        c
    };
    let in_berlin = std::sync::Arc::new(phigate_plugin::Principal {
        tenant: Some(phigate_plugin::TenantId::from("tenant-de")),
        ..(*principal("hans")).clone()
    });
    h.run(at(&in_berlin, "p1", None)).await.unwrap();
    assert_eq!(h.stage.stats().alerts, 0, "midday in Berlin, by the principal's tenant");
    h.run(at(&principal("alice"), "p2", None)).await.unwrap();
    let alerts = h.alerts().await;
    assert_eq!(rules(&alerts), ["off_hours"]);
    assert_eq!(alerts[0]["principal"]["sub"], "alice", "05:30 in Chicago for tenant-a");

    // The tenant a request addresses is the one whose hours count: a principal without a tenant
    // of its own (a platform service) reading tenant-de's data at midday in Berlin does not
    // alert; reading tenant-a's (Chicago, 05:30), it does.
    let platform =
        std::sync::Arc::new(phigate_plugin::Principal { tenant: None, ..(*principal("ops")).clone() });
    h.run(at(&platform, "p3", Some("tenant-de"))).await.unwrap();
    assert_eq!(rules(&h.alerts().await), ["off_hours"], "midday in Berlin, whoever asks");
    h.run(at(&platform, "p4", Some("tenant-a"))).await.unwrap();
    let alerts = h.alerts().await;
    assert_eq!(rules(&alerts), ["off_hours", "off_hours"]);
    assert_eq!(alerts[1]["principal"]["sub"], "ops");
}

#[tokio::test]
async fn bulk_exports_count_the_exports_the_upstream_accepted() {
    let h = Harness::new(|c| {
        c.bulk_exports.enabled = true;
        c.bulk_exports.threshold = 2;
        c.bulk_exports.window_secs = 86_400;
    });
    h.spawn_writer();
    let svc = principal("backend");
    let export = |status: u16| {
        let mut ctx = search(&svc, &[], None, status);
        let fhir = ctx.fhir.as_mut().unwrap();
        fhir.interaction = phigate_plugin::Interaction::Operation;
        fhir.resource_type = Some("Patient");
        fhir.operation = Some("export".into());
        ctx
    };
    h.stage.on_complete(&export(202)).await;
    // Refused or failed kick-offs, and polls of a running export, are not exports started.
    h.stage.on_complete(&export(400)).await;
    let mut refused = export(403);
    refused.response.forwarded = false;
    h.stage.on_complete(&refused).await;
    h.stage.on_complete(&export(202)).await;
    assert_eq!(h.stage.stats().alerts, 0, "2 exports is at the threshold, not over it");
    h.advance_secs(3600);
    h.stage.on_complete(&export(202)).await;
    let alerts = h.alerts().await;
    assert_eq!(rules(&alerts), ["bulk_exports"]);
    assert_eq!(alerts[0]["observed"], 3);
    assert_eq!(alerts[0]["window_secs"], 86_400);
}

#[tokio::test]
async fn export_files_are_not_counted_again_as_patients_touched_or_entries_paged() {
    let h = Harness::new(|c| {
        c.distinct_patients.enabled = true;
        c.distinct_patients.threshold = 3;
        c.bulk_paging.enabled = true;
        c.bulk_paging.threshold = 10;
    });
    let svc = principal("backend");
    let file = |n: usize| {
        let mut ctx = read(&svc, "Binary", "job-1-Observation", 200);
        ctx.response.patients = Some((0..n).map(|i| PatientId::new(format!("p{i}"))).collect());
        ctx.response.entries = Some(u32::try_from(n).unwrap_or(u32::MAX));
        ctx
    };
    let mut exported = file(100);
    exported.bulk = Some(phigate_plugin::BulkAccess {
        kind: phigate_plugin::BulkKind::File,
        issuer: "https://idp".into(),
        subject: "backend".into(),
        tenant: None,
        client_id: None,
    });
    h.stage.on_complete(&exported).await;
    assert_eq!(h.stage.stats().alerts, 0, "an export file (the export is watched when it starts)");
    // The same body read any other way counts.
    h.stage.on_complete(&file(100)).await;
    assert!(h.stage.stats().alerts >= 1);
}
