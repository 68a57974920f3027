//! Bulk export end to end (FHIR Bulk Data, HAPI's URL shapes on the sample upstream): the
//! backend service `bulk_a` starts an export, polls the status URL the gateway issued, and reads
//! the files of the manifest through URLs sealed to it. Another principal holding those URLs is
//! refused before anything is forwarded, the upstream's own status URL is refused, and each file
//! is checked line by line as it streams: a labelled resource is left out, and a line of another
//! tenant ends the file before it reaches the client.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod common;

use common::writes::{assert_nothing_forwarded_since_last, forwarded, refusal};
use common::{exfil_alerts, FullEnv};
use phigate_test_support::TestResponse;

/// The sample upstream partitions exports by `X-Phigate-Tenant`.
const TENANT_HEADER: &str = "  routes:\n    fhir: { forward_tenant_header: true }\n";

async fn start(partitioned: bool) -> FullEnv {
    let identity = if partitioned { TENANT_HEADER } else { "" };
    // The SOC hears of a second export within the day.
    let extra = "bulk_export: { ttl_secs: 600 }\n\
                 exfil: { alerts_path: alerts/exfil.jsonl, bulk_exports: { threshold: 1 } }\n";
    FullEnv::start_full(|_| {}, identity, extra).await
}

async fn get(env: &FullEnv, persona: &str, path: &str, prefer: bool) -> TestResponse {
    let mut req = env.pki.public_client().get(&env.gw.url(path)).bearer(&env.token(persona));
    if prefer {
        req = req.header("prefer", "respond-async");
    }
    req.send().await.unwrap()
}

/// The path of a URL the gateway issued (on the host the client reached it at).
fn path_of(url: &str) -> String {
    let rest = url.strip_prefix("https://").expect("https");
    let path = &rest[rest.find('/').expect("a path")..];
    assert!(path.starts_with("/fhir/$phigate-bulk/"), "not an issued URL: {url}");
    path.to_owned()
}

/// Kicks off an export of `types` as `bulk_a`; the issued status URL's path. `tenant`: what the
/// upstream is told the caller's tenant is (`None`: nothing, the route does not forward it).
async fn kick_off(env: &FullEnv, types: &str, tenant: Option<&str>) -> String {
    let res = get(env, "bulk_a", &format!("/fhir/Patient/$export?_type={types}"), true).await;
    assert_eq!(res.status, 202, "{}", res.text());
    let location = res.header("content-location").expect("Content-Location").to_owned();
    assert!(
        !location.contains("job-") && !location.contains("_jobId"),
        "the upstream's job id leaked: {location}"
    );
    let seen = forwarded(env).await;
    assert_eq!(seen.headers.get("x-phigate-tenant").map(|v| v.to_str().unwrap()), tenant);
    path_of(&location)
}

/// Polls (bounded) until the export completes; the manifest.
async fn manifest(env: &FullEnv, status: &str) -> serde_json::Value {
    for _ in 0..5 {
        let res = get(env, "bulk_a", status, false).await;
        match res.status.as_u16() {
            202 => assert_eq!(res.header("x-progress"), Some("in-progress")),
            200 => return res.json(),
            other => panic!("status URL answered {other}: {}", res.text()),
        }
    }
    panic!("the export did not complete in 5 polls");
}

/// The issued URL of the `ty` file. bulk_a has security labels withheld, so the upstream's count
/// of the file's resources is not passed on (the file loses the labelled ones).
fn output<'m>(manifest: &'m serde_json::Value, ty: &str) -> &'m str {
    let item = manifest["output"].as_array().unwrap().iter().find(|o| o["type"] == ty).expect(ty);
    assert_eq!(item.get("count"), None, "a count would tell how many lines were withheld: {item}");
    item["url"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_is_polled_and_read_through_urls_sealed_to_the_client_that_started_it() {
    let mut env = start(true).await;
    let status = kick_off(&env, "Patient,Observation", Some("tenant-a")).await;
    let manifest = manifest(&env, &status).await;
    // The upstream's file URLs never reach the client; each is issued to bulk_a.
    let text = manifest.to_string();
    assert!(!text.contains("/Binary/"), "{text}");
    let url = output(&manifest, "Observation");
    let res = get(&env, "bulk_a", &path_of(url), false).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("application/fhir+ndjson"));
    let lines: Vec<serde_json::Value> =
        res.text().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!lines.is_empty());
    assert!(lines.iter().all(|r| r["resourceType"] == "Observation"));
    assert!(!res.text().contains("b-p"), "tenant B in tenant A's export");
    let rid = res.header("x-request-id").unwrap().to_owned();
    let record = env.wait_record(|r| r["request_id"] == rid.as_str() && r["phase"] == "outcome").await;
    assert_eq!(record["path"].as_str().unwrap().split('/').nth(2), Some("Binary"), "{record}");
    assert_eq!(record["entries"], lines.len(), "{record}");
    assert_eq!(record["subject"], "bulk_a");
    // The same file over HTTP/2 (the body streams as DATA frames, without Content-Length).
    let h2 = env.pki.public_client_builder().http2_only().build().unwrap();
    let res2 = h2.get(&env.gw.url(&path_of(url))).bearer(&env.token("bulk_a")).send().await.unwrap();
    assert_eq!((res2.status.as_u16(), res2.version), (200, http::Version::HTTP_2));
    assert_eq!(res2.body, res.body);
    // Whose records the file held: every patient its lines name, in the audit record.
    let mut named: Vec<&str> = lines
        .iter()
        .map(|r| r["subject"]["reference"].as_str().unwrap().trim_start_matches("Patient/"))
        .collect();
    named.sort_unstable();
    named.dedup();
    assert!(!named.is_empty());
    assert_eq!(record["disclosed"], serde_json::json!(named), "{record}");
    assert_eq!(record["bulk"], "file");
    // The accounting of the export: who started it, polled it and read which file; nothing else.
    assert_eq!(env.get_as("clinician_a", "/fhir/Patient/a-p1").await.0, 200);
    env.gw.stop();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_phigate"))
        .args(["audit", "report", "--bulk"])
        .arg(env.pki.dir().join("audit"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let seen: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["subject"].as_str().unwrap(), r["bulk"].as_str().or(r["operation"].as_str()).unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("bulk_a", "export"),
            ("bulk_a", "status"),
            ("bulk_a", "status"),
            ("bulk_a", "file"),
            ("bulk_a", "file")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_principal_holding_the_urls_is_refused_before_anything_is_forwarded() {
    let env = start(true).await;
    let status = kick_off(&env, "Patient", Some("tenant-a")).await;
    let manifest = manifest(&env, &status).await;
    while env.upstream.recorder.try_next().is_some() {}
    let file = output(&manifest, "Patient");
    for (persona, path) in
        [("scraper_a", status.as_str()), ("scraper_a", &path_of(file)), ("clinician_b", &path_of(file))]
    {
        let res = get(&env, persona, path, false).await;
        assert_eq!(refusal(&res), (403, "bulk_url_not_owner".into()), "{persona} {path}");
    }
    // The upstream's own status URL, asked for directly (by the owner too), and a forged one.
    let direct = get(&env, "bulk_a", "/fhir/$export-poll-status?_jobId=job-1", false).await;
    assert_eq!(refusal(&direct), (404, "bulk_url_invalid".into()));
    let mut forged = path_of(file);
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(refusal(&get(&env, "bulk_a", &forged, false).await), (404, "bulk_url_invalid".into()));
    assert_nothing_forwarded_since_last(&env).await;
    // The owner cancels: the upstream gets the DELETE of its own status URL.
    let res = env
        .pki
        .public_client()
        .request(http::Method::DELETE, &env.gw.url(&status))
        .bearer(&env.token("bulk_a"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status, 202, "{}", res.text());
    let seen = forwarded(&env).await;
    assert_eq!(
        (seen.method.as_str(), seen.path_and_query.as_str()),
        ("DELETE", "/fhir/$export-poll-status?_jobId=job-1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labelled_resource_is_left_out_of_the_file() {
    let env = start(true).await;
    let status = kick_off(&env, "Condition", Some("tenant-a")).await;
    let manifest = manifest(&env, &status).await;
    let url = output(&manifest, "Condition");
    let res = get(&env, "bulk_a", &path_of(url), false).await;
    assert_eq!(res.status, 200);
    let text = res.text();
    assert!(!text.contains("a-p1-cond-psy"), "the PSY-labelled Condition was sent");
    let rid = res.header("x-request-id").unwrap().to_owned();
    let record = env.wait_record(|r| r["request_id"] == rid.as_str() && r["phase"] == "outcome").await;
    // Exactly the labelled line is left out; every other line was sent.
    assert_eq!(
        (record["withheld"].as_u64(), record["entries"].as_u64()),
        (Some(1), Some(text.lines().count() as u64)),
        "{record}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_of_another_tenant_ends_the_file_before_it() {
    // The upstream is not partitioned: tenant A's export holds tenant B's resources too. (The
    // sample files are smaller than pingora's 64 KiB body read, so the foreign line is in the
    // first piece here; `a_foreign_line_after_lines_went_out_cuts_the_transfer_short` has one
    // that arrives later.)
    let env = start(false).await;
    let status = kick_off(&env, "Patient,Observation", None).await;
    let manifest = manifest(&env, &status).await;
    for ty in ["Patient", "Observation"] {
        let url = output(&manifest, ty);
        let res =
            env.pki.public_client().get(&env.gw.url(&path_of(url))).bearer(&env.token("bulk_a")).send().await;
        match res {
            // The foreign line was in the first piece: nothing had gone out, so the answer is
            // the refusal.
            Ok(res) => {
                assert_eq!(refusal(&res), (403, "patient_not_permitted".into()), "{ty}: {}", res.text());
            }
            // The head and tenant A's lines went out first: the transfer is cut short before
            // the foreign line, never completed.
            Err(e) => eprintln!("{ty}: truncated: {e}"),
        }
        let record = env
            .wait_record(|r| {
                r["phase"] == "outcome" && r["path"].as_str().is_some_and(|p| p.ends_with(&format!("-{ty}")))
            })
            .await;
        assert_eq!(record["error"], "patient_not_permitted", "{record}");
    }
}

/// A Group's export (`Group/[id]/$export`) is sealed and checked like any other: the cohort's
/// records come through; another tenant's Group is not found by a partitioned upstream, and from
/// an upstream that does not partition, its file is refused by the line check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_export_is_sealed_and_checked_like_any_other() {
    async fn group_kick_off(env: &FullEnv, group: &str) -> TestResponse {
        get(env, "bulk_a", &format!("/fhir/Group/{group}/$export?_type=Observation"), true).await
    }
    /// Exports the Group's Observations and reads the file through the issued URLs.
    async fn observation_file(env: &FullEnv, group: &str) -> TestResponse {
        let res = group_kick_off(env, group).await;
        assert_eq!(res.status, 202, "{}", res.text());
        let status = path_of(res.header("content-location").expect("Content-Location"));
        let files = manifest(env, &status).await;
        get(env, "bulk_a", &path_of(output(&files, "Observation")), false).await
    }
    let env = start(true).await;
    let res = observation_file(&env, "tenant-a-cohort").await;
    assert_eq!(res.status, 200, "{}", res.text());
    let mut subjects: Vec<String> = res
        .text()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["subject"]["reference"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    subjects.sort_unstable();
    subjects.dedup();
    assert_eq!(subjects, ["Patient/a-p1", "Patient/a-p2"]);
    // Tenant B's cohort, asked for by tenant A's service: the partitioned upstream has no such
    // Group for tenant A.
    assert_eq!(group_kick_off(&env, "tenant-b-cohort").await.status, 404);

    // An upstream that does not partition exports it; its file never reaches tenant A's service.
    let env = start(false).await;
    let res = observation_file(&env, "tenant-b-cohort").await;
    assert_eq!(refusal(&res), (403, "patient_not_permitted".into()), "{}", res.text());
}

/// A kick-off by POST (Bulk Data v2: the parameters in a `Parameters` body) is judged, forwarded
/// with its body and sealed like a GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_kicked_off_by_post_is_sealed_like_any_other() {
    let env = start(true).await;
    let body = br#"{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"Patient"}]}"#;
    let post = |persona: &str, prefer: bool| {
        let mut req = env
            .pki
            .public_client()
            .request(http::Method::POST, &env.gw.url("/fhir/Patient/$export"))
            .bearer(&env.token(persona))
            .header("content-type", "application/fhir+json")
            .body(body.to_vec());
        if prefer {
            req = req.header("prefer", "respond-async");
        }
        req.send()
    };
    let res = post("bulk_a", true).await.unwrap();
    assert_eq!(res.status, 202, "{}", res.text());
    let seen = forwarded(&env).await;
    assert_eq!((seen.method.as_str(), seen.body.as_deref()), ("POST", Some(&body[..])));
    let status = path_of(res.header("content-location").expect("Content-Location"));
    let files = manifest(&env, &status).await;
    assert_eq!(files["output"].as_array().unwrap().len(), 1, "{files}");
    let res = get(&env, "bulk_a", &path_of(output(&files, "Patient")), false).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(res.text().lines().all(|l| l.contains(r#""resourceType":"Patient""#) && !l.contains("b-p")));
    // The same rules as a GET: asynchronous only, backend services only.
    assert_eq!(refusal(&post("bulk_a", false).await.unwrap()), (400, "export_requires_async".into()));
    assert_eq!(refusal(&post("clinician_a", true).await.unwrap()).0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_after_export_alerts_the_soc() {
    let env = start(true).await;
    kick_off(&env, "Patient", Some("tenant-a")).await;
    // Refused kick-offs are not exports: this one lacks Prefer: respond-async.
    let sync = get(&env, "bulk_a", "/fhir/Patient/$export", false).await;
    assert_eq!(refusal(&sync), (400, "export_requires_async".into()));
    kick_off(&env, "Observation", Some("tenant-a")).await;
    let alerts = exfil_alerts(&env, 1).await;
    let alert = alerts.iter().find(|a| a["rule"] == "bulk_exports").expect("a bulk_exports alert");
    assert_eq!(
        (alert["principal"]["sub"].as_str(), alert["observed"].as_u64()),
        (Some("bulk_a"), Some(2)),
        "{alert}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_line_after_lines_went_out_cuts_the_transfer_short() {
    // The gateway's data places a-p5 in tenant B while the upstream files her under tenant A,
    // and every resource is 20 times in the file: a-p1's lines alone fill more than one piece
    // read from the upstream (64 KiB), so the head and checked lines go out before a-p5's.
    let env = FullEnv::start_custom(
        |upstream| upstream.export_copies(20),
        |dir| {
            let path = dir.join("data/tenants.json");
            let text = std::fs::read_to_string(&path).unwrap();
            let moved =
                text.replace(r#""a-p5": {"tenant": "tenant-a"}"#, r#""a-p5": {"tenant": "tenant-b"}"#);
            assert_ne!(moved, text, "a-p5 moved");
            std::fs::write(&path, moved).unwrap();
        },
        TENANT_HEADER,
        "bulk_export: {}\n",
        // The shipped policy tests' fixtures keep a-p5 in tenant A.
        |cfg, _| cfg.replace("  max_eval_ms: 2000\n", "  max_eval_ms: 2000\n  test_on_reload: false\n"),
    )
    .await;
    let status = kick_off(&env, "Observation", Some("tenant-a")).await;
    let manifest = manifest(&env, &status).await;
    let url = output(&manifest, "Observation");
    let res =
        env.pki.public_client().get(&env.gw.url(&path_of(url))).bearer(&env.token("bulk_a")).send().await;
    assert!(res.is_err(), "a complete response: {:?}", res.map(|r| (r.status, r.body.len())));
    let record = env
        .wait_record(|r| {
            r["phase"] == "outcome" && r["path"].as_str().is_some_and(|p| p.ends_with("-Observation"))
        })
        .await;
    assert_eq!(
        (record["status"].as_u64(), record["error"].as_str()),
        (Some(200), Some("patient_not_permitted")),
        "{record}"
    );
    // What went out before the cut: whole lines of tenant A's other patients, never a-p5's.
    let disclosed = record["disclosed"].as_array().unwrap();
    assert!(!disclosed.is_empty() && !disclosed.iter().any(|p| p == "a-p5"), "{record}");
    assert!(record["bytes_out"].as_u64().unwrap() > 0, "{record}");
    // Over HTTP/2 the stream is reset: never a complete response either.
    let h2 = env.pki.public_client_builder().http2_only().build().unwrap();
    let res = h2.get(&env.gw.url(&path_of(url))).bearer(&env.token("bulk_a")).send().await;
    assert!(res.is_err(), "a complete HTTP/2 response: {:?}", res.map(|r| (r.status, r.body.len())));
}
