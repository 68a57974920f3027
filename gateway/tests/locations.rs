//! `Location` and `Content-Location` of an upstream answer name URLs the client can follow
//! through the gateway: on a route forwarded under another prefix (`upstream_path_prefix`), the
//! upstream's URL is mapped back under the route's prefix on the client's host (as nginx's
//! `proxy_redirect default`), and the upstream is told the public prefix (`X-Forwarded-Prefix`)
//! for the links it builds itself.

#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod common;

use common::FullEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_url_comes_back_under_the_route_the_client_used() {
    let env = FullEnv::start_edited(
        // The policy lets clinicians use the non-FHIR route.
        |policies| {
            std::fs::write(policies.join("data/routes.json"), r#"{"routes":{"raw":{"roles":["clinician"]}}}"#)
                .unwrap()
        },
        "",
        "",
        |cfg, _| {
            let routes = format!(
                "{}  - {{ name: site, path_prefix: /site-a/fhir, upstream: fhir, fhir: true, \
                 upstream_path_prefix: /fhir }}\n  - {{ name: raw, path_prefix: /raw, upstream: fhir, \
                 upstream_path_prefix: /fhir }}\n",
                common::FHIR_ROUTE
            );
            common::replace_fhir_route(&cfg, &routes)
        },
    )
    .await;
    let read = |path: &'static str| {
        env.pki.public_client().get(&env.gw.url(path)).bearer(&env.token("clinician_a")).send()
    };
    let host = env.gw.url("/").trim_end_matches('/').to_owned();

    let res = read("/site-a/fhir/Patient/a-p1").await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("content-location"),
        Some(format!("{host}/site-a/fhir/Patient/a-p1/_history/1").as_str()),
        "the upstream said {host}/fhir/...: not a URL of this route"
    );
    let seen = env.upstream.recorder.next().await;
    assert_eq!(seen.path_and_query, "/fhir/Patient/a-p1");
    assert_eq!(seen.headers.get("x-forwarded-prefix").unwrap(), "/site-a/fhir");

    // A record read by id is verified before it is sent: its Content-Location is mapped too.
    let res = read("/site-a/fhir/Observation/a-p1-obs-01").await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("content-location"),
        Some(format!("{host}/site-a/fhir/Observation/a-p1-obs-01/_history/1").as_str())
    );

    // A search result's paging links: under the route, and the next page follows through it.
    let res = read("/site-a/fhir/Observation?patient=a-p1&_count=2").await.unwrap();
    assert_eq!(res.status, 200);
    let _ = env.upstream.recorder.next().await;
    let bundle: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    let next = bundle["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").unwrap();
    let next = next["url"].as_str().unwrap();
    assert!(next.starts_with(&format!("{host}/site-a/fhir/Observation?")), "{next}");
    let page = env.pki.public_client().get(next).bearer(&env.token("clinician_a")).send().await.unwrap();
    assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
    let _ = env.upstream.recorder.next().await;
    assert!(
        String::from_utf8_lossy(&res.body).contains(&format!("\"fullUrl\":\"{host}/fhir/")),
        "entries as sent"
    );

    // A route the gateway does not read (not FHIR): the answer streams, mapped the same way.
    let res = read("/raw/metadata").await.unwrap();
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    let _ = env.upstream.recorder.next().await;
    let res = read("/raw/Patient/a-p1").await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-location"), Some(format!("{host}/raw/Patient/a-p1/_history/1").as_str()));
    let _ = env.upstream.recorder.next().await;

    // The route that forwards under its own prefix: the upstream's URL is already right.
    let res = read("/fhir/Patient/a-p1").await.unwrap();
    assert_eq!(res.header("content-location"), Some(format!("{host}/fhir/Patient/a-p1/_history/1").as_str()));
    let _ = env.upstream.recorder.next().await;
    let seen = env.upstream.recorder.next().await;
    assert_eq!(seen.path_and_query, "/fhir/Patient/a-p1");
    assert!(seen.headers.get("x-forwarded-prefix").is_none());
}

/// HAPI pages a search through `[base]?_getpages=<stored search>&_getpagesoffset=N` links. For a
/// clinician, such a page is not a new system-wide search (refused: it cannot be narrowed) but a
/// continuation of the one she made: forwarded, and its page verified entry by entry, so a page of
/// another patient's search is refused whatever its id says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_further_page_of_a_stored_search_is_forwarded_and_its_entries_verified() {
    let env = FullEnv::start().await;
    // The sample upstream's "stored search" id is the search itself.
    let page =
        |search: &str| format!("/fhir?_getpages={search}&_getpagesoffset=2&_count=2&_bundletype=searchset");
    let (s, code, body) = env.get_as("clinician_a", &page("Observation%3Fpatient%3Da-p1")).await;
    assert_eq!((s, code.as_str()), (200, ""), "{body}");
    let bundle: serde_json::Value = serde_json::from_str(&body).unwrap();
    let entries = bundle["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| e["resource"]["subject"]["reference"] == "Patient/a-p1"), "{body}");
    let seen = env.upstream.recorder.next().await;
    assert!(
        seen.path_and_query.starts_with("/fhir?_getpages="),
        "forwarded as sent: {}",
        seen.path_and_query
    );

    // Another patient's search, named in the id: its page is refused on what it holds.
    let (s, code, body) = env.get_as("clinician_a", &page("Observation%3Fpatient%3Da-p3")).await;
    assert_eq!((s, code.as_str()), (403, "patient_not_permitted"), "{body}");
    assert!(!body.contains("a-p3-obs"), "{body}");
    // A system-wide search that is not a continuation is still refused.
    let (s, code, _) = env.get_as("clinician_a", "/fhir?_lastUpdated=gt2020-01-01").await;
    assert_eq!((s, code.as_str()), (403, "policy_denied"));
}

/// A server that writes links on its own name (a fixed internal base URL): on a route that
/// forwards under its own prefix, the Bundle's paging links are still mapped to the client's
/// host, while a resource's `fullUrl` is sent as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_on_the_upstreams_own_name_are_mapped_to_the_clients_host() {
    let name = format!("https://{}", phigate::demo::pki::UPSTREAM_SERVER_NAME);
    let internal = format!("{name}/fhir");
    let env = FullEnv::start_custom(|b| b.public_base_url(&name), |_| {}, "", "", |cfg, _| cfg).await;
    let host = env.gw.url("/").trim_end_matches('/').to_owned();
    let (s, _, body) = env.get_as("clinician_a", "/fhir/Observation?patient=a-p1&_count=2").await;
    assert_eq!(s, 200, "{body}");
    let bundle: serde_json::Value = serde_json::from_str(&body).unwrap();
    let next = bundle["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").unwrap();
    assert!(next["url"].as_str().unwrap().starts_with(&format!("{host}/fhir/Observation?")), "{next}");
    assert!(bundle["entry"][0]["fullUrl"].as_str().unwrap().starts_with(&internal), "{body}");
}
