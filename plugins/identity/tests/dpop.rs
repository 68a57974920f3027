//! DPoP (RFC 9449) through the real stage: tokens bound to a client key (`cnf.jkt`) with real
//! signed proofs (ES256 and EdDSA client keys), every check of §4.3 refused on its own, replays,
//! and routes that require DPoP.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderValue;
use phigate_identity::dev::DevIssuer;
use phigate_identity::IdentityStage;
use phigate_plugin::{ErrorCode, RequestCtx, RouteMeta};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::*;

const ISS: &str = "https://idp.test";
const HOST: &str = "gw.phigate.test";
const PATH: &str = "/a/Patient/1";
const ALGS: &str = "ES256 ES384 EdDSA PS256 PS384 PS512 RS256 RS384 RS512";

struct Fx {
    idp: DevIssuer,
    stage: IdentityStage,
    routes: Vec<Arc<RouteMeta>>,
}

fn fx() -> Fx {
    let idp = DevIssuer::es256(ISS).unwrap();
    let dir = temp_dir("dpop");
    let jwks = file_issuer(&dir, "idp", &[&idp]);
    let yaml = format!(
        "issuers:\n  - issuer: {ISS}\n    audiences: [\"{AUD}\"]\n    jwks_path: {jwks}\n\
         defaults: {{ require_mfa: false }}\nroutes:\n  b: {{ require_dpop: true }}\n"
    );
    let routes = routes(&["a", "b"]);
    Fx { stage: build(&yaml, &routes, &dir), idp, routes }
}

/// RFC 7638 thumbprint of a public EC, OKP or RSA JWK, computed here from its required members (not
/// by the code under test).
fn thumbprint(jwk: &Value) -> String {
    let canonical = match jwk["kty"].as_str().unwrap() {
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["crv"].as_str().unwrap(),
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        ),
        "OKP" => format!(
            r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#,
            jwk["crv"].as_str().unwrap(),
            jwk["x"].as_str().unwrap()
        ),
        "RSA" => format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            jwk["e"].as_str().unwrap(),
            jwk["n"].as_str().unwrap()
        ),
        other => panic!("no thumbprint for {other}"),
    };
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

fn ath(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// A client holding a DPoP key.
struct Client {
    key: DevIssuer,
}

impl Client {
    fn es256() -> Self {
        Client { key: DevIssuer::es256("client").unwrap() }
    }

    fn jkt(&self) -> String {
        thumbprint(self.key.jwk())
    }

    /// The claims of a correct proof for GET https://HOST/PATH with `token`.
    fn claims(&self, token: &str) -> Value {
        json!({
            "jti": format!("jti-{}", rand_id()),
            "htm": "GET",
            "htu": format!("https://{HOST}{PATH}"),
            "iat": now(),
            "ath": ath(token),
        })
    }

    fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": self.key.alg(), "jwk": self.key.jwk()})
    }

    fn proof(&self, token: &str) -> String {
        self.key.sign_raw(&self.header(), &self.claims(token))
    }
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

impl Fx {
    fn token_bound_to(&self, jkt: &str) -> String {
        self.idp.sign(&self.idp.claims("alice", AUD, now()).set("cnf", json!({"jkt": jkt})))
    }

    /// A request on `route` presenting `token` with `scheme` and the given `DPoP` headers.
    fn request(&self, route: usize, scheme: &str, token: &str, proofs: &[&str]) -> RequestCtx {
        let mut ctx = request(&self.routes[route], &[&format!("{scheme} {token}")]);
        ctx.request.headers.insert(http::header::HOST, HeaderValue::from_static(HOST));
        for p in proofs {
            ctx.request.headers.append("dpop", HeaderValue::from_str(p).unwrap());
        }
        ctx
    }

    async fn accepts(&self, ctx: &mut RequestCtx) {
        let res = run(&self.stage, ctx).await;
        assert!(res.is_ok(), "{:?}", res.err());
        assert_eq!(ctx.principal.as_ref().unwrap().subject.as_str(), "alice");
    }

    async fn refuses_proof(&self, mut ctx: RequestCtx, token: &str) {
        let www = format!(
            "DPoP error=\"invalid_dpop_proof\", error_description=\"{}\", algs=\"{ALGS}\"",
            ErrorCode::DpopProofInvalid.message()
        );
        assert_denied(run(&self.stage, &mut ctx).await, ErrorCode::DpopProofInvalid, Some(&www), token);
        assert!(ctx.principal.is_none());
    }
}

#[tokio::test]
async fn a_dpop_bound_token_with_a_fresh_proof_of_its_key_is_accepted_and_the_proof_is_single_use() {
    let f = fx();
    let client = Client::es256();
    let token = f.token_bound_to(&client.jkt());
    let proof = client.proof(&token);
    f.accepts(&mut f.request(0, "DPoP", &token, &[&proof])).await;
    // The token is now cached: the proof is still checked, and the same proof is a replay.
    f.refuses_proof(f.request(0, "DPoP", &token, &[&proof]), &token).await;
    f.accepts(&mut f.request(0, "DPoP", &token, &[&client.proof(&token)])).await;
}

#[tokio::test]
async fn an_eddsa_client_key_works_too() {
    let f = fx();
    let client = Client { key: DevIssuer::eddsa("client").unwrap() };
    let token = f.token_bound_to(&client.jkt());
    f.accepts(&mut f.request(1, "DPoP", &token, &[&client.proof(&token)])).await;
}

#[tokio::test]
async fn rsa_client_keys_work_with_pkcs1_and_pss() {
    let f = fx();
    for alg in [jsonwebtoken::Algorithm::RS256, jsonwebtoken::Algorithm::PS256] {
        let client = Client { key: rsa_issuer("client", alg) };
        let token = f.token_bound_to(&client.jkt());
        f.accepts(&mut f.request(0, "DPoP", &token, &[&client.proof(&token)])).await;
    }
}

#[tokio::test]
async fn a_dpop_bound_token_without_a_valid_proof_is_refused() {
    let f = fx();
    let client = Client::es256();
    let token = f.token_bound_to(&client.jkt());
    // Presented as a bearer token, even with a good proof.
    f.refuses_proof(f.request(0, "Bearer", &token, &[&client.proof(&token)]), &token).await;
    // No proof, two proofs.
    f.refuses_proof(f.request(0, "DPoP", &token, &[]), &token).await;
    let (p1, p2) = (client.proof(&token), client.proof(&token));
    f.refuses_proof(f.request(0, "DPoP", &token, &[&p1, &p2]), &token).await;
    // A proof by another key (a thief's), correct in every other way.
    let thief = Client::es256();
    f.refuses_proof(f.request(0, "DPoP", &token, &[&thief.proof(&token)]), &token).await;
    // The right key's proof for another token of the same key.
    let other = f
        .idp
        .sign(&f.idp.claims("alice", AUD, now()).set("jti", "t2").set("cnf", json!({"jkt": client.jkt()})));
    assert_ne!(other, token);
    f.refuses_proof(f.request(0, "DPoP", &token, &[&client.proof(&other)]), &token).await;
}

/// Each claim or header change alone makes a proof invalid.
#[tokio::test]
async fn every_proof_check_refuses_on_its_own() {
    let f = fx();
    let client = Client::es256();
    let token = f.token_bound_to(&client.jkt());
    let claim_changes: Vec<(&str, Value)> = vec![
        ("htm", json!("POST")),
        ("htu", json!(format!("https://other.test{PATH}"))),
        ("htu", json!(format!("http://{HOST}{PATH}"))),
        ("htu", json!(format!("https://{HOST}/a/Patient/2"))),
        ("iat", json!(now() - 3600)),
        ("iat", json!(now() + 3600)),
        ("iat", json!("recent")),
        ("ath", json!(ath("another token"))),
        ("jti", json!("")),
        ("jti", json!(7)),
    ];
    for (name, value) in claim_changes {
        let mut claims = client.claims(&token);
        claims[name] = value;
        let proof = client.key.sign_raw(&client.header(), &claims);
        f.refuses_proof(f.request(0, "DPoP", &token, &[&proof]), &token).await;
    }
    for missing in ["jti", "htm", "htu", "iat", "ath"] {
        let mut claims = client.claims(&token);
        claims.as_object_mut().unwrap().remove(missing);
        let proof = client.key.sign_raw(&client.header(), &claims);
        f.refuses_proof(f.request(0, "DPoP", &token, &[&proof]), &token).await;
    }
    let header_changes: Vec<(&str, Value)> = vec![
        ("typ", json!("JWT")),
        ("alg", json!("none")),
        ("alg", json!("HS256")),
        ("alg", json!("EdDSA")),
        ("crit", json!(["x"])),
        ("jwk", json!("not an object")),
    ];
    for (name, value) in header_changes {
        let mut header = client.header();
        header[name] = value;
        let proof = client.key.sign_raw(&header, &client.claims(&token));
        f.refuses_proof(f.request(0, "DPoP", &token, &[&proof]), &token).await;
    }
    // A JWK carrying its private part (`d`): refused though everything else is right.
    let mut header = client.header();
    header["jwk"]["d"] = json!(URL_SAFE_NO_PAD.encode([1u8; 32]));
    let proof = client.key.sign_raw(&header, &client.claims(&token));
    f.refuses_proof(f.request(0, "DPoP", &token, &[&proof]), &token).await;
    // A key restricted to encryption, or to another algorithm.
    for (member, value) in [("use", "enc"), ("alg", "ES384")] {
        let mut header = client.header();
        header["jwk"][member] = json!(value);
        let proof = client.key.sign_raw(&header, &client.claims(&token));
        f.refuses_proof(f.request(0, "DPoP", &token, &[&proof]), &token).await;
    }
    // A tampered signature.
    let proof = client.proof(&token);
    let (signed, sig) = proof.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{signed}.{flipped}{}", &sig[1..]);
    f.refuses_proof(f.request(0, "DPoP", &token, &[&tampered]), &token).await;
    // And the untouched proof still works: the refusals above were each for their one change.
    f.accepts(&mut f.request(0, "DPoP", &token, &[&client.proof(&token)])).await;
}

#[tokio::test]
async fn the_dpop_scheme_with_an_unbound_token_is_refused() {
    let f = fx();
    let token = f.idp.sign(&f.idp.claims("alice", AUD, now()));
    let client = Client::es256();
    f.refuses_proof(f.request(0, "DPoP", &token, &[&client.proof(&token)]), &token).await;
}

#[tokio::test]
async fn a_route_requiring_dpop_refuses_bearer_tokens_and_says_so() {
    let f = fx();
    let token = f.idp.sign(&f.idp.claims("alice", AUD, now()));
    f.accepts(&mut f.request(0, "Bearer", &token, &[])).await;
    let mut ctx = f.request(1, "Bearer", &token, &[]);
    let www = format!(
        "DPoP error=\"invalid_token\", error_description=\"{}\", algs=\"{ALGS}\"",
        ErrorCode::DpopRequired.message()
    );
    assert_denied(run(&f.stage, &mut ctx).await, ErrorCode::DpopRequired, Some(&www), &token);
    // Without any credentials the route's challenge names the DPoP scheme.
    let mut ctx = request(&f.routes[1], &[]);
    assert_denied(
        run(&f.stage, &mut ctx).await,
        ErrorCode::TokenMissing,
        Some(&format!("DPoP algs=\"{ALGS}\"")),
        "",
    );
}

#[tokio::test]
async fn an_unknown_confirmation_method_is_still_refused() {
    let f = fx();
    let token = f.idp.sign(&f.idp.claims("alice", AUD, now()).set("cnf", json!({"jwk": {"kty": "EC"}})));
    let mut ctx = f.request(0, "Bearer", &token, &[]);
    let res = run(&f.stage, &mut ctx).await;
    assert_eq!(res.unwrap_err().code, ErrorCode::TokenBindingMismatch);
}
