//! Sensitive records end to end, with the demo's data and personas: a-p1 (clinician_a's care
//! team) has a Condition labelled PSY (psychiatry) by the upstream. clinician_a's searches lose
//! it, her read of it is refused, as is a write to it; psychiatrist_a (cleared for PSY) and
//! break-glass see it. The upstream's body never reaches a principal not cleared for it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod common;

use common::writes::{assert_nothing_forwarded_since_last, forwarded, refusal, send, FHIR_JSON};
use common::FullEnv;
use http::Method;

const PSY_ID: &str = "a-p1-cond-psy";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_loses_the_labelled_entry_and_says_results_were_withheld() {
    let env = FullEnv::start().await;
    for client in [
        env.pki.public_client_builder().http1_only().build().unwrap(),
        env.pki.public_client_builder().http2_only().build().unwrap(),
    ] {
        let res = client
            .get(&env.gw.url("/fhir/Condition?patient=a-p1"))
            .bearer(&env.token("clinician_a"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status, 200, "{}", res.text());
        let text = res.text();
        assert!(
            !text.contains(PSY_ID) && !text.contains("Depressive"),
            "the labelled entry was sent: {text}"
        );
        let bundle: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
        let entries = bundle["entry"].as_array().unwrap();
        let ids: Vec<&str> = entries.iter().filter_map(|e| e["resource"]["id"].as_str()).collect();
        assert_eq!(ids, ["a-p1-cond-1", "a-p1-cond-2"]);
        assert_eq!(bundle.get("total"), None, "a total of 3 would give the labelled record away");
        let outcome = entries.last().unwrap();
        assert_eq!(outcome["search"]["mode"], "outcome");
        assert_eq!(outcome["resource"]["issue"][0]["code"], "suppressed");
        if let Some(len) = res.header("content-length") {
            assert_eq!(len.parse::<usize>().unwrap(), res.body.len(), "the length of the body sent");
        }
        let rid = res.header("x-request-id").unwrap().to_owned();
        let record = env.wait_record(|r| r["request_id"] == rid.as_str() && r["phase"] == "outcome").await;
        assert_eq!(record["withheld"], 1, "{record}");
        assert_eq!(record["entries"], 2, "{record}");
    }
    // $everything is a search result too.
    let (s, _, body) = env.get_as("clinician_a", "/fhir/Patient/a-p1/$everything?_count=50").await;
    assert_eq!(s, 200);
    assert!(!body.contains(PSY_ID), "{body}");
    assert!(body.contains("a-p1-cond-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_is_sent_only_to_those_who_may_see_everything_it_counts() {
    let env = FullEnv::start().await;
    let path = "/fhir/Condition?patient=a-p1&_summary=count";
    for persona in ["clinician_a", "psychiatrist_a"] {
        let (s, _, body) = env.get_as(persona, path).await;
        assert_eq!(s, 200, "{body}");
        let bundle: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (bundle["type"].as_str(), bundle.get("total")),
            (Some("searchset"), None),
            "{persona}: {body}"
        );
    }
    let res = env.get_break_glass("er_doctor_a", path, "unconscious patient in the ER").await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["total"], 3, "break-glass is cleared for every label: the server's count");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_report_lists_who_met_restricted_records() {
    let mut env = FullEnv::start().await;
    assert_eq!(env.get_as("clinician_a", "/fhir/Condition?patient=a-p1").await.0, 200);
    assert_eq!(env.get_as("clinician_a", &format!("/fhir/Condition/{PSY_ID}")).await.0, 403);
    assert_eq!(env.get_as("psychiatrist_a", &format!("/fhir/Condition/{PSY_ID}")).await.0, 200);
    assert_eq!(env.get_as("clinician_a", "/fhir/Patient/a-p1").await.0, 200);
    env.gw.stop();
    let report = |format: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_phigate"))
            .args(["audit", "report", "--restricted", "--format", format])
            .arg(env.pki.dir().join("audit"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let lines: Vec<serde_json::Value> = String::from_utf8(report("jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen: Vec<(&str, Option<u64>, Option<&str>)> = lines
        .iter()
        .map(|a| (a["subject"].as_str().unwrap(), a["withheld"].as_u64(), a["error"].as_str()))
        .collect();
    assert_eq!(
        seen,
        [("clinician_a", Some(1), None), ("clinician_a", None, Some("security_label_not_permitted"))],
        "the psychiatrist's read and the plain read are not listed"
    );
    let bundle: serde_json::Value = serde_json::from_slice(&report("fhir")).unwrap();
    assert_eq!(
        bundle["entry"][0]["resource"]["outcomeDesc"],
        "entries withheld for their security labels: 1"
    );
}

/// `policy.withheld_notice: silent`: nothing a client gets tells that a record was withheld (no
/// outcome entry, no total, a read answered 404), while the audit trail records what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_silent_a_withheld_record_looks_absent_to_the_client_but_not_to_the_audit() {
    let env = FullEnv::start_edited(
        |_| {},
        "",
        "",
        |cfg, _| cfg.replace("  max_eval_ms: 2000\n", "  max_eval_ms: 2000\n  withheld_notice: silent\n"),
    )
    .await;
    let (s, _, body) = env.get_as("clinician_a", "/fhir/Condition?patient=a-p1").await;
    assert_eq!(s, 200, "{body}");
    let bundle: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> =
        bundle["entry"].as_array().unwrap().iter().filter_map(|e| e["resource"]["id"].as_str()).collect();
    assert_eq!(ids, ["a-p1-cond-1", "a-p1-cond-2"], "{body}");
    assert!(!body.contains("suppressed") && bundle.get("total").is_none(), "{body}");

    let (s, code, body) = env.get_as("clinician_a", &format!("/fhir/Condition/{PSY_ID}")).await;
    assert_eq!((s, code.as_str()), (404, "resource_not_found"), "{body}");
    assert!(!body.contains("label") && !body.contains("Depressive"), "{body}");
    let record = env
        .wait_record(|r| r["phase"] == "outcome" && r["path"].as_str().is_some_and(|p| p.ends_with(PSY_ID)))
        .await;
    assert_eq!(
        (record["status"].as_u64(), record["error"].as_str()),
        (Some(404), Some("security_label_not_permitted")),
        "{record}"
    );

    // A write to it, refused on its pre-read, and its history: absent too; nothing is written.
    while env.upstream.recorder.try_next().is_some() {}
    let res =
        send(&env, "writer_a", Method::DELETE, &format!("/fhir/Condition/{PSY_ID}"), FHIR_JSON, Vec::new())
            .await;
    assert_eq!(refusal(&res), (404, "resource_not_found".to_owned()));
    let pre_read = forwarded(&env).await;
    assert_eq!(pre_read.method.as_str(), "GET");
    assert_nothing_forwarded_since_last(&env).await;
    let (s, code, body) = env.get_as("clinician_a", &format!("/fhir/Condition/{PSY_ID}/_history")).await;
    assert_eq!((s, code.as_str()), (404, "resource_not_found"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labelled_read_is_refused_unless_cleared_or_under_break_glass() {
    let env = FullEnv::start().await;
    let path = format!("/fhir/Condition/{PSY_ID}");
    let (s, code, body) = env.get_as("clinician_a", &path).await;
    assert_eq!((s, code.as_str()), (403, "security_label_not_permitted"));
    assert!(!body.contains("Depressive") && !body.contains("PSY"), "{body}");
    assert_eq!(forwarded(&env).await.path_and_query, path, "judged on the upstream's answer");

    let (s, code, body) = env.get_as("clinician_a", &format!("{path}/_history")).await;
    assert_eq!((s, code.as_str()), (403, "security_label_not_permitted"), "its history too");
    assert!(!body.contains("Depressive"), "{body}");

    let (s, _, body) = env.get_as("psychiatrist_a", &path).await;
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("Depressive"));
    let (s, _, body) = env.get_as("psychiatrist_a", &format!("{path}/_history")).await;
    assert!(s == 200 && body.contains("Depressive"), "{body}");
    let (s, _, body) = env.get_as("psychiatrist_a", "/fhir/Condition?patient=a-p1").await;
    assert_eq!(s, 200);
    assert!(body.contains(PSY_ID) && !body.contains("suppressed"), "nothing withheld from her: {body}");

    let res = env
        .get_break_glass("er_doctor_a", "/fhir/Condition/a-p3-cond-1", "unconscious patient in the ER")
        .await;
    assert_eq!(res.status, 200, "break-glass clears labels too (an unlabelled record here)");
    let res = env.get_break_glass("er_doctor_a", &path, "unconscious patient in the ER").await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(res.text().contains("Depressive"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_labelled_record_is_refused_before_it_is_sent() {
    let env = FullEnv::start().await;
    let path = format!("/fhir/Condition/{PSY_ID}");
    let res = send(&env, "writer_a", Method::DELETE, &path, FHIR_JSON, Vec::new()).await;
    assert_eq!(refusal(&res), (403, "security_label_not_permitted".to_owned()));
    let pre_read = forwarded(&env).await;
    assert_eq!((pre_read.method.as_str(), pre_read.path_and_query.as_str()), ("GET", path.as_str()));
    assert_nothing_forwarded_since_last(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeatedly_meeting_restricted_records_raises_an_alert_for_the_soc() {
    let extra = "exfil:\n  alerts_path: alerts/exfil.jsonl\n  restricted_records: { threshold: 2 }\n";
    let env = FullEnv::start_with(|_| {}, extra).await;
    // One entry left out of each search, then a refused read: 3 withheld records, over 2.
    for _ in 0..2 {
        assert_eq!(env.get_as("clinician_a", "/fhir/Condition?patient=a-p1").await.0, 200);
    }
    let (s, code, _) = env.get_as("clinician_a", &format!("/fhir/Condition/{PSY_ID}")).await;
    assert_eq!((s, code.as_str()), (403, "security_label_not_permitted"));
    let lines = common::exfil_alerts(&env, 1).await;
    let alert = lines.iter().find(|a| a["rule"] == "restricted_records").expect("a restricted_records alert");
    assert_eq!(alert["principal"]["sub"], "clinician_a");
    assert_eq!(alert["observed"], 3);
    assert!(!alert.to_string().contains("PSY") && !alert.to_string().contains(PSY_ID), "{alert}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_patient_in_the_data_is_withheld_from_tenant_wide_principals() {
    // a-p2 becomes a restricted chart: only the data changes.
    let env = FullEnv::start_with_policies(|policies| {
        let path = policies.join("data/tenants.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let restricted = r#""a-p2": {"tenant": "tenant-a", "security": ["http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R"]}"#;
        std::fs::write(&path, text.replace(r#""a-p2": {"tenant": "tenant-a"}"#, restricted)).unwrap();
    })
    .await;
    // scraper_a (analyst) reaches tenant-a through the tenant: not her chart.
    let (s, code, body) = env.get_as("scraper_a", "/fhir/Patient/a-p2").await;
    assert_eq!((s, code.as_str()), (403, "security_label_not_permitted"), "{body}");
    let (s, code, _) = env.get_as("scraper_a", "/fhir/Observation/a-p2-obs-01").await;
    assert_eq!((s, code.as_str()), (403, "security_label_not_permitted"));
    let (s, _, body) = env.get_as("scraper_a", "/fhir/Encounter?patient=a-p1,a-p2").await;
    assert_eq!(s, 200);
    assert!(
        body.contains("a-p1-enc-1") && !body.contains("Patient/a-p2") && !body.contains("a-p2-enc"),
        "{body}"
    );
    assert!(body.contains("suppressed"));
    assert_eq!(env.get_as("scraper_a", "/fhir/Patient/a-p1").await.0, 200);
    // Her care team (clinician_a treats a-p1 and a-p2) and break-glass reach her.
    let (s, _, body) = env.get_as("clinician_a", "/fhir/Patient/a-p2").await;
    assert_eq!(s, 200, "{body}");
    let (s, _, body) = env.get_as("clinician_a", "/fhir/Encounter").await;
    assert_eq!(s, 200);
    assert!(body.contains("a-p2-enc-1") && !body.contains("suppressed"), "{body}");
    let res = env.get_break_glass("er_doctor_a", "/fhir/Patient/a-p2", "unconscious patient in the ER").await;
    assert_eq!(res.status, 200, "{}", res.text());
}
