//! The `identity:` section: typos fail, every problem is reported at once by key path, and no
#![allow(clippy::unwrap_used)]
//! message echoes a configured value.

mod support;

use phigate_identity::IdentityConfig;
use phigate_plugin::{ConfigIssue, StageBuildCtx};
use support::*;

fn issues(yaml: &str, route_names: &[&str]) -> Vec<ConfigIssue> {
    let cfg: IdentityConfig = serde_yaml::from_str(yaml).unwrap();
    let dir = temp_dir("config");
    let routes = routes(route_names);
    match cfg.build(&StageBuildCtx { routes: &routes, config_dir: &dir }) {
        Ok(_) => Vec::new(),
        Err(e) => e,
    }
}

fn keys(i: &[ConfigIssue]) -> Vec<&str> {
    i.iter().map(|i| i.key_path.as_str()).collect()
}

#[test]
fn unknown_keys_and_hmac_or_none_algorithms_do_not_parse() {
    for bad in [
        "issuers: []\nidle_timout_secs: 5\n",
        "issuers: [{ issuer: x, audiences: [a], jwks_path: j, algorithm: [ES256] }]\n",
        "issuers: [{ issuer: x, audiences: [a], jwks_path: j, algorithms: [HS256] }]\n",
        "issuers: [{ issuer: x, audiences: [a], jwks_path: j, algorithms: [none] }]\n",
        "issuers: []\nroutes: { a: { requre_mfa: false } }\n",
        "issuers: [{ issuer: x, audiences: [a], jwks_path: j, claims: { roles: { path: [a], pth: [b] } } }]\n",
        "issuers: [{ issuer: x, audiences: [a], jwks_path: j, claims: { role: r } }]\n",
        "issuers: [{ issuer: x, audiences: [a], jwks_path: j, preset: azure }]\n",
    ] {
        assert!(
            serde_yaml::from_str::<IdentityConfig>(bad).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn every_problem_is_reported_with_its_key_path() {
    let got = issues(
        r#"
issuers:
  - { issuer: "https://a.test", audiences: [], jwks_uri: "http://secret-host.test/jwks" }
  - { issuer: "https://b.test", audiences: [x], jwks_path: missing.json, tenant: t, claims: { tenant: tid } }
  - { issuer: "https://b.test", audiences: [x] }
jwks: { min_refresh_secs: 100, max_refresh_secs: 10 }
routes:
  nosuch: { require_mfa: false }
  a: { mfa_acr: ["bad\"quote"] }
"#,
        &["a"],
    );
    let k = keys(&got);
    for want in [
        "jwks.min_refresh_secs",
        "issuers[0].audiences",
        "issuers[0].jwks_uri",
        "issuers[1].tenant",
        "issuers[1].jwks_path",
        "issuers[2].issuer",
        "issuers[2].jwks_uri",
        "routes.nosuch",
        "routes.a.mfa_acr",
    ] {
        assert!(k.contains(&want), "missing {want} in {k:?}");
    }
    let all = format!("{got:?}");
    assert!(!all.contains("secret-host"), "config values are not echoed");
}

#[test]
fn relative_jwks_path_resolves_against_the_config_dir() {
    let idp = phigate_identity::dev::DevIssuer::es256("https://a.test").unwrap();
    let dir = temp_dir("rel");
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    std::fs::write(dir.join("keys/idp.json"), idp.jwks_json()).unwrap();
    let cfg: IdentityConfig = serde_yaml::from_str(
        "issuers: [{ issuer: \"https://a.test\", audiences: [x], jwks_path: keys/idp.json }]\n",
    )
    .unwrap();
    let routes = routes(&["a"]);
    assert!(cfg.build(&StageBuildCtx { routes: &routes, config_dir: &dir }).is_ok());
}

#[test]
fn jwks_file_without_usable_keys_is_a_config_issue() {
    let dir = temp_dir("nokeys");
    // Only a symmetric key: never usable.
    std::fs::write(dir.join("j.json"), r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}"#).unwrap();
    let cfg: IdentityConfig = serde_yaml::from_str(
        "issuers: [{ issuer: \"https://a.test\", audiences: [x], jwks_path: j.json }]\n",
    )
    .unwrap();
    let routes = routes(&["a"]);
    let err = cfg.build(&StageBuildCtx { routes: &routes, config_dir: &dir }).unwrap_err();
    assert_eq!(keys(&err), vec!["issuers[0].jwks_path"]);
}

#[test]
fn mfa_required_with_nothing_that_can_prove_it_is_a_config_issue() {
    let got = issues("issuers: []\ndefaults: { mfa_amr: [] }\n", &["a"]);
    assert!(keys(&got).contains(&"defaults.require_mfa"), "{got:?}");
    assert!(keys(&got).contains(&"issuers"));
}

#[test]
fn every_config_field_is_documented_in_the_schema() {
    let schema = serde_json::to_value(schemars::schema_for!(IdentityConfig)).unwrap();
    let mut missing = Vec::new();
    fn walk(v: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
            for (k, p) in props {
                if p.get("description").is_none() {
                    missing.push(format!("{path}.{k}"));
                }
            }
        }
        if let Some(defs) = v.get("$defs").and_then(|d| d.as_object()) {
            for (k, d) in defs {
                walk(d, k, missing);
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(a) = v.get(key).and_then(|a| a.as_array()) {
                for x in a {
                    walk(x, path, missing);
                }
            }
        }
    }
    walk(&schema, "identity", &mut missing);
    assert!(missing.is_empty(), "undocumented: {missing:?}");
}
