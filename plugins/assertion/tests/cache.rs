//! Reuse of signed assertions: one per caller, session, token and audience, until half its
//! lifetime has passed (time moved with an injected clock, never slept).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod support;

use std::sync::Arc;

use phigate_assertion::Clock as _;
use phigate_plugin::Principal;
use support::*;

#[test]
fn assertion_is_reused_until_half_its_lifetime_then_re_signed() {
    let dir = tempfile::tempdir().unwrap();
    let (stage, clock) = stage(dir.path(), Alg::Ed25519, "ttl_secs: 60\n");
    let p = Arc::new(full_principal());
    let first = stage.assertion(&p, 0).unwrap().unwrap();
    clock.advance(29);
    assert_eq!(stage.assertion(&p, 0).unwrap().unwrap(), first, "reused within the first half-life");
    // Another Arc with equal claims (the identity stage re-verified the same token) also hits.
    assert_eq!(stage.assertion(&Arc::new(full_principal_at(&p)), 0).unwrap().unwrap(), first);
    clock.advance(1);
    let second = stage.assertion(&p, 0).unwrap().unwrap();
    assert_ne!(second, first, "re-signed once half the lifetime has passed");
    let (c1, c2) = (claims(first.to_str().unwrap()), claims(second.to_str().unwrap()));
    assert_eq!(c2["iat"].as_i64().unwrap() - c1["iat"].as_i64().unwrap(), 30);
    clock.advance(29);
    assert_eq!(stage.assertion(&p, 0).unwrap().unwrap(), second, "the new one is reused in turn");
}

/// A copy of `p` in a new allocation.
fn full_principal_at(p: &Principal) -> Principal {
    p.clone()
}

#[test]
fn half_life_follows_a_token_that_expires_before_the_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let (stage, clock) = stage(dir.path(), Alg::P256, "ttl_secs: 300\n");
    let p = Arc::new(Principal { expires_at: clock.unix_now() + 10, ..full_principal() });
    let first = stage.assertion(&p, 0).unwrap().unwrap();
    clock.advance(4);
    assert_eq!(stage.assertion(&p, 0).unwrap().unwrap(), first);
    clock.advance(1);
    let second = stage.assertion(&p, 0).unwrap().unwrap();
    assert_ne!(second, first);
    assert_eq!(
        claims(second.to_str().unwrap())["exp"].as_i64(),
        Some(p.expires_at),
        "still bounded by the token"
    );
}

#[test]
fn audiences_sessions_tokens_and_claims_never_share_an_assertion() {
    let dir = tempfile::tempdir().unwrap();
    let (stage, _clock) = stage(dir.path(), Alg::Ed25519, "");
    let base = full_principal();
    let variants = [
        base.clone(),
        Principal { session_id: Some("sess-2".into()), ..base.clone() },
        // A token expiring before the TTL: an assertion of the first must not outlive it.
        Principal { expires_at: now() + 30, ..base.clone() },
        // Same issuer, subject, session and expiry, other roles: compared whole, never shared.
        Principal { roles: vec!["admin".into()], ..base.clone() },
        Principal { tenant: Some("other".into()), ..base.clone() },
    ];
    let mut seen = Vec::new();
    for p in variants {
        let jws = stage.assertion(&Arc::new(p.clone()), 0).unwrap().unwrap();
        let c = claims(jws.to_str().unwrap());
        assert_eq!(
            (c["roles"].clone(), c["tenant"].clone(), c["sid"].clone()),
            (serde_json::json!(p.roles), serde_json::json!(p.tenant), serde_json::json!(p.session_id))
        );
        assert!(!seen.contains(&jws));
        seen.push(jws);
    }
    let p = Arc::new(base);
    let ops = stage.assertion(&p, 2).unwrap().unwrap();
    assert_eq!(claims(ops.to_str().unwrap())["aud"], "ops");
    assert!(!seen.contains(&ops), "another audience: another assertion");
    assert_eq!(
        stage.assertion(&p, 1).unwrap().unwrap(),
        seen[0],
        "same audience (ehr) on another route: shared"
    );
}

#[test]
fn sign_uncached_signs_anew_each_time_for_es256() {
    let dir = tempfile::tempdir().unwrap();
    let (stage, _clock) = stage(dir.path(), Alg::P256, "");
    let p = full_principal();
    let a = stage.sign_uncached(&p, "ehr").unwrap();
    let b = stage.sign_uncached(&p, "ehr").unwrap();
    assert_ne!(a, b, "ECDSA signatures are randomized: each call really signed");
    verify(b.to_str().unwrap(), &stage.jwks_json(), "ehr");
}
