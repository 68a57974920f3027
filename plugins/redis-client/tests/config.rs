//! `client` as config validation: every problem named by the caller's keys, never echoing the
//! URL (nor its password) or a file's path or contents.

use std::path::Path;

use phigate_plugin::ConfigIssue;
use phigate_redis::{client, ConfigKeys, RedisTlsConfig};
use phigate_test_redis::pki::{self, Pki};

const RATELIMIT: ConfigKeys<'static> = ConfigKeys { url: "redis.url", tls: "redis.tls" };
const EXFIL: ConfigKeys<'static> = ConfigKeys { url: "shared.redis_url", tls: "shared.tls" };

fn check(url: &str, tls: Option<&RedisTlsConfig>, dir: &Path, keys: ConfigKeys<'_>) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    let built = client(url, tls, dir, keys, &mut issues);
    assert_eq!(built.is_none(), !issues.is_empty(), "None exactly when something was reported");
    issues
}

fn paths(issues: &[ConfigIssue]) -> Vec<&str> {
    issues.iter().map(|i| i.key_path.as_str()).collect()
}

fn ca(path: &str) -> RedisTlsConfig {
    RedisTlsConfig { ca_path: Some(path.into()), ..RedisTlsConfig::default() }
}

#[test]
fn plain_and_tls_urls_build_without_connecting() {
    let pki = Pki::new();
    assert!(check("redis://:pw@127.0.0.1:1/0", None, pki.dir(), RATELIMIT).is_empty());
    assert!(check("rediss://:pw@127.0.0.1:1/0", Some(&ca(pki::CA)), pki.dir(), EXFIL).is_empty());
    let mutual = RedisTlsConfig {
        ca_path: Some(pki::CA.into()),
        client_cert_path: Some(pki::CLIENT_CERT.into()),
        client_key_path: Some(pki::CLIENT_KEY.into()),
    };
    assert!(check("rediss://h:6380", Some(&mutual), pki.dir(), EXFIL).is_empty());
}

#[test]
fn a_bad_url_and_insecure_are_named_by_the_url_key_without_the_password() {
    let dir = Path::new("/");
    for (keys, want) in [(RATELIMIT, "redis.url"), (EXFIL, "shared.redis_url")] {
        let issues = check("redis://:hunter2@[::1", None, dir, keys);
        assert_eq!(paths(&issues), [want]);
        assert_eq!(issues[0].message, "is not a valid redis:// or rediss:// URL");
        let issues = check("rediss://:hunter2@h/#insecure", None, dir, keys);
        assert_eq!(paths(&issues), [want]);
        assert!(issues.iter().all(|i| !i.message.contains("hunter2")), "{issues:?}");
    }
}

#[test]
fn a_tls_block_with_a_plain_url_is_named_by_the_tls_key() {
    let pki = Pki::new();
    for (keys, want) in [(RATELIMIT, "redis.tls"), (EXFIL, "shared.tls")] {
        let issues = check("redis://:hunter2@h/0", Some(&ca(pki::CA)), pki.dir(), keys);
        assert_eq!(paths(&issues), [want]);
        assert!(issues[0].message.contains("rediss://") && !issues[0].message.contains("hunter2"));
    }
}

#[test]
fn file_problems_are_named_by_the_field_under_the_tls_key() {
    let pki = Pki::new();
    std::fs::write(pki.path("garbage.pem"), "not a certificate\n").unwrap();
    let issues = check("rediss://h", Some(&ca("secret-dir/nope.pem")), pki.dir(), EXFIL);
    assert_eq!(paths(&issues), ["shared.tls.ca_path"]);
    assert!(issues[0].message.starts_with("cannot be read") && !issues[0].message.contains("secret-dir"));
    let swapped = RedisTlsConfig {
        ca_path: Some("garbage.pem".into()),
        client_cert_path: Some(pki::CLIENT_KEY.into()),
        client_key_path: Some(pki::CLIENT_CERT.into()),
    };
    let issues = check("rediss://h", Some(&swapped), pki.dir(), EXFIL);
    assert_eq!(
        paths(&issues),
        ["shared.tls.ca_path", "shared.tls.client_cert_path", "shared.tls.client_key_path"]
    );
    let mismatched = RedisTlsConfig {
        client_cert_path: Some(pki::CLIENT_CERT.into()),
        client_key_path: Some(pki::SERVER_KEY.into()),
        ..ca(pki::CA)
    };
    let issues = check("rediss://h", Some(&mismatched), pki.dir(), RATELIMIT);
    assert_eq!(paths(&issues), ["redis.tls.client_key_path"]);
    let key = std::fs::read_to_string(pki.path(pki::SERVER_KEY)).unwrap();
    assert!(issues.iter().all(|i| !i.message.contains(key.trim())), "never the key");
}

#[test]
fn the_tls_block_rejects_unknown_fields_and_documents_each_field() {
    let err = serde_json_from("{\"ca_path\": \"a\", \"verify\": false}");
    assert!(err.contains("verify"), "{err}");
    let schema = serde_json::to_value(schemars::schema_for!(RedisTlsConfig)).unwrap();
    let props = schema["properties"].as_object().unwrap();
    assert_eq!(props.len(), 3);
    for (name, prop) in props {
        assert!(prop["description"].as_str().is_some_and(|d| !d.trim().is_empty()), "{name}");
    }
}

fn serde_json_from(text: &str) -> String {
    serde_json::from_str::<RedisTlsConfig>(text).map(|_| String::new()).unwrap_or_else(|e| e.to_string())
}
