//! The `audit:` section: validation reports every problem without echoing values, paths resolve
//! against the config directory, and files get the configured mode.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a test failure

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use phigate_audit::AuditConfig;
use phigate_plugin::{Stage, StageBuildCtx};

fn parse(yaml: &str) -> Result<AuditConfig, serde_yaml::Error> {
    serde_yaml::from_str(yaml)
}

#[test]
fn unknown_key_is_rejected() {
    let err = parse("dir: a\nsigning_key_path: k\nmax_wait_secs: 1\n").unwrap_err();
    assert!(err.to_string().contains("max_wait_secs"), "{err}");
}

#[test]
fn every_problem_is_reported_at_once_without_values() {
    let env = Env::new();
    let cfg = parse("dir: audit\nsigning_key_path: missing.pem\nhmac_key_path: short.key\nfile_mode: \"0666\"\nsegment_max_bytes: 10\n").unwrap();
    std::fs::write(env.tmp.path().join("short.key"), b"tiny-secret").unwrap();
    let ctx = StageBuildCtx { routes: &[], config_dir: env.tmp.path() };
    let issues = cfg.build(&ctx).unwrap_err();
    let keys: Vec<_> = issues.iter().map(|i| i.key_path.as_str()).collect();
    assert_eq!(keys, ["file_mode", "segment_max_bytes", "signing_key_path", "hmac_key_path"]);
    for i in &issues {
        assert!(!i.message.contains("tiny-secret") && !i.message.contains("0666"), "{i}");
    }
}

#[test]
fn raw_seed_key_is_accepted_and_key_files_are_never_overwritten() {
    let env = Env::new();
    std::fs::write(env.tmp.path().join("seed.key"), [7u8; 32]).unwrap();
    let cfg = parse("dir: audit\nsigning_key_path: seed.key\n").unwrap();
    let ctx = StageBuildCtx { routes: &[], config_dir: env.tmp.path() };
    let stage = cfg.build(&ctx).unwrap();
    assert_eq!(stage.dir(), env.tmp.path().join("audit"), "relative to the config dir");
    assert!(phigate_audit::generate_signing_key(&env.key).is_err());
    let mode = std::fs::metadata(&env.key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test]
async fn files_get_the_configured_mode() {
    for (mode, want) in [("0600", 0o600), ("0640", 0o640)] {
        let env = Env::new();
        let mut cfg = env.config();
        cfg.file_mode = mode.into();
        let stage = build(cfg, env.tmp.path());
        stage.on_request(&mut read_ctx("m")).await.unwrap();
        for e in std::fs::read_dir(&env.audit_dir).unwrap() {
            let p = e.unwrap().path();
            let got = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(got, want, "{}", p.display());
        }
    }
}

#[test]
fn every_config_field_is_documented_in_the_schema() {
    let schema = serde_json::to_value(schemars::schema_for!(AuditConfig)).unwrap();
    let props = schema["properties"].as_object().unwrap();
    assert!(props.len() >= 13);
    for (name, p) in props {
        assert!(p.get("description").and_then(|d| d.as_str()).is_some_and(|d| !d.is_empty()), "{name}");
    }
}
