//! The whole pipeline end to end, with the demo's personas, policies and care teams: identity
//! (MFA, binding), patient-level authorization (care teams, tenants, narrowing, response
//! verification, break-glass) and the audit records each leaves.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod common;

use common::FullEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_refusals_carry_the_standard_challenges() {
    let env = FullEnv::start().await;
    let res = env.pki.public_client().get(&env.gw.url("/fhir/Patient/a-p1")).send().await.unwrap();
    assert_eq!(res.status, 401);
    assert_eq!(res.header("www-authenticate"), Some("Bearer"));
    assert_eq!(common::error_code(&res.body), "token_missing");

    let nurse = env.token("nurse_nomfa");
    let res =
        env.pki.public_client().get(&env.gw.url("/fhir/Patient/a-p5")).bearer(&nurse).send().await.unwrap();
    assert_eq!(res.status, 401);
    let challenge = res.header("www-authenticate").unwrap();
    assert!(challenge.starts_with("Bearer error=\"insufficient_user_authentication\""), "{challenge}");
    assert!(!res.text().contains(&nurse), "the token is never echoed");

    // A certificate-bound token: refused without its certificate, accepted with it.
    let bound = env.token("bound_client");
    let without =
        env.pki.public_client().get(&env.gw.url("/fhir/Patient/a-p1")).bearer(&bound).send().await.unwrap();
    assert_eq!(
        (without.status.as_u16(), common::error_code(&without.body).as_str()),
        (401, "token_binding_mismatch")
    );
    let with =
        env.pki.end_user_client().get(&env.gw.url("/fhir/Patient/a-p1")).bearer(&bound).send().await.unwrap();
    assert_eq!(with.status, 200);
    assert_eq!(env.upstream.recorder.count(), 1, "only the accepted request was forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smart_app_discovers_the_server_without_a_token_and_nothing_else() {
    let env = FullEnv::start().await;
    let anonymous = |path: &str| env.pki.public_client().get(&env.gw.url(path)).send();
    let res = anonymous("/fhir/.well-known/smart-configuration").await.unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(res.json()["token_endpoint"].is_string(), "{}", res.text());
    let res = anonymous("/fhir/metadata").await.unwrap();
    assert_eq!(
        (res.status.as_u16(), res.json()["resourceType"].as_str()),
        (200, Some("CapabilityStatement"))
    );
    let seen = env.upstream.recorder.next().await;
    assert_eq!(seen.path_and_query, "/fhir/.well-known/smart-configuration");
    assert!(seen.headers.get("x-phigate-assertion").is_none(), "nobody to assert");
    env.upstream.recorder.next().await;
    // Nothing else is public, and discovery is not a way to write.
    let res = anonymous("/fhir/Patient/a-p1").await.unwrap();
    assert_eq!((res.status.as_u16(), common::error_code(&res.body).as_str()), (401, "token_missing"));
    let res = env.pki.public_client().post(&env.gw.url("/fhir/metadata")).body("{}").send().await.unwrap();
    assert_eq!(res.status, 405);
    assert!(env.upstream.recorder.try_next().is_none());
    // The discovery read is audited like any other, with nobody named.
    let record = env
        .wait_record(|r| r["path"] == "/fhir/.well-known/smart-configuration" && r["phase"] == "outcome")
        .await;
    assert_eq!((record["subject"].is_null(), record["status"].as_u64()), (true, Some(200)));
    assert!(record["decision"]["reasons"].as_array().unwrap().iter().any(|r| r == "public_discovery"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_can_keep_its_capabilities_private() {
    let env = FullEnv::start_full(|_| {}, "  defaults:\n    anonymous_discovery: false\n", "").await;
    let res = env.pki.public_client().get(&env.gw.url("/fhir/metadata")).send().await.unwrap();
    assert_eq!((res.status.as_u16(), common::error_code(&res.body).as_str()), (401, "token_missing"));
    assert_eq!(env.get_as("clinician_a", "/fhir/metadata").await.0, 200, "with a token, as before");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpop_bound_token_needs_a_fresh_proof_over_http1_and_http2() {
    let env = FullEnv::start().await;
    // The demo persona whose token is bound to its own key (tokens/dpop_app.dpop-key.pem).
    let token = env.token("dpop_app");
    let url = env.gw.url("/fhir/Patient/a-p1");
    let h2 = env.pki.public_client_builder().http2_only().build().unwrap();
    let h1 = env.pki.public_client_builder().http1_only().build().unwrap();
    for (client, proto) in [(&h1, "h1"), (&h2, "h2")] {
        let proof = phigate::demo::personas::dpop_proof(env.pki.dir(), "dpop_app", "GET", &url).unwrap();
        let send = |proof: &str| {
            client.get(&url).header("authorization", &format!("DPoP {token}")).header("dpop", proof).send()
        };
        assert_eq!(send(&proof).await.unwrap().status, 200, "{proto}: a fresh proof of the bound key");
        let replay = send(&proof).await.unwrap();
        assert_eq!(
            (replay.status.as_u16(), common::error_code(&replay.body).as_str()),
            (401, "dpop_proof_invalid"),
            "{proto}: the same proof again"
        );
        assert!(replay.header("www-authenticate").unwrap().starts_with("DPoP error=\"invalid_dpop_proof\""));
    }
    // As a bearer token (a copy of the token without the key) it is refused.
    let res = h1.get(&url).bearer(&token).send().await.unwrap();
    assert_eq!((res.status.as_u16(), common::error_code(&res.body).as_str()), (401, "dpop_proof_invalid"));
    assert_eq!(env.upstream.recorder.count(), 2, "only the two proven requests were forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_nonce_challenge_and_fresh_nonces_reach_the_client() {
    // RFC 9449 §9 nonces on: the key file sits next to the config (all replicas share it).
    let env = FullEnv::start_full(
        |policies| std::fs::write(policies.parent().unwrap().join("nonce.key"), [9u8; 32]).unwrap(),
        "  dpop: { nonce: { key_path: nonce.key } }\n",
        "",
    )
    .await;
    let token = env.token("dpop_app");
    let url = env.gw.url("/fhir/Patient/a-p1");
    let client = env.pki.public_client_builder().http1_only().build().unwrap();
    let pem = std::fs::read_to_string(phigate::demo::personas::dpop_key_path_of(env.pki.dir(), "dpop_app"))
        .unwrap();
    let key = phigate_identity::dev::DevIssuer::es256_from_pem("dpop_app", &pem).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let send = |proof: String| {
        client.get(&url).header("authorization", &format!("DPoP {token}")).header("dpop", &proof).send()
    };
    let first = send(key.dpop_proof("GET", &url, &token, now)).await.unwrap();
    assert_eq!(
        (first.status.as_u16(), common::error_code(&first.body).as_str()),
        (401, "dpop_nonce_required")
    );
    assert!(first.header("www-authenticate").unwrap().starts_with("DPoP error=\"use_dpop_nonce\""));
    let nonce = first.header("dpop-nonce").expect("the challenge carries a nonce").to_owned();
    let ok = send(key.dpop_proof_with_nonce("GET", &url, &token, now, Some(&nonce))).await.unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.header("dpop-nonce"), Some(nonce.as_str()), "a success carries the current nonce");
    assert_eq!(env.upstream.recorder.count(), 1, "only the request with a nonce was forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn care_teams_and_tenants_decide_patient_access() {
    let env = FullEnv::start().await;
    assert_eq!(env.get_as("clinician_a", "/fhir/Patient/a-p1").await.0, 200);
    let (s, code, _) = env.get_as("clinician_a", "/fhir/Patient/a-p3").await;
    assert_eq!((s, code.as_str()), (403, "patient_not_permitted"));
    let (s, code, _) = env.get_as("clinician_b", "/fhir/Patient/a-p1").await;
    assert_eq!((s, code.as_str()), (403, "tenant_mismatch"));
    let (s, _, _) = env.get_as("clinician_a", "/fhir/Observation?patient=a-p3").await;
    assert_eq!(s, 403);
    let (s, _, _) = env.get_as("clinician_a", "/fhir/Observation?subject:Patient.name=x").await;
    assert_eq!(s, 403, "a chained param cannot be resolved to patients");
    let (s, _, _) = env.get_as("clinician_a", "/fhir/Patient/a-p3/$everything").await;
    assert_eq!(s, 403);
    assert_eq!(env.upstream.recorder.count(), 1, "only the permitted read reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_one_foreign_entry_is_refused_whole() {
    let env = FullEnv::start().await;
    let bundle = serde_json::json!({
        "resourceType": "Bundle", "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Patient/a-p1"}},
            {"request": {"method": "GET", "url": "Observation?patient=a-p3"}}
        ]
    });
    let res = env
        .pki
        .public_client()
        .post(&env.gw.url("/fhir"))
        .bearer(&env.token("clinician_a"))
        .header("content-type", "application/fhir+json")
        .body(serde_json::to_vec(&bundle).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status, 403, "{}", res.text());
    assert_eq!(env.upstream.recorder.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_search_is_narrowed_and_foreign_reads_by_id_are_verified() {
    let env = FullEnv::start().await;
    let (s, _, body) = env.get_as("clinician_a", "/fhir/Observation?_count=5").await;
    assert_eq!(s, 200, "{body}");
    let seen = env.upstream.recorder.next().await;
    assert!(
        seen.path_and_query.contains("patient=a-p1%2Ca-p2")
            || seen.path_and_query.contains("patient=a-p1,a-p2"),
        "{}",
        seen.path_and_query
    );

    // Observation/a-p3-obs-01 belongs to a patient off the care team: only the response says so.
    let (s, code, body) = env.get_as("clinician_a", "/fhir/Observation/a-p3-obs-01").await;
    assert_eq!((s, code.as_str()), (403, "patient_not_permitted"));
    assert!(!body.contains("a-p3"), "the upstream body never reaches the client: {body}");
    assert_eq!(env.upstream.recorder.next().await.path_and_query, "/fhir/Observation/a-p3-obs-01");
    assert_eq!(env.get_as("clinician_a", "/fhir/Observation/a-p1-obs-01").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_search_may_include_what_its_patients_records_reference() {
    let env = FullEnv::start().await;
    // Narrowed to her care team; the patients of the page come along, checked like the matches.
    let (s, _, body) =
        env.get_as("clinician_a", "/fhir/Observation?_count=5&_include=Observation:subject").await;
    assert_eq!(s, 200, "{body}");
    let seen = env.upstream.recorder.next().await;
    assert!(seen.path_and_query.contains("_include=Observation"), "{}", seen.path_and_query);
    let bundle: serde_json::Value = serde_json::from_str(&body).unwrap();
    let included: Vec<&str> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert!(!included.is_empty() && included.iter().all(|id| ["a-p1", "a-p2"].contains(id)), "{included:?}");
    // Anchored outside the compartment, a revinclude reaches every patient of that practitioner.
    let (s, _, _) = env.get_as("clinician_a", "/fhir/Practitioner?_revinclude=Encounter:practitioner").await;
    assert_eq!(s, 403);
    assert!(env.upstream.recorder.try_next().is_none(), "refused before the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_only_search_is_forwarded_asking_for_no_entries() {
    let env = FullEnv::start().await;
    let (s, _, body) = env.get_as("clinician_a", "/fhir/Observation?patient=a-p1&_summary=count").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        env.upstream.recorder.next().await.path_and_query,
        "/fhir/Observation?patient=a-p1&_summary=count&_count=0"
    );
    // Any other search of hers gains the tenant's page size.
    assert_eq!(env.get_as("clinician_a", "/fhir/Observation?patient=a-p1").await.0, 200);
    assert_eq!(
        env.upstream.recorder.next().await.path_and_query,
        "/fhir/Observation?patient=a-p1&_count=100"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_needs_the_role_and_is_marked_in_the_audit_trail() {
    let mut env = FullEnv::start().await;
    let res = env.get_break_glass("er_doctor_a", "/fhir/Patient/a-p3", "unconscious patient in the ER").await;
    assert_eq!(res.status, 200, "{}", res.text());
    let rid = res.header("x-request-id").unwrap().to_owned();
    let res = env.get_break_glass("clinician_a", "/fhir/Patient/a-p3", "curious").await;
    assert_eq!(
        (res.status.as_u16(), common::error_code(&res.body).as_str()),
        (403, "break_glass_not_permitted")
    );
    let denied_rid = res.header("x-request-id").unwrap().to_owned();
    // The refusal's record was durable before the client got the 403: no wait.
    let on_disk = env.audit_records();
    let denied: Vec<_> = on_disk.iter().filter(|r| r["request_id"] == denied_rid.as_str()).collect();
    assert_eq!(denied.len(), 1, "the denied record is on disk when the refusal arrives");
    env.gw.stop();
    let after = env.audit_records();
    let count = after.iter().filter(|r| r["request_id"] == denied_rid.as_str()).count();
    assert_eq!(count, 1, "on_complete wrote no second denied record");
    let recs = env.audit_records();
    let attempt = recs.iter().find(|r| r["request_id"] == rid.as_str() && r["phase"] == "attempt").unwrap();
    let text = attempt.to_string();
    assert!(text.contains("unconscious patient in the ER"), "break-glass reason recorded: {text}");
    assert!(text.contains("er_doctor_a") && text.contains("a-p3"), "{text}");
    let denied = recs.iter().find(|r| r["request_id"] == denied_rid.as_str()).unwrap();
    assert_eq!(denied["phase"], "denied", "{denied}");
}

/// The active policy revision, from `/readyz`.
async fn revision(env: &FullEnv) -> String {
    let ready = common::admin_get(env.gw.admin, "/readyz").await;
    let at = ready.find("policy revision ").expect("revision in readyz") + "policy revision ".len();
    ready[at..].chars().take_while(char::is_ascii_hexdigit).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_hot_reload_under_load_fails_no_request_and_broken_updates_are_rejected() {
    let env = FullEnv::start().await;
    let before = revision(&env).await;
    let policy_file = env.pki.dir().join("policies/tenant.rego");
    let original = std::fs::read_to_string(&policy_file).unwrap();

    // A valid change (a comment), applied while requests are in flight.
    std::fs::write(&policy_file, format!("{original}\n# reviewed\n")).unwrap();
    let token = env.token("clinician_a");
    let url = env.gw.url("/fhir/Patient/a-p1");
    let mut load = Vec::new();
    for _ in 0..40 {
        let (client, url, token) = (env.pki.public_client(), url.clone(), token.clone());
        load.push(tokio::spawn(async move { client.get(&url).bearer(&token).send().await.unwrap().status }));
    }
    env.gw.reloader.reload_all();
    for r in load {
        assert_eq!(r.await.unwrap(), 200, "no request fails during a reload");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut after = revision(&env).await;
    while after == before {
        assert!(std::time::Instant::now() < deadline, "the new revision was not applied");
        tokio::task::yield_now().await;
        after = revision(&env).await;
    }

    // A broken change: rejected (counted), and the last good revision keeps serving.
    std::fs::write(&policy_file, "package phigate.authz\n\nthis is not rego {\n").unwrap();
    env.gw.reloader.reload_all();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !common::admin_get(env.gw.admin, "/metrics")
        .await
        .contains("phigate_policy_reloads_total{result=\"rejected\"}")
    {
        assert!(std::time::Instant::now() < deadline, "the broken revision was not rejected");
        tokio::task::yield_now().await;
    }
    assert_eq!(revision(&env).await, after);
    assert_eq!(env.get_as("clinician_a", "/fhir/Patient/a-p1").await.0, 200);
    assert_eq!(env.get_as("clinician_a", "/fhir/Patient/a-p3").await.0, 403);
}

/// Responses are verified as FHIR JSON: a client asking only for XML (`Accept`, or `_format`,
/// which overrides it) is refused with 406 before anything is forwarded; one accepting anything
/// gets JSON asked of the upstream; one preferring XML but accepting JSON has only its JSON
/// ranges sent; one asking for JSON alone is forwarded as it asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_responses_are_fhir_json_and_xml_is_406_before_forwarding() {
    let env = FullEnv::start().await;
    let token = env.token("clinician_a");
    let client = env.pki.public_client();
    for (accept, path) in [
        ("application/fhir+xml", "/fhir/Patient/a-p1"),
        ("application/xml, text/xml;q=0.5", "/fhir/Observation?patient=a-p1"),
        ("application/fhir+json", "/fhir/Patient/a-p1?_format=xml"),
    ] {
        let res = client.get(&env.gw.url(path)).bearer(&token).header("accept", accept).send().await.unwrap();
        assert_eq!(res.status, 406, "{accept} {path}");
        assert_eq!(common::error_code(&res.body), "format_not_acceptable");
    }
    assert_eq!(env.upstream.recorder.count(), 0, "nothing forwarded");

    let url = env.gw.url("/fhir/Patient/a-p1");
    for (accept, upstream_accept) in [
        (None, "application/fhir+json"),
        (Some("*/*"), "application/fhir+json"),
        (Some("application/json"), "application/json"),
        (Some("application/fhir+xml, application/fhir+json;q=0.8"), "application/fhir+json;q=0.8"),
    ] {
        let mut req = client.get(&url).bearer(&token);
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status, 200, "{accept:?}: {}", res.text());
        let seen = env.upstream.recorder.next().await;
        let got: Vec<&str> = seen.headers.get_all("accept").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(got, [upstream_accept], "{accept:?}");
    }
}

/// A shadow policy through the gateway: the candidate (clinician_b off b-p1's care team) is
/// compared on every request and counted, while the active policy alone decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_policy_is_counted_through_the_gateway_and_never_enforced() {
    let mut env = FullEnv::start_edited(
        |policies| {
            let next = policies.parent().unwrap().join("policies-next");
            phigate::demo::policies::write(&next).unwrap();
            let teams = next.join("data/care_teams.yaml");
            let yaml = std::fs::read_to_string(&teams).unwrap();
            assert!(yaml.contains("clinician_b: [b-p1, b-p2]"), "{yaml}");
            std::fs::write(&teams, yaml.replace("clinician_b: [b-p1, b-p2]", "clinician_b: [b-p2]")).unwrap();
        },
        "",
        "",
        |cfg, _| {
            cfg.replace("  max_eval_ms: 2000\n", "  max_eval_ms: 2000\n  shadow: { dir: policies-next }\n")
        },
    )
    .await;
    assert_eq!(env.get_as("clinician_b", "/fhir/Patient/b-p1").await.0, 200, "the active policy decides");
    assert_eq!(env.get_as("clinician_b", "/fhir/Patient/b-p3").await.0, 403);
    // Each access's audit record says what the candidate would have done.
    let record =
        env.wait_record(|r| r["phase"] == "outcome" && r["patients"] == serde_json::json!(["b-p1"])).await;
    let shadow = &record["decision"]["shadow"];
    assert_eq!(
        (shadow["outcome"].as_str(), shadow["verdict"].as_str()),
        (Some("would_deny"), Some("patient_not_permitted"))
    );
    assert_eq!(shadow["revision"].as_str().unwrap().len(), 16);
    let metrics = common::admin_get(env.gw.admin, "/metrics").await;
    let count = |outcome: &str| {
        let prefix = format!("phigate_policy_shadow_decisions_total{{outcome=\"{outcome}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(prefix.as_str())).map(|v| v.parse::<u64>().unwrap())
    };
    assert_eq!(count("would_deny"), Some(1), "{metrics}");
    assert_eq!(count("agree"), Some(1), "the refused foreign read: {metrics}");
    let (_, ready) = common::admin_call(env.gw.admin, "GET", "/readyz", None, None).await;
    assert!(ready.to_string().contains("shadow "), "{ready}");
    // A search both allow, narrowed to other patients by the candidate: what differs is named.
    assert_eq!(env.get_as("clinician_b", "/fhir/Observation?code=8867-4").await.0, 200);
    // Which real accesses the change would refuse or change, from the trail.
    env.gw.stop();
    let report = |outcome: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_phigate"))
            .args(["audit", "report", "--shadow", outcome])
            .arg(env.pki.dir().join("audit"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect::<Vec<serde_json::Value>>()
    };
    let lines = report("would_deny");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        (lines[0]["patients"].clone(), lines[0]["shadow"].clone()),
        (serde_json::json!(["b-p1"]), serde_json::json!("would_deny"))
    );
    assert_eq!(lines[0].get("shadow_differs"), None);
    let lines = report("would_differ");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["shadow_differs"], serde_json::json!(["narrow_patients", "permitted_patients"]));
}

/// Routes that name the tenant they address (`routes[].tenant`): a fixed tenant per route and a
/// tenant header. A principal of another tenant is refused `tenant_mismatch` even when the
/// request names no patient (a search would otherwise be narrowed to its own patients and sent
/// to the other tenant's base), nothing is forwarded, and the refusal's audit record names the
/// tenant addressed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_names_the_tenant_and_other_tenants_are_refused_before_forwarding() {
    let env = FullEnv::start_edited(
        |_| {},
        "",
        "",
        |cfg, _| {
            let fhir_route = common::FHIR_ROUTE;
            common::replace_fhir_route(
                &cfg,
                &format!(
                    "{fhir_route}  - {{ name: tenant-a, path_prefix: /tenant-a/fhir, upstream: fhir, fhir: true, \
                     upstream_path_prefix: /fhir, tenant: {{ fixed: tenant-a }} }}\n  \
                     - {{ name: by-header, path_prefix: /h/fhir, upstream: fhir, fhir: true, \
                     upstream_path_prefix: /fhir, tenant: {{ header: x-tenant-id }} }}\n  \
                     - {{ name: by-host, path_prefix: /s/fhir, upstream: fhir, fhir: true, \
                     upstream_path_prefix: /fhir, tenant: {{ host_suffix: .fhir.test }} }}\n"
                ),
            )
        },
    )
    .await;
    assert_eq!(env.get_as("clinician_a", "/tenant-a/fhir/Patient/a-p1").await.0, 200);
    assert_eq!(env.upstream.recorder.next().await.path_and_query, "/fhir/Patient/a-p1");

    let res = env
        .pki
        .public_client()
        .get(&env.gw.url("/tenant-a/fhir/Observation?code=8867-4"))
        .bearer(&env.token("clinician_b"))
        .send()
        .await
        .unwrap();
    assert_eq!((res.status.as_u16(), common::error_code(&res.body).as_str()), (403, "tenant_mismatch"));
    let rid = res.header("x-request-id").unwrap().to_owned();
    let denied = env.audit_records().into_iter().find(|r| r["request_id"] == rid.as_str()).unwrap();
    assert_eq!(denied["tenant"], "tenant-a", "{denied}");
    // The same search on the shared route is narrowed to clinician_b's own patients.
    assert_eq!(env.get_as("clinician_b", "/fhir/Observation?code=8867-4").await.0, 200);
    assert!(env.upstream.recorder.next().await.path_and_query.contains("patient=b-p1"));

    let client = env.pki.public_client();
    let url = env.gw.url("/h/fhir/Patient/a-p1");
    let send = |tenant: Option<&'static str>| {
        let mut req = client.get(&url).bearer(&env.token("clinician_a"));
        if let Some(t) = tenant {
            req = req.header("x-tenant-id", t);
        }
        req.send()
    };
    let missing = send(None).await.unwrap();
    assert_eq!((missing.status.as_u16(), common::error_code(&missing.body).as_str()), (400, "bad_request"));
    let other = send(Some("tenant-b")).await.unwrap();
    assert_eq!((other.status.as_u16(), common::error_code(&other.body).as_str()), (403, "tenant_mismatch"));
    assert_eq!(send(Some("tenant-a")).await.unwrap().status, 200);
    let seen = env.upstream.recorder.next().await;
    assert_eq!(seen.path_and_query, "/fhir/Patient/a-p1");

    // The tenant subdomain of the host (HTTP/1.1 `Host`; HTTP/2's `:authority` the same way).
    let url = env.gw.url("/s/fhir/Patient/a-p1");
    let h1 = env.pki.public_client_builder().http1_only().build().unwrap();
    let as_host =
        |host: &'static str| h1.get(&url).bearer(&env.token("clinician_a")).header("host", host).send();
    assert_eq!(as_host("tenant-a.fhir.test").await.unwrap().status, 200);
    assert_eq!(env.upstream.recorder.next().await.path_and_query, "/fhir/Patient/a-p1");
    let other = as_host("tenant-b.fhir.test:8443").await.unwrap();
    assert_eq!((other.status.as_u16(), common::error_code(&other.body).as_str()), (403, "tenant_mismatch"));
    let outside = as_host("tenant-a.fhir.test.evil").await.unwrap();
    assert_eq!((outside.status.as_u16(), common::error_code(&outside.body).as_str()), (400, "bad_request"));
    assert_eq!(env.upstream.recorder.count(), 4, "only the four permitted requests were forwarded");
}

/// A tenant-wide search names no patient, yet reaches every patient it returns: the audit
/// record lists them (`disclosed`), and the accounting of one of them finds the search.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_wide_search_is_accounted_to_every_patient_it_returned() {
    let mut env = FullEnv::start().await;
    let (status, _, body) = env.get_as("scraper_a", "/fhir/Patient?_count=3").await;
    assert_eq!(status, 200, "{body}");
    let bundle: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut returned: Vec<&str> =
        bundle["entry"].as_array().unwrap().iter().map(|e| e["resource"]["id"].as_str().unwrap()).collect();
    returned.sort_unstable();
    assert_eq!(returned.len(), 3);
    let record = env.wait_record(|r| r["phase"] == "outcome" && r["subject"] == "scraper_a").await;
    assert_eq!(record["patients"], serde_json::json!([]), "the request named nobody");
    assert_eq!(record["disclosed"], serde_json::json!(returned), "{record}");
    let rid = record["request_id"].as_str().unwrap().to_owned();
    env.gw.stop();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_phigate"))
        .args(["audit", "report", "--patient", returned[2]])
        .arg(env.pki.dir().join("audit"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().any(|l| l.contains(&rid)), "{text}");
}
