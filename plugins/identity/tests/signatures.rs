//! Signature checks of every accepted algorithm through the real stage: a good token passes; a
//! flipped signature byte, another key's signature under the configured `kid`, and a header `alg`
//! the key is not for are each refused as `token_signature_invalid`.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm::{PS256, PS384, PS512, RS256, RS384, RS512};
use phigate_identity::dev::DevIssuer;
use phigate_identity::IdentityStage;
use phigate_plugin::{ErrorCode, RouteMeta};
use serde_json::{json, Value};
use support::*;

const RSA_OTHER: &str = include_str!("keys/rsa3072.pem");
const ALGS: &str = "[RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA]";

/// A configured signer and another key of the same type and algorithm (not in any JWKS).
struct Signer {
    idp: DevIssuer,
    other: DevIssuer,
}

struct Fx {
    signers: Vec<Signer>,
    stage: IdentityStage,
    routes: Vec<Arc<RouteMeta>>,
}

fn fx() -> Fx {
    let mut signers: Vec<Signer> = [RS256, RS384, RS512, PS256, PS384, PS512]
        .into_iter()
        .map(|alg| Signer {
            idp: rsa_issuer("https://rsa.test", alg),
            other: DevIssuer::rsa_from_pem("https://rsa.test", RSA_OTHER, alg).unwrap(),
        })
        .collect();
    signers.push(Signer {
        idp: DevIssuer::es256("https://es256.test").unwrap(),
        other: DevIssuer::es256("x").unwrap(),
    });
    signers.push(Signer {
        idp: DevIssuer::es384("https://es384.test").unwrap(),
        other: DevIssuer::es384("x").unwrap(),
    });
    signers.push(Signer {
        idp: DevIssuer::eddsa("https://ed.test").unwrap(),
        other: DevIssuer::eddsa("x").unwrap(),
    });
    let dir = temp_dir("signatures");
    // Every issuer accepts every algorithm: only the key decides which one a token may use.
    let issuers: String = [("rsa", 0), ("es256", 6), ("es384", 7), ("ed", 8)]
        .iter()
        .map(|(name, i)| {
            let idp = &signers[*i].idp;
            let j = file_issuer(&dir, name, &[idp]);
            format!(
                "  - {{ issuer: \"{}\", audiences: [\"{AUD}\"], jwks_path: {j}, algorithms: {ALGS} }}\n",
                idp.issuer()
            )
        })
        .collect();
    let yaml = format!("issuers:\n{issuers}defaults: {{ require_mfa: false }}\n");
    let routes = routes(&["a"]);
    let stage = build(&yaml, &routes, &dir);
    Fx { signers, stage, routes }
}

impl Fx {
    async fn check(&self, token: &str, accepted: bool, what: &str) {
        let mut ctx = bearer(&self.routes[0], token);
        let r = run(&self.stage, &mut ctx).await;
        if accepted {
            assert!(r.is_ok(), "{what}: {:?}", r.err());
        } else {
            let code = ErrorCode::TokenSignatureInvalid;
            assert!(r.is_err(), "{what}: accepted");
            assert_denied(r, code, Some(&invalid_token(code)), token);
        }
    }
}

fn payload(idp: &DevIssuer) -> Value {
    Value::Object(idp.claims("alice", AUD, now()).0)
}

fn header(alg: &str, kid: &str) -> Value {
    json!({"alg": alg, "typ": "at+jwt", "kid": kid})
}

fn flip_signature_byte(token: &str, at: usize) -> String {
    let (input, sig) = token.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    let at = at.min(sig.len() - 1);
    sig[at] ^= 0x80;
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[tokio::test]
async fn every_algorithm_verifies_a_good_token_and_refuses_a_flipped_signature_byte() {
    let f = fx();
    for s in &f.signers {
        let token = s.idp.sign(&s.idp.claims("alice", AUD, now()));
        f.check(&token, true, s.idp.alg()).await;
        for at in [0, 31, usize::MAX] {
            let bad = flip_signature_byte(&s.idp.sign(&s.idp.claims("bob", AUD, now())), at);
            f.check(&bad, false, &format!("{} byte {at} flipped", s.idp.alg())).await;
        }
    }
}

#[tokio::test]
async fn a_token_signed_by_another_key_under_the_configured_kid_is_refused() {
    let f = fx();
    for s in &f.signers {
        let token = s.other.sign_raw(&header(s.idp.alg(), s.idp.kid()), &payload(&s.idp));
        f.check(&token, false, &format!("{} by another key", s.idp.alg())).await;
    }
}

#[tokio::test]
async fn a_header_alg_the_key_is_not_for_is_refused() {
    let f = fx();
    let names = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];
    for s in &f.signers {
        // Signed by the right key with its own algorithm, but labelled with every other one:
        // another key type (no key for it), or another RSA padding or hash (no valid signature).
        for alg in names.iter().filter(|a| **a != s.idp.alg()) {
            let token = s.idp.sign_raw(&header(alg, s.idp.kid()), &payload(&s.idp));
            f.check(&token, false, &format!("{} signed, labelled {alg}", s.idp.alg())).await;
        }
    }
}

/// RFC 8037 §2: an Ed25519 `x` is 32 bytes. One of 33 bytes that starts with the real key (which
/// jsonwebtoken's RustCrypto verifier would truncate and accept) or of 31 bytes (on which it would
/// panic) verifies nothing.
#[tokio::test]
async fn an_ed25519_jwk_whose_x_is_not_32_bytes_verifies_nothing() {
    let idp = DevIssuer::eddsa("https://ed.test").unwrap();
    let x = URL_SAFE_NO_PAD.decode(idp.jwk()["x"].as_str().unwrap()).unwrap();
    let dir = temp_dir("signatures-ed");
    for (name, bad_x) in [("long", [&x[..], &[0]].concat()), ("short", x[..31].to_vec())] {
        let mut jwk = idp.jwk().clone();
        jwk["x"] = Value::String(URL_SAFE_NO_PAD.encode(bad_x));
        std::fs::write(dir.join(format!("{name}.json")), json!({"keys": [jwk]}).to_string()).unwrap();
        let yaml = format!(
            "issuers: [{{ issuer: \"https://ed.test\", audiences: [\"{AUD}\"], jwks_path: {name}.json, algorithms: [EdDSA] }}]\n\
             defaults: {{ require_mfa: false }}\n"
        );
        let routes = routes(&["a"]);
        let stage = build(&yaml, &routes, &dir);
        let token = idp.sign(&idp.claims("alice", AUD, now()));
        let code = ErrorCode::TokenSignatureInvalid;
        assert_denied(
            run(&stage, &mut bearer(&routes[0], &token)).await,
            code,
            Some(&invalid_token(code)),
            &token,
        );
    }
}
