//! The `exfil:` section: the documented YAML shape, defaults, and every rejection at once.

use std::path::Path;

use phigate_exfil::{Action, ExfilConfig, PagingMeasure, RedisTlsConfig, SharedConfig};
use phigate_plugin::{ConfigIssue, StageBuildCtx};
use phigate_test_redis::pki::{self, Pki};

const FULL: &str = r#"
alerts_path: alerts/exfil.jsonl
queue_capacity: 1024
max_principals: 50000
sample_patient_ids: 3
distinct_patients:
  enabled: true
  threshold: 40
  window_secs: 1800
  action: block
  block_secs: 600
  count_response_patients: false
bulk_paging:
  threshold: 2000
  window_secs: 300
  measure: pages
id_enumeration:
  threshold: 10
  count_sequential: false
  action: block
rate_denials:
  enabled: false
restricted_records:
  threshold: 5
  action: block
policy_alerts:
  window_secs: 0
"#;

fn parse(yaml: &str) -> Result<ExfilConfig, serde_yaml::Error> {
    serde_yaml::from_str(yaml)
}

fn build(cfg: ExfilConfig, dir: &Path) -> Result<phigate_exfil::ExfilStage, Vec<ConfigIssue>> {
    cfg.build(&StageBuildCtx { routes: &[], config_dir: dir })
}

#[test]
fn full_section_parses_into_the_expected_config() {
    let c = parse(FULL).unwrap();
    let mut want = ExfilConfig::new("alerts/exfil.jsonl");
    want.queue_capacity = 1024;
    want.max_principals = 50_000;
    want.sample_patient_ids = 3;
    let d = &mut want.distinct_patients;
    (d.threshold, d.window_secs, d.action, d.block_secs, d.count_response_patients) =
        (40, 1800, Action::Block, 600, false);
    let p = &mut want.bulk_paging;
    (p.threshold, p.window_secs, p.measure) = (2000, 300, PagingMeasure::Pages);
    let e = &mut want.id_enumeration;
    (e.threshold, e.count_sequential, e.action) = (10, false, Action::Block);
    want.rate_denials.enabled = false;
    (want.restricted_records.threshold, want.restricted_records.action) = (5, Action::Block);
    want.policy_alerts.window_secs = 0;
    assert_eq!(c, want);
}

#[test]
fn only_alerts_path_is_required_and_defaults_match_new() {
    assert_eq!(parse("alerts_path: a.jsonl").unwrap(), ExfilConfig::new("a.jsonl"));
    let d = ExfilConfig::new("a");
    assert_eq!((d.distinct_patients.threshold, d.distinct_patients.window_secs), (50, 3600));
    assert_eq!(d.distinct_patients.action, Action::Alert);
    assert_eq!(d.bulk_paging.measure, PagingMeasure::Entries);
    assert!(parse("queue_capacity: 3").is_err(), "alerts_path is required");
}

#[test]
fn unknown_keys_are_rejected_at_every_level() {
    assert!(parse("alerts_path: a\nalert_path: b").is_err());
    assert!(parse("alerts_path: a\ndistinct_patients: {treshold: 3}").is_err());
    // An option of another detector is an error, not silently ignored.
    assert!(parse("alerts_path: a\ndistinct_patients: {measure: pages}").is_err());
    assert!(parse("alerts_path: a\nid_enumeration: {action: kill}").is_err());
}

#[test]
fn every_invalid_value_is_reported_at_once_without_the_value() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = ExfilConfig::new("a.jsonl");
    c.queue_capacity = 0;
    c.sample_patient_ids = 21;
    c.distinct_patients.threshold = 0;
    c.bulk_paging.window_secs = 0;
    c.id_enumeration.block_secs = 10 * 86_400;
    c.rate_denials.threshold = 987_654_321;
    c.restricted_records.window_secs = 0;
    c.policy_alerts.window_secs = 8 * 86_400;
    c.off_hours.enabled = true;
    c.off_hours.time_zone = "Atlantis/Secret_City".into();
    c.off_hours.window_secs = 0;
    let issues = build(c, tmp.path()).unwrap_err();
    let keys: Vec<&str> = issues.iter().map(|i| i.key_path.as_str()).collect();
    assert_eq!(
        keys,
        [
            "queue_capacity",
            "sample_patient_ids",
            "distinct_patients.threshold",
            "bulk_paging.window_secs",
            "id_enumeration.block_secs",
            "rate_denials.threshold",
            "restricted_records.window_secs",
            "policy_alerts.window_secs",
            "off_hours.time_zone",
            "off_hours.window_secs"
        ]
    );
    assert!(issues.iter().all(|i| !i.message.contains("987654321") && !i.message.contains("Atlantis")));
    assert!(!tmp.path().join("a.jsonl").exists(), "nothing is opened for an invalid section");
}

#[test]
fn a_tenants_working_hours_are_checked_and_named_by_tenant() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = "alerts_path: a.jsonl\noff_hours:\n  enabled: true\n  time_zone: Europe/Berlin\n  tenants:\n    tenant-us: { time_zone: America/New_York }\n    tenant-b: { days: [Funday] }\n";
    let issues = build(parse(yaml).unwrap(), tmp.path()).unwrap_err();
    let keys: Vec<&str> = issues.iter().map(|i| i.key_path.as_str()).collect();
    assert_eq!(keys, ["off_hours.tenants.tenant-b.days"]);
    assert!(!issues[0].message.contains("Funday"));
    assert!(
        parse("alerts_path: a\noff_hours: {tenants: {t: {exempt_roles: [x]}}}").is_err(),
        "only hours per tenant"
    );
    let ok = "alerts_path: a.jsonl\noff_hours:\n  enabled: true\n  tenants:\n    tenant-us: { time_zone: America/New_York, start: \"06:00\" }\n";
    assert!(build(parse(ok).unwrap(), tmp.path()).is_ok());
}

#[test]
fn a_disabled_detector_is_not_validated() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = ExfilConfig::new("a.jsonl");
    c.rate_denials.enabled = false;
    c.rate_denials.threshold = 0;
    assert!(build(c, tmp.path()).is_ok());
}

#[test]
fn relative_alerts_path_resolves_against_the_config_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let stage = build(ExfilConfig::new("alerts.jsonl"), tmp.path()).unwrap();
    assert_eq!(stage.alerts_path(), tmp.path().join("alerts.jsonl"));
    assert!(tmp.path().join("alerts.jsonl").is_file());
}

#[test]
fn a_missing_alerts_directory_is_created_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    build(ExfilConfig::new("alerts/soc/alerts.jsonl"), tmp.path()).unwrap();
    assert!(tmp.path().join("alerts/soc/alerts.jsonl").is_file());
    let mode = std::fs::metadata(tmp.path().join("alerts/soc")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn unopenable_alerts_path_is_a_config_issue() {
    let tmp = tempfile::tempdir().unwrap();
    // A directory where the file should be.
    std::fs::create_dir(tmp.path().join("alerts.jsonl")).unwrap();
    let issues = build(ExfilConfig::new("alerts.jsonl"), tmp.path()).unwrap_err();
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].key_path, "alerts_path");
    assert!(issues[0].message.starts_with("cannot open for appending"));
}

#[test]
fn every_config_field_is_documented_in_the_schema() {
    let schema = serde_json::to_value(schemars::schema_for!(ExfilConfig)).unwrap();
    let mut objects = vec![&schema];
    objects.extend(schema["$defs"].as_object().unwrap().values());
    let mut fields = 0;
    for o in objects {
        for (name, prop) in o["properties"].as_object().into_iter().flatten() {
            fields += 1;
            assert!(prop["description"].as_str().is_some_and(|d| !d.is_empty()), "{name} has no doc");
        }
    }
    assert!(fields >= 30, "{fields}");
}

#[test]
fn readme_example_section_parses_to_the_defaults() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme.split("```yaml\n").nth(1).unwrap().split("```").next().unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(block).unwrap();
    let section: ExfilConfig = serde_yaml::from_value(doc["exfil"].clone()).unwrap();
    assert_eq!(
        section,
        ExfilConfig::new("/var/log/phigate/exfil-alerts.jsonl"),
        "README says these are the defaults"
    );
}

#[allow(clippy::unwrap_used)] // test helper
fn with_shared(dir: &Path, url: &str, key: &[u8]) -> ExfilConfig {
    std::fs::write(dir.join("exfil.key"), key).unwrap();
    let mut c = ExfilConfig::new("a.jsonl");
    c.shared = Some(SharedConfig::new(url, "exfil.key"));
    c
}

#[test]
fn shared_section_parses_with_defaults_and_builds_without_connecting() {
    let c = parse("alerts_path: a\nshared: {redis_url: 'redis://127.0.0.1:1/0', hmac_key_path: k}").unwrap();
    assert_eq!(c.shared, Some(SharedConfig::new("redis://127.0.0.1:1/0", "k")));
    let s = SharedConfig::new("u", "k");
    assert_eq!(
        (s.channel.as_str(), s.key_prefix.as_str(), s.timeout_ms),
        ("phigate:exfil:blocks", "phigate:exfil:block:", 1000)
    );
    assert!(parse("alerts_path: a\nshared: {redis_url: u, hmac_key_path: k, ttl: 3}").is_err());
    assert!(parse("alerts_path: a\nshared: {redis_url: u}").is_err(), "the HMAC key is required");
    // Nothing listens on port 1: building never touches Redis.
    let tmp = tempfile::tempdir().unwrap();
    assert!(build(with_shared(tmp.path(), "redis://127.0.0.1:1/0", &[7; 32]), tmp.path()).is_ok());
}

#[test]
fn window_keys_cannot_share_the_block_keys_prefix_or_carry_braces() {
    let tmp = tempfile::tempdir().unwrap();
    let parsed = parse("alerts_path: a\nshared: {redis_url: u, hmac_key_path: k}").unwrap().shared.unwrap();
    assert!(parsed.windows, "counted over the replicas by default");
    assert_eq!(parsed.window_prefix, "phigate:exfil:window:");
    for bad in ["phigate:exfil:block:windows:", "phigate:", "w:{x}:", "w:*"] {
        let mut c = with_shared(tmp.path(), "redis://127.0.0.1:1/0", &[7; 32]);
        c.shared.as_mut().unwrap().window_prefix = bad.into();
        let issues = build(c, tmp.path()).unwrap_err();
        let keys: Vec<&str> = issues.iter().map(|i| i.key_path.as_str()).collect();
        assert_eq!(keys, ["shared.window_prefix"], "{bad}");
    }
}

#[test]
fn shared_section_problems_are_reported_without_the_url_or_its_password() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = with_shared(tmp.path(), "rediss://user:s3cret-pw@redis.example:6380/0#insecure", &[7; 31]);
    let s = c.shared.as_mut().unwrap();
    (s.timeout_ms, s.channel, s.key_prefix) = (0, String::new(), "blocks:*".into());
    let issues = build(c.clone(), tmp.path()).unwrap_err();
    let keys: Vec<&str> = issues.iter().map(|i| i.key_path.as_str()).collect();
    assert_eq!(
        keys,
        [
            "shared.timeout_ms",
            "shared.channel",
            "shared.key_prefix",
            "shared.redis_url",
            "shared.hmac_key_path"
        ]
    );
    assert!(issues[3].message.contains("#insecure"), "certificate checks cannot be turned off");
    assert!(issues[4].message.contains("32 bytes"));
    assert!(issues.iter().all(|i| !i.message.contains("s3cret")));
    assert!(!format!("{c:?}").contains("s3cret"), "Debug redacts the URL");

    let mut c = with_shared(tmp.path(), "redis://:s3cret@[::1", &[7; 32]);
    c.shared.as_mut().unwrap().hmac_key_path = "missing.key".into();
    let issues = build(c, tmp.path()).unwrap_err();
    assert_eq!(issues.len(), 2);
    assert_eq!(issues[0].message, "is not a valid redis:// or rediss:// URL");
    assert!(issues[1].message.starts_with("cannot be read"));
    assert!(!tmp.path().join("a.jsonl").exists(), "nothing is opened for an invalid section");
}

#[test]
fn readme_shared_example_parses_with_the_documented_defaults() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme.split("```yaml\n").nth(2).unwrap().split("```").next().unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(block).unwrap();
    let shared: SharedConfig = serde_yaml::from_value(doc["exfil"]["shared"].clone()).unwrap();
    let want = SharedConfig::new(shared.redis_url.clone(), "/etc/phigate/exfil-shared.key");
    assert_eq!(shared, want, "README says these are the defaults");
}

#[test]
fn rediss_url_with_a_tls_block_builds_with_paths_relative_to_the_config_dir() {
    let pki = Pki::new();
    let mut c = with_shared(pki.dir(), "rediss://:s3cret@127.0.0.1:1/0", &[7; 32]);
    let s = c.shared.as_mut().unwrap();
    s.tls = Some(RedisTlsConfig {
        ca_path: Some(pki::CA.into()),
        client_cert_path: Some(pki::CLIENT_CERT.into()),
        client_key_path: Some(pki::CLIENT_KEY.into()),
    });
    assert!(build(c, pki.dir()).is_ok(), "nothing listens on port 1: building never connects");
    let yaml = "alerts_path: a\nshared: {redis_url: 'rediss://h', hmac_key_path: k, tls: {ca_path: ca.pem}}";
    let tls = parse(yaml).unwrap().shared.unwrap().tls.unwrap();
    assert_eq!(tls.ca_path.as_deref(), Some(Path::new("ca.pem")));
    assert!(parse("alerts_path: a\nshared: {redis_url: u, hmac_key_path: k, tls: {verify: no}}").is_err());
}

#[test]
fn tls_block_with_a_plain_redis_url_is_refused_naming_shared_tls() {
    let pki = Pki::new();
    let mut c = with_shared(pki.dir(), "redis://:s3cret@127.0.0.1:1/0", &[7; 32]);
    c.shared.as_mut().unwrap().tls =
        Some(RedisTlsConfig { ca_path: Some(pki::CA.into()), ..Default::default() });
    let issues = build(c, pki.dir()).unwrap_err();
    assert_eq!(issues.iter().map(|i| i.key_path.as_str()).collect::<Vec<_>>(), ["shared.tls"]);
    assert!(issues[0].message.contains("rediss://") && !issues[0].message.contains("s3cret"));
}

#[test]
fn bad_tls_files_are_named_by_their_key_under_shared_tls() {
    let pki = Pki::new();
    std::fs::write(pki.path("garbage.pem"), "not a certificate\n").unwrap();
    for (ca, want) in
        [("secret-dir/missing.pem", "cannot be read"), ("garbage.pem", "holds no PEM certificate")]
    {
        let mut c = with_shared(pki.dir(), "rediss://127.0.0.1:1/0", &[7; 32]);
        c.shared.as_mut().unwrap().tls =
            Some(RedisTlsConfig { ca_path: Some(ca.into()), ..Default::default() });
        let issues = build(c, pki.dir()).unwrap_err();
        assert_eq!(issues.iter().map(|i| i.key_path.as_str()).collect::<Vec<_>>(), ["shared.tls.ca_path"]);
        assert!(
            issues[0].message.starts_with(want) && !issues[0].message.contains("secret-dir"),
            "{issues:?}"
        );
    }
    let mut c = with_shared(pki.dir(), "rediss://127.0.0.1:1/0", &[7; 32]);
    c.shared.as_mut().unwrap().tls = Some(RedisTlsConfig {
        client_cert_path: Some(pki::CLIENT_CERT.into()),
        client_key_path: Some(pki::SERVER_KEY.into()),
        ..Default::default()
    });
    let issues = build(c, pki.dir()).unwrap_err();
    assert_eq!(
        issues.iter().map(|i| i.key_path.as_str()).collect::<Vec<_>>(),
        ["shared.tls.client_key_path"]
    );
}

#[test]
fn readme_shared_tls_example_builds_with_its_files_in_place() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme.split("```yaml\n").nth(3).unwrap().split("```").next().unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(block).unwrap();
    let mut cfg: ExfilConfig = serde_yaml::from_value(doc["exfil"].clone()).unwrap();
    let pki = Pki::new();
    let shared = cfg.shared.as_mut().unwrap();
    assert!(shared.redis_url.starts_with("rediss://"));
    let tls = shared.tls.clone().unwrap();
    for (to, from) in [
        (tls.ca_path, pki::CA),
        (tls.client_cert_path, pki::CLIENT_CERT),
        (tls.client_key_path, pki::CLIENT_KEY),
    ] {
        let to = pki.dir().join(to.unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(pki.path(from), to).unwrap();
    }
    std::fs::write(pki.dir().join(&shared.hmac_key_path), [7; 32]).unwrap();
    cfg.alerts_path = pki.dir().join("alerts.jsonl");
    build(cfg, pki.dir()).expect("the documented TLS example is valid");
}
