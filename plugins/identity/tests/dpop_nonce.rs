//! RFC 9449 §8/§9 server nonces through the real stage: real ES256/EdDSA proofs, a manual
//! clock (no sleeps), the `use_dpop_nonce` challenge with a fresh `DPoP-Nonce`, the nonce on
//! successful responses, windows, other keys, forged tags, routes that opt out, and config errors.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderValue;
use phigate_identity::dev::DevIssuer;
use phigate_identity::{IdentityConfig, IdentityStage, ManualClock};
use phigate_plugin::{ConfigIssue, Denial, ErrorCode, Flow, RequestCtx, RouteMeta, StageBuildCtx};
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
    clock: Arc<ManualClock>,
    routes: Vec<Arc<RouteMeta>>,
    client: DevIssuer,
    token: String,
}

/// Route `a` requires nonces (the default), route `b` opts out, route `c` requires DPoP. `key` is the nonce key file's
/// content; `None` leaves nonces off.
fn fx_with(key: Option<&[u8]>, client: DevIssuer) -> Fx {
    let idp = DevIssuer::es256(ISS).unwrap();
    let dir = temp_dir("dpop-nonce");
    let jwks = file_issuer(&dir, "idp", &[&idp]);
    let nonce = match key {
        Some(k) => {
            std::fs::write(dir.join("nonce.key"), k).unwrap();
            "dpop: { nonce: { key_path: nonce.key, rotation_secs: 60 } }\n"
        }
        None => "",
    };
    let yaml = format!(
        "issuers:\n  - issuer: {ISS}\n    audiences: [\"{AUD}\"]\n    jwks_path: {jwks}\n{nonce}\
         defaults: {{ require_mfa: false }}\nroutes:\n  b: {{ require_dpop_nonce: false }}\n  c: {{ require_dpop: true }}\n"
    );
    let routes = routes(&["a", "b", "c"]);
    let clock = Arc::new(ManualClock::new());
    let stage = build_with(&yaml, &routes, &dir, clock.clone());
    let jkt = client.jwk_thumbprint().unwrap();
    let token = idp.sign(&idp.claims("alice", AUD, now()).set("cnf", json!({"jkt": jkt})));
    Fx { idp, stage, clock, routes, client, token }
}

fn fx() -> Fx {
    fx_with(Some(&[0x42; 32]), DevIssuer::es256("client").unwrap())
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

fn nonce_of(headers: &[(http::HeaderName, HeaderValue)]) -> Option<String> {
    let mut all = headers.iter().filter(|(n, _)| n == "dpop-nonce");
    let found = all.next().map(|(_, v)| v.to_str().unwrap().to_owned());
    assert!(all.next().is_none(), "one DPoP-Nonce header at most");
    found
}

impl Fx {
    /// A correct proof for GET https://HOST/PATH at the clock's time, with `nonce` when given.
    fn proof(&self, nonce: Option<&str>) -> String {
        self.proof_with(&format!("jti-{}", rand_id()), nonce)
    }

    fn proof_with(&self, jti: &str, nonce: Option<&str>) -> String {
        let mut claims = json!({
            "jti": jti,
            "htm": "GET",
            "htu": format!("https://{HOST}{PATH}"),
            "iat": self.clock_now(),
            "ath": URL_SAFE_NO_PAD.encode(Sha256::digest(self.token.as_bytes())),
        });
        if let Some(n) = nonce {
            claims["nonce"] = Value::from(n);
        }
        let header = json!({"typ": "dpop+jwt", "alg": self.client.alg(), "jwk": self.client.jwk()});
        self.client.sign_raw(&header, &claims)
    }

    fn clock_now(&self) -> i64 {
        use phigate_identity::Clock;
        self.clock.unix_secs()
    }

    fn request(&self, route: usize, proof: &str) -> RequestCtx {
        let mut ctx = request(&self.routes[route], &[&format!("DPoP {}", self.token)]);
        ctx.request.headers.insert(http::header::HOST, HeaderValue::from_static(HOST));
        ctx.request.headers.insert("dpop", HeaderValue::from_str(proof).unwrap());
        ctx
    }

    /// Accepted; returns the `DPoP-Nonce` the response will carry.
    async fn accepts(&self, route: usize, proof: &str) -> Option<String> {
        let mut ctx = self.request(route, proof);
        let res = run(&self.stage, &mut ctx).await;
        assert!(matches!(res, Ok(Flow::Continue)), "{:?}", res.err());
        assert_eq!(ctx.principal.as_ref().unwrap().subject.as_str(), "alice");
        nonce_of(&ctx.response.add_headers)
    }

    /// Refused with `dpop_nonce_required` and the RFC 9449 §9 challenge; returns the fresh nonce.
    async fn wants_nonce(&self, route: usize, proof: &str) -> String {
        let mut ctx = self.request(route, proof);
        let res = run(&self.stage, &mut ctx).await;
        let headers = res.as_ref().err().map(|d: &Denial| d.headers.clone()).unwrap_or_default();
        let www = format!(
            "DPoP error=\"use_dpop_nonce\", error_description=\"{}\", algs=\"{ALGS}\"",
            ErrorCode::DpopNonceRequired.message()
        );
        assert_denied(res, ErrorCode::DpopNonceRequired, Some(&www), &self.token);
        assert!(ctx.principal.is_none());
        nonce_of(&headers).expect("a use_dpop_nonce denial carries DPoP-Nonce")
    }
}

#[tokio::test]
async fn a_proof_without_nonce_is_401_use_dpop_nonce_and_the_returned_nonce_then_works() {
    let f = fx();
    assert_eq!(ErrorCode::DpopNonceRequired.status(), 401);
    let nonce = f.wants_nonce(0, &f.proof(None)).await;
    let next = f.accepts(0, &f.proof(Some(&nonce))).await;
    // Successful DPoP responses carry the current nonce (the same one within a window).
    assert_eq!(next.as_deref(), Some(nonce.as_str()));
    f.accepts(0, &f.proof(Some(&nonce))).await;
}

#[tokio::test]
async fn an_eddsa_client_gets_and_uses_a_nonce_too() {
    let f = fx_with(Some(&[0x42; 32]), DevIssuer::eddsa("client").unwrap());
    let nonce = f.wants_nonce(0, &f.proof(None)).await;
    f.accepts(0, &f.proof(Some(&nonce))).await;
}

#[tokio::test]
async fn a_nonce_lives_one_to_two_windows_and_one_from_two_windows_ago_is_refused() {
    let f = fx();
    let old = f.wants_nonce(0, &f.proof(None)).await;
    // The next window: last window's nonce is still good, and a new one is handed out.
    f.clock.advance(Duration::from_secs(60));
    let newer = f.accepts(0, &f.proof(Some(&old))).await.unwrap();
    assert_ne!(newer, old);
    // Two windows on: refused, and the challenge carries the current nonce, which works.
    f.clock.advance(Duration::from_secs(60));
    let fresh = f.wants_nonce(0, &f.proof(Some(&old))).await;
    assert_ne!(fresh, old);
    f.accepts(0, &f.proof(Some(&fresh))).await;
    f.accepts(0, &f.proof(Some(&newer))).await;
}

#[tokio::test]
async fn a_nonce_made_with_another_key_is_refused() {
    let f = fx();
    // Another replica configured with a different key file.
    let other = fx_with(Some(&[0x43; 32]), DevIssuer::es256("client").unwrap());
    let foreign = other.wants_nonce(0, &other.proof(None)).await;
    let fresh = f.wants_nonce(0, &f.proof(Some(&foreign))).await;
    assert_ne!(fresh, foreign);
    // A replica with the same key accepts this one's nonces.
    let twin = fx_with(Some(&[0x42; 32]), DevIssuer::es256("client").unwrap());
    let theirs = twin.wants_nonce(0, &twin.proof(None)).await;
    f.accepts(0, &f.proof(Some(&theirs))).await;
}

#[tokio::test]
async fn a_forged_or_malformed_nonce_is_refused() {
    let f = fx();
    let good = f.wants_nonce(0, &f.proof(None)).await;
    let mut raw = URL_SAFE_NO_PAD.decode(&good).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 0x01;
    let flipped = URL_SAFE_NO_PAD.encode(&raw);
    // A window counter moved forward with the tag left as is.
    let mut raw = URL_SAFE_NO_PAD.decode(&good).unwrap();
    raw[7] = raw[7].wrapping_add(1);
    let moved = URL_SAFE_NO_PAD.encode(&raw);
    for bad in [flipped.as_str(), moved.as_str(), "", "not-a-nonce", &good[..good.len() - 1]] {
        f.wants_nonce(0, &f.proof(Some(bad))).await;
    }
    // A nonce that is not a string.
    let header = json!({"typ": "dpop+jwt", "alg": f.client.alg(), "jwk": f.client.jwk()});
    let claims = json!({
        "jti": "numeric-nonce", "htm": "GET", "htu": format!("https://{HOST}{PATH}"),
        "iat": f.clock_now(), "ath": URL_SAFE_NO_PAD.encode(Sha256::digest(f.token.as_bytes())),
        "nonce": 12,
    });
    f.wants_nonce(0, &f.client.sign_raw(&header, &claims)).await;
    f.accepts(0, &f.proof(Some(&good))).await;
}

#[tokio::test]
async fn a_nonce_refusal_does_not_burn_the_jti_and_a_replay_is_still_refused() {
    let f = fx();
    // The client's retry may reuse the jti of the proof that lacked the nonce (it was refused
    // before the jti was remembered).
    let nonce = f.wants_nonce(0, &f.proof_with("retry", None)).await;
    let proof = f.proof_with("retry", Some(&nonce));
    f.accepts(0, &proof).await;
    let mut ctx = f.request(0, &proof);
    let res = run(&f.stage, &mut ctx).await;
    assert_eq!(res.err().unwrap().code, ErrorCode::DpopProofInvalid);
}

#[tokio::test]
async fn a_route_without_the_requirement_accepts_no_nonce_or_a_valid_one_but_not_a_bad_one() {
    let f = fx();
    // Without a nonce: accepted, and handed the current nonce for later.
    let nonce = f.accepts(1, &f.proof(None)).await.unwrap();
    f.accepts(1, &f.proof(Some(&nonce))).await;
    // A well-formed nonce with a forged tag, and one that is not a nonce at all.
    let mut raw = URL_SAFE_NO_PAD.decode(&nonce).unwrap();
    raw[10] ^= 0x80;
    f.wants_nonce(1, &f.proof(Some(&URL_SAFE_NO_PAD.encode(&raw)))).await;
    f.wants_nonce(1, &f.proof(Some("bm90LWEtbm9uY2U"))).await;
}

#[tokio::test]
async fn nonces_off_ignore_the_nonce_claim_and_send_no_dpop_nonce_header() {
    let f = fx_with(None, DevIssuer::es256("client").unwrap());
    assert_eq!(f.accepts(0, &f.proof(None)).await, None);
    assert_eq!(f.accepts(0, &f.proof(Some("anything"))).await, None);
}

#[tokio::test]
async fn a_bearer_request_gets_no_dpop_nonce_header() {
    let f = fx();
    let plain = f.idp.sign(&f.idp.claims("alice", AUD, now()));
    let mut ctx = bearer(&f.routes[0], &plain);
    assert!(run(&f.stage, &mut ctx).await.is_ok());
    assert_eq!(nonce_of(&ctx.response.add_headers), None);
}

fn issues(dir: &Path, nonce: &str) -> Vec<ConfigIssue> {
    let idp = DevIssuer::es256(ISS).unwrap();
    let jwks = file_issuer(dir, "idp", &[&idp]);
    let yaml = format!(
        "issuers:\n  - issuer: {ISS}\n    audiences: [\"{AUD}\"]\n    jwks_path: {jwks}\ndpop: {{ nonce: {nonce} }}\n"
    );
    let cfg: IdentityConfig = serde_yaml::from_str(&yaml).unwrap();
    let routes = routes(&["a"]);
    match cfg.build(&StageBuildCtx { routes: &routes, config_dir: dir }) {
        Ok(_) => Vec::new(),
        Err(e) => e,
    }
}

#[test]
fn a_short_or_missing_key_file_and_a_bad_rotation_are_config_errors_naming_the_key() {
    let dir = temp_dir("dpop-nonce-config");
    std::fs::write(dir.join("short.key"), [1u8; 31]).unwrap();
    std::fs::write(dir.join("good.key"), [1u8; 32]).unwrap();
    let keys = |got: Vec<ConfigIssue>| got.into_iter().map(|i| i.key_path).collect::<Vec<_>>();
    let short = issues(&dir, "{ key_path: short.key }");
    assert_eq!(keys(short.clone()), ["dpop.nonce.key_path"]);
    assert!(short[0].message.contains("32 bytes"), "{}", short[0].message);
    assert_eq!(keys(issues(&dir, "{ key_path: nosuch.key }")), ["dpop.nonce.key_path"]);
    for bad in [0, 9, 3601] {
        let got = issues(&dir, &format!("{{ key_path: good.key, rotation_secs: {bad} }}"));
        assert_eq!(keys(got), ["dpop.nonce.rotation_secs"], "{bad}");
    }
    assert!(issues(&dir, "{ key_path: good.key }").is_empty());
    assert!(issues(&dir, "{ key_path: good.key, rotation_secs: 3600 }").is_empty());
    assert!(serde_yaml::from_str::<IdentityConfig>("issuers: []\ndpop: { nonce: { key_pth: k } }\n").is_err());
}

#[tokio::test]
async fn every_dpop_refusal_carries_the_nonce_and_other_refusals_do_not() {
    let f = fx();
    let nonce_in = |res: Result<Flow, Denial>, code: ErrorCode| {
        let denial = res.expect_err("refused");
        assert_eq!(denial.code, code);
        nonce_of(&denial.headers)
    };
    // A proof that fails another check (signed for another method): the refusal hands out the
    // nonce, and a corrected proof carrying it is accepted at once.
    let header = json!({"typ": "dpop+jwt", "alg": f.client.alg(), "jwk": f.client.jwk()});
    let claims = json!({
        "jti": format!("jti-{}", rand_id()), "htm": "POST", "htu": format!("https://{HOST}{PATH}"),
        "iat": f.clock_now(), "ath": URL_SAFE_NO_PAD.encode(Sha256::digest(f.token.as_bytes())),
    });
    let mut ctx = f.request(0, &f.client.sign_raw(&header, &claims));
    let nonce =
        nonce_in(run(&f.stage, &mut ctx).await, ErrorCode::DpopProofInvalid).expect("nonce on invalid proof");
    f.accepts(0, &f.proof(Some(&nonce))).await;
    // The bound token sent as Bearer.
    let mut ctx = bearer(&f.routes[0], &f.token);
    assert!(nonce_in(run(&f.stage, &mut ctx).await, ErrorCode::DpopProofInvalid).is_some());
    // A plain token on a route that requires DPoP.
    let plain = f.idp.sign(&f.idp.claims("alice", AUD, now()));
    let mut ctx = bearer(&f.routes[2], &plain);
    assert!(nonce_in(run(&f.stage, &mut ctx).await, ErrorCode::DpopRequired).is_some());
    // Not a DPoP matter: an expired plain token gets no nonce.
    let expired = f.idp.sign(&f.idp.claims("alice", AUD, now() - 7200).set("exp", json!(now() - 3600)));
    let mut ctx = bearer(&f.routes[0], &expired);
    assert_eq!(nonce_in(run(&f.stage, &mut ctx).await, ErrorCode::TokenExpired), None);
    // Nonces off: no DPoP refusal carries one.
    let off = fx_with(None, DevIssuer::es256("client").unwrap());
    let mut ctx = bearer(&off.routes[0], &off.token);
    assert_eq!(nonce_in(run(&off.stage, &mut ctx).await, ErrorCode::DpopProofInvalid), None);
}
