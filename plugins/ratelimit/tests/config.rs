//! The `rate_limits:` section: the README example builds, every problem is reported at once with
//! its key path and without echoing values (nor TLS file paths), and every field is documented in
//! the schema.

mod common;

use std::path::Path;

use common::pki::{self, Pki};
use phigate_plugin::{ConfigIssue, StageBuildCtx};
use phigate_ratelimit::{RateLimitConfig, RateLimitStage};

fn parse(yaml: &str) -> RateLimitConfig {
    serde_yaml::from_str(yaml).expect("parses")
}

fn build(cfg: RateLimitConfig) -> Result<RateLimitStage, Vec<ConfigIssue>> {
    let routes = common::routes();
    cfg.build(&StageBuildCtx { routes: &routes, config_dir: Path::new("/") })
}

fn paths(issues: &[ConfigIssue]) -> Vec<&str> {
    issues.iter().map(|i| i.key_path.as_str()).collect()
}

/// The README's `yaml` blocks, each parsed as a `rate_limits` section.
fn readme_examples() -> Vec<RateLimitConfig> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
    let blocks = readme.split("```yaml\n").skip(1).map(|b| &b[..b.find("```").expect("closed")]);
    let section = |block: &str| {
        let doc: serde_yaml::Value = serde_yaml::from_str(block).expect("yaml");
        let section = doc.get("rate_limits").expect("rate_limits section").clone();
        serde_yaml::from_value(section).expect("matches the config types")
    };
    blocks.map(section).collect()
}

#[test]
fn readme_example_builds() {
    let cfg = readme_examples().swap_remove(0);
    assert_eq!(cfg.limits.len(), 4);
    build(cfg).expect("the documented example is valid");
}

#[test]
fn readme_tls_example_builds_with_its_files_in_place() {
    let cfg = readme_examples().swap_remove(1);
    let tls = cfg.redis.as_ref().and_then(|r| r.tls.clone()).expect("a tls block");
    let pki = Pki::new();
    let place = |to: Option<std::path::PathBuf>, from: &str| {
        let to = pki.dir().join(to.expect("path in the example"));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(pki.path(from), to).unwrap();
    };
    place(tls.ca_path, pki::CA);
    place(tls.client_cert_path, pki::CLIENT_CERT);
    place(tls.client_key_path, pki::CLIENT_KEY);
    build_in(cfg, pki.dir()).expect("the documented TLS example is valid");
}

#[test]
fn every_problem_is_reported_at_once_with_its_key_path() {
    let cfg = parse(
        r#"
ipv6_prefix_len: 8
limits:
  - { name: Bad-Name, key: principal, requests: 1, period_secs: 1 }
  - { name: dup, key: user, requests: 0, period_secs: 1 }
  - { name: dup, key: principal+tenant, requests: 1, period_secs: 0 }
  - { name: routes, key: route, requests: 1, period_secs: 1, routes: [fhir, nope], methods: [GET, get] }
  - { name: burst, key: client_ip, requests: 1, period_secs: 1, burst: 0 }
"#,
    );
    let issues = build(cfg).expect_err("invalid");
    assert_eq!(
        paths(&issues),
        [
            "ipv6_prefix_len",
            "limits[0].name",
            "limits[1].key",
            "limits[1].requests",
            "limits[2].name",
            "limits[2].key",
            "limits[2].period_secs",
            "limits[3].routes[1]",
            "limits[3].methods[1]",
            "limits[4].burst",
        ]
    );
    assert!(issues.iter().all(|i| !i.message.contains("nope") && !i.message.contains("Bad-Name")));
}

#[test]
fn empty_limit_list_is_refused() {
    let issues = build(parse("limits: []")).expect_err("useless section");
    assert_eq!(paths(&issues), ["limits"]);
}

#[test]
fn unknown_fields_are_refused() {
    let err = serde_yaml::from_str::<RateLimitConfig>("limits: []\nbackend_url: x").unwrap_err();
    assert!(err.to_string().contains("backend_url"), "{err}");
    let err = serde_yaml::from_str::<RateLimitConfig>(
        "limits: [{ name: a, key: route, requests: 1, period_secs: 1, window: 3 }]",
    )
    .unwrap_err();
    assert!(err.to_string().contains("window"), "{err}");
}

#[test]
fn redis_section_must_match_the_backend() {
    let l = "limits: [{ name: a, key: route, requests: 1, period_secs: 1 }]";
    let issues = build(parse(&format!("backend: redis\n{l}"))).expect_err("no redis section");
    assert_eq!(paths(&issues), ["redis"]);
    let issues = build(parse(&format!("redis: {{ url: 'redis://h' }}\n{l}"))).expect_err("memory + redis");
    assert_eq!(paths(&issues), ["redis"]);
    let ok = build(parse(&format!("backend: redis\nredis: {{ url: 'redis://127.0.0.1:1/0' }}\n{l}")));
    assert!(ok.is_ok(), "building does no I/O: an unreachable Redis is not a config error");
}

#[test]
fn bad_redis_settings_are_reported_without_echoing_the_url() {
    let l = "limits: [{ name: a, key: route, requests: 1, period_secs: 1 }]";
    let cfg = parse(&format!(
        "backend: redis\nredis: {{ url: 'redis://:hunter2@[::1', timeout_ms: 0, connect_timeout_ms: 0, key_prefix: 'a b' }}\n{l}"
    ));
    let issues = build(cfg).expect_err("invalid");
    assert_eq!(
        paths(&issues),
        ["redis.timeout_ms", "redis.connect_timeout_ms", "redis.key_prefix", "redis.url"]
    );
    assert!(issues.iter().all(|i| !i.message.contains("hunter2")), "{issues:?}");
    let debug =
        format!("{:?}", parse(&format!("backend: redis\nredis: {{ url: 'redis://:hunter2@h' }}\n{l}")));
    assert!(debug.contains("<redacted>") && !debug.contains("hunter2"), "{debug}");
    let insecure = parse(&format!("backend: redis\nredis: {{ url: 'rediss://:hunter2@h/#insecure' }}\n{l}"));
    let issues = build(insecure).expect_err("certificate checks off");
    assert_eq!(paths(&issues), ["redis.url"]);
    assert!(issues[0].message.contains("#insecure") && !issues[0].message.contains("hunter2"));
}

#[test]
fn rediss_url_without_tls_block_uses_the_system_roots_and_builds() {
    let l = "limits: [{ name: a, key: route, requests: 1, period_secs: 1 }]";
    let cfg = parse(&format!("backend: redis\nredis: {{ url: 'rediss://:hunter2@h:6380/0' }}\n{l}"));
    assert!(build(cfg).is_ok(), "no I/O at build: the roots are loaded when connecting");
}

fn tls_section(url: &str, tls: &str) -> RateLimitConfig {
    parse(&format!(
        "backend: redis\nredis: {{ url: '{url}', tls: {tls} }}\nlimits: [{{ name: a, key: route, requests: 1, period_secs: 1 }}]"
    ))
}

fn build_in(cfg: RateLimitConfig, dir: &Path) -> Result<RateLimitStage, Vec<ConfigIssue>> {
    let routes = common::routes();
    cfg.build(&StageBuildCtx { routes: &routes, config_dir: dir })
}

#[test]
fn tls_files_resolve_against_the_config_dir_and_build() {
    let pki = Pki::new();
    let tls = format!(
        "{{ ca_path: {}, client_cert_path: {}, client_key_path: {} }}",
        pki::CA,
        pki::CLIENT_CERT,
        pki::CLIENT_KEY
    );
    build_in(tls_section("rediss://:pw@h/0", &tls), pki.dir()).expect("relative to the config dir");
    let issues = build(tls_section("rediss://:pw@h/0", &tls)).expect_err("not relative to /");
    assert_eq!(
        paths(&issues),
        ["redis.tls.ca_path", "redis.tls.client_cert_path", "redis.tls.client_key_path"]
    );
}

#[test]
fn tls_block_with_a_plain_redis_url_is_refused() {
    let pki = Pki::new();
    let issues =
        build_in(tls_section("redis://:hunter2@h/0", "{ ca_path: ca.pem }"), pki.dir()).expect_err("not TLS");
    assert_eq!(paths(&issues), ["redis.tls"]);
    assert!(issues[0].message.contains("rediss://") && !issues[0].message.contains("hunter2"), "{issues:?}");
}

#[test]
fn client_certificate_without_key_and_key_without_certificate_are_refused() {
    let pki = Pki::new();
    let cert_only = format!("{{ client_cert_path: {} }}", pki::CLIENT_CERT);
    let issues = build_in(tls_section("rediss://h", &cert_only), pki.dir()).expect_err("no key");
    assert_eq!(paths(&issues), ["redis.tls.client_key_path"]);
    let key_only = format!("{{ client_key_path: {} }}", pki::CLIENT_KEY);
    let issues = build_in(tls_section("rediss://h", &key_only), pki.dir()).expect_err("no certificate");
    assert_eq!(paths(&issues), ["redis.tls.client_cert_path"]);
}

#[test]
fn missing_tls_file_is_named_by_its_key_without_its_path() {
    let pki = Pki::new();
    let issues = build_in(tls_section("rediss://h", "{ ca_path: secret-dir/nope.pem }"), pki.dir())
        .expect_err("missing");
    assert_eq!(paths(&issues), ["redis.tls.ca_path"]);
    assert!(issues[0].message.contains("cannot be read"), "{issues:?}");
    assert!(!issues[0].message.contains("secret-dir"), "{issues:?}");
}

#[test]
fn non_pem_and_mismatched_tls_files_are_refused() {
    let pki = Pki::new();
    std::fs::write(pki.path("garbage.pem"), "not a certificate\n").unwrap();
    // A key where a certificate belongs, a certificate where a key belongs.
    let swapped = format!(
        "{{ ca_path: garbage.pem, client_cert_path: {}, client_key_path: {} }}",
        pki::CLIENT_KEY,
        pki::CLIENT_CERT
    );
    let issues = build_in(tls_section("rediss://h", &swapped), pki.dir()).expect_err("not PEM");
    assert_eq!(
        paths(&issues),
        ["redis.tls.ca_path", "redis.tls.client_cert_path", "redis.tls.client_key_path"]
    );
    assert!(issues.iter().all(|i| i.message.starts_with("holds no PEM")), "{issues:?}");
    // Both PEM, but the key belongs to another certificate.
    let mismatched =
        format!("{{ client_cert_path: {}, client_key_path: {} }}", pki::CLIENT_CERT, pki::SERVER_KEY);
    let issues = build_in(tls_section("rediss://h", &mismatched), pki.dir()).expect_err("mismatch");
    assert_eq!(paths(&issues), ["redis.tls.client_key_path"]);
    assert!(issues[0].message.contains("client_cert_path"), "{issues:?}");
}

#[test]
fn every_config_field_is_documented_in_the_schema() {
    let schema = serde_json::to_value(schemars::schema_for!(RateLimitConfig)).unwrap();
    let mut objects = vec![&schema];
    if let Some(defs) = schema.get("$defs").and_then(|d| d.as_object()) {
        objects.extend(defs.values());
    }
    let mut checked = 0;
    for obj in objects {
        for (name, prop) in obj.get("properties").and_then(|p| p.as_object()).into_iter().flatten() {
            let doc = prop.get("description").and_then(|d| d.as_str()).unwrap_or("");
            assert!(!doc.trim().is_empty(), "field `{name}` has no doc");
            checked += 1;
        }
    }
    assert_eq!(checked, 23, "the fields of all four structs were seen");
}
