//! Key files: config errors that name the key, the default kid, previous keys in the JWKS, and
//! reloads (rotation keeps the replaced key published; a bad new key keeps the old one).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod support;

use std::sync::Arc;

use phigate_assertion::{ManualClock, ReloadOutcome};
use support::*;

fn build_err(yaml: &str, dir: &std::path::Path) -> Vec<(String, String)> {
    let err = try_build(yaml, dir, Arc::new(ManualClock::at(now()))).unwrap_err();
    err.into_iter().map(|i| (i.key_path, i.message)).collect()
}

#[test]
fn unreadable_or_wrong_key_file_is_a_config_error_naming_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!("key_path: assertion.key\nissuer: {ISSUER}\n");
    let missing = build_err(&yaml, dir.path());
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].0, "key_path");
    assert!(missing[0].1.starts_with("cannot read the key file"), "{missing:?}");
    // A public key, a certificate-like blob and a P-384 key are all refused, without echoing them.
    let (_, public) = key_pems(Alg::Ed25519);
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap().serialize_pem();
    for content in
        [public.as_str(), "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", p384.as_str()]
    {
        std::fs::write(dir.path().join("assertion.key"), content).unwrap();
        let errs = build_err(&yaml, dir.path());
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, "key_path");
        assert!(!errs[0].1.contains("AAAA") && !errs[0].1.contains("BEGIN PUBLIC"), "{errs:?}");
    }
}

#[test]
fn every_problem_is_reported_at_once_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    write_key(dir.path(), "assertion.key", Alg::Ed25519);
    std::fs::write(dir.path().join("old.pub"), "not a key").unwrap();
    let yaml = "key_path: assertion.key\nissuer: ' '\nheader: authorization\nttl_secs: 301\nkid: 'a b'\n\
                previous_public_keys: [old.pub]\nroutes:\n  nope: {}\n  api: { audience: '' }\n";
    let mut keys: Vec<_> = build_err(yaml, dir.path()).into_iter().map(|(k, _)| k).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "header",
            "issuer",
            "kid",
            "previous_public_keys[0]",
            "routes.api.audience",
            "routes.nope",
            "ttl_secs"
        ]
    );
}

#[test]
fn unknown_keys_are_rejected() {
    let err = serde_yaml::from_str::<phigate_assertion::AssertionConfig>("key_path: k\nissuer: i\nttl: 60\n")
        .unwrap_err();
    assert!(err.to_string().contains("unknown field `ttl`"), "{err}");
}

#[test]
fn kid_defaults_to_the_rfc7638_thumbprint_and_can_be_set() {
    let dir = tempfile::tempdir().unwrap();
    for alg in [Alg::Ed25519, Alg::P256] {
        let (stage, _clock) = stage(dir.path(), alg, "");
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwks(&stage)["keys"][0].clone()).unwrap();
        let thumbprint = jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256).unwrap();
        assert_eq!(stage.kid(), thumbprint);
        assert_eq!(jwk.common.key_id.as_deref(), Some(thumbprint.as_str()));
    }
    let (stage, _clock) = stage(dir.path(), Alg::Ed25519, "kid: assertion-2026-11\n");
    let jws = stage.sign_uncached(&full_principal(), "ehr").unwrap();
    let header = jsonwebtoken::decode_header(jws.to_str().unwrap()).unwrap();
    assert_eq!(header.kid.as_deref(), Some("assertion-2026-11"));
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(jwks(&stage)["keys"][0]["kid"], "assertion-2026-11");
}

#[test]
fn previous_public_keys_are_published_after_the_current_one() {
    let dir = tempfile::tempdir().unwrap();
    let (_, old_ed) = key_pems(Alg::Ed25519);
    let (_, old_ec) = key_pems(Alg::P256);
    std::fs::write(dir.path().join("old1.pub"), &old_ed).unwrap();
    std::fs::write(dir.path().join("old2.pub"), &old_ec).unwrap();
    let (stage, _clock) =
        stage(dir.path(), Alg::Ed25519, "previous_public_keys: [old1.pub, old2.pub, old1.pub]\n");
    let set = jwks(&stage);
    let keys = set["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3, "current + two previous, duplicates dropped: {set}");
    assert_eq!(keys[0]["kid"], stage.kid().as_str());
    assert_eq!((keys[1]["kty"].as_str(), keys[2]["kty"].as_str()), (Some("OKP"), Some("EC")));
    assert!(keys.iter().all(|k| k.get("d").is_none()), "public keys only");
}

#[test]
fn rotation_on_reload_signs_with_the_new_key_and_keeps_the_old_in_the_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let (stage, _clock) = stage(dir.path(), Alg::Ed25519, "");
    let p = Arc::new(full_principal());
    let before = stage.assertion(&p, 0).unwrap().unwrap();
    let old_kid = stage.kid();
    write_key(dir.path(), "assertion.key", Alg::P256);
    assert_eq!(stage.reload_now().unwrap(), ReloadOutcome::Rotated);
    assert_ne!(stage.kid(), old_kid);
    let after = stage.assertion(&p, 0).unwrap().unwrap();
    assert_ne!(after, before, "the cache went with the old key");
    let jwks = stage.jwks_json();
    assert_eq!(jsonwebtoken::decode_header(after.to_str().unwrap()).unwrap().kid, Some(stage.kid()));
    verify(after.to_str().unwrap(), &jwks, "ehr");
    verify(before.to_str().unwrap(), &jwks, "ehr");
    // A second rotation retires the second key; the first is no longer published.
    write_key(dir.path(), "assertion.key", Alg::Ed25519);
    assert_eq!(stage.reload_now().unwrap(), ReloadOutcome::Rotated);
    let set = support::jwks(&stage);
    assert_eq!(set["keys"].as_array().unwrap().len(), 2);
    assert!(set["keys"].as_array().unwrap().iter().all(|k| k["kid"] != old_kid.as_str()));
}

#[test]
fn bad_key_on_reload_keeps_the_old_key() {
    let dir = tempfile::tempdir().unwrap();
    let (stage, _clock) = stage(dir.path(), Alg::Ed25519, "");
    let p = Arc::new(full_principal());
    let before = stage.assertion(&p, 0).unwrap().unwrap();
    let (kid, jwks) = (stage.kid(), stage.jwks_json());
    std::fs::write(dir.path().join("assertion.key"), "-----BEGIN PRIVATE KEY-----\ngarbage\n").unwrap();
    let rejected = || reloads("rejected");
    let counted = rejected();
    let err = stage.reload_now().unwrap_err();
    assert!(rejected() > counted, "counted in phigate_assertion_key_reloads_total");
    assert!(matches!(err, phigate_assertion::KeyError::Format { .. }), "{err}");
    assert_eq!((stage.kid(), stage.jwks_json()), (kid, jwks));
    assert_eq!(stage.assertion(&p, 0).unwrap().unwrap(), before, "still served, from the same cache");
    std::fs::remove_file(dir.path().join("assertion.key")).unwrap();
    assert!(matches!(stage.reload_now(), Err(phigate_assertion::KeyError::Io { .. })));
    verify(stage.sign_uncached(&p, "ehr").unwrap().to_str().unwrap(), &stage.jwks_json(), "ehr");
}

#[test]
fn reload_of_unchanged_files_keeps_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (stage, _clock) = stage(dir.path(), Alg::P256, "");
    let p = Arc::new(full_principal());
    let before = stage.assertion(&p, 0).unwrap().unwrap();
    assert_eq!(stage.reload_now().unwrap(), ReloadOutcome::Unchanged);
    assert_eq!(
        stage.assertion(&p, 0).unwrap().unwrap(),
        before,
        "ES256 is randomized: a re-sign would differ"
    );
}

/// `phigate_assertion_key_reloads_total{outcome}` in the default registry.
fn reloads(outcome: &str) -> u64 {
    prometheus::default_registry()
        .gather()
        .iter()
        .filter(|f| f.name() == "phigate_assertion_key_reloads_total")
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| m.get_label().iter().any(|l| l.value() == outcome))
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}
