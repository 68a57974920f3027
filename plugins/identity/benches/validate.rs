//! Token validation cost per algorithm through the real stage (`on_request`): a cache hit (the
//! same token again) and a cache miss (a token never seen: parse, key lookup, signature, claims);
//! and a DPoP-bound token (cached) with a fresh proof per request (ES256 and EdDSA client keys:
//! the proof's parse, thumbprint, signature, claims and replay check), without and with RFC 9449
//! §9 server nonces (`_nonce`: one more HMAC to check the proof's nonce, and the cached current
//! nonce put on the response).
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use phigate_identity::dev::DevIssuer;
use phigate_identity::{IdentityConfig, IdentityStage};
use phigate_plugin::{RequestCtx, RequestId, RequestInfo, RouteMeta, Stage, StageBuildCtx};

const AUD: &str = "https://fhir.bench";
const MISS_TOKENS: usize = 512;

/// Every algorithm the stage accepts (RSA with a 2048-bit key).
fn issuers() -> Vec<(&'static str, DevIssuer)> {
    use jsonwebtoken::Algorithm::*;
    let pem = include_str!("../tests/keys/rsa2048.pem");
    let rsa = |alg| DevIssuer::rsa_from_pem("https://rsa.bench", pem, alg).unwrap();
    vec![
        ("RS256", rsa(RS256)),
        ("RS384", rsa(RS384)),
        ("RS512", rsa(RS512)),
        ("PS256", rsa(PS256)),
        ("PS384", rsa(PS384)),
        ("PS512", rsa(PS512)),
        ("ES256", DevIssuer::es256("https://es.bench").unwrap()),
        ("ES384", DevIssuer::es384("https://es384.bench").unwrap()),
        ("EdDSA", DevIssuer::eddsa("https://ed.bench").unwrap()),
    ]
}

fn route() -> Arc<RouteMeta> {
    Arc::new(RouteMeta {
        name: "fhir".into(),
        index: 0,
        prefix: "/fhir".into(),
        fhir: true,
        upstream: "u".into(),
    })
}

fn stage(idp: &DevIssuer, cache: u64, route: &Arc<RouteMeta>) -> IdentityStage {
    stage_with(idp, cache, route, "")
}

/// [`stage`] with `extra` top-level identity config appended.
fn stage_with(idp: &DevIssuer, cache: u64, route: &Arc<RouteMeta>, extra: &str) -> IdentityStage {
    let dir = std::env::temp_dir().join(format!("phigate-identity-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{}.json", idp.kid()));
    std::fs::write(&file, idp.jwks_json()).unwrap();
    let yaml = format!(
        "issuers: [{{ issuer: \"{}\", audiences: [\"{AUD}\"], jwks_path: \"{}\", algorithms: [{}] }}]\n\
         token_cache_size: {cache}\nidle_timeout_secs: 0\ndefaults: {{ require_mfa: false }}\n{extra}",
        idp.issuer(),
        file.display(),
        idp.alg()
    );
    let cfg: IdentityConfig = serde_yaml::from_str(&yaml).unwrap();
    let routes = [Arc::clone(route)];
    cfg.build(&StageBuildCtx { routes: &routes, config_dir: &dir }).unwrap()
}

fn ctx(route: &Arc<RouteMeta>, auth: &HeaderValue) -> RequestCtx {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, auth.clone());
    let info = RequestInfo {
        method: Method::GET,
        path: "/fhir/Patient/1".into(),
        query: Vec::new(),
        headers,
        body: None,
    };
    RequestCtx::new(RequestId::new("b"), Arc::clone(route), info)
}

fn token(idp: &DevIssuer, n: usize) -> HeaderValue {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let c = idp
        .claims("alice", AUD, now)
        .set("jti", format!("j{n}"))
        .amr(&["pwd", "otp"])
        .roles(&["clinician"])
        .scope("patient/*.read")
        .set("tenant", "tenant-a");
    HeaderValue::from_str(&format!("Bearer {}", idp.sign(&c))).unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let route = route();
    for (alg, idp) in issuers() {
        let hit_stage = stage(&idp, 1000, &route);
        let hot = token(&idp, 0);
        rt.block_on(hit_stage.on_request(&mut ctx(&route, &hot))).unwrap();
        c.bench_function(&format!("validate/{alg}/cache_hit"), |b| {
            b.iter(|| {
                let mut cx = ctx(&route, &hot);
                black_box(rt.block_on(hit_stage.on_request(&mut cx)).is_ok())
            })
        });
        // Capacity 1 and 512 distinct tokens in rotation: every lookup misses.
        let miss_stage = stage(&idp, 1, &route);
        let cold: Vec<HeaderValue> = (1..=MISS_TOKENS).map(|n| token(&idp, n)).collect();
        let mut i = 0;
        c.bench_function(&format!("validate/{alg}/cache_miss"), |b| {
            b.iter(|| {
                i = (i + 1) % MISS_TOKENS;
                let mut cx = ctx(&route, &cold[i]);
                let ok = rt.block_on(miss_stage.on_request(&mut cx)).is_ok();
                assert!(ok);
                black_box(ok)
            })
        });
    }
}

/// RFC 7638 thumbprint of an EC or OKP public JWK.
fn thumbprint(jwk: &serde_json::Value) -> String {
    use base64::Engine;
    use sha2::Digest;
    let s = |k: &str| jwk[k].as_str().unwrap().to_owned();
    let canonical = match s("kty").as_str() {
        "EC" => format!(r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#, s("crv"), s("x"), s("y")),
        _ => format!(r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#, s("crv"), s("x")),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical.as_bytes()))
}

fn dpop(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let route = route();
    let idp = DevIssuer::es256("https://es.bench").unwrap();
    let dir = std::env::temp_dir().join(format!("phigate-identity-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("nonce.key"), [7u8; 32]).unwrap();
    // A long rotation, so the bench does not run into a window it has no nonce for.
    let nonce_cfg = format!(
        "dpop: {{ nonce: {{ key_path: \"{}\", rotation_secs: 3600 }} }}\n",
        dir.join("nonce.key").display()
    );
    let off = stage(&idp, 1000, &route);
    let on = stage_with(&idp, 1000, &route, &nonce_cfg);
    let keys = || [("ES256", DevIssuer::es256("c").unwrap()), ("EdDSA", DevIssuer::eddsa("c").unwrap())];
    for (suffix, stage) in [("", &off), ("_nonce", &on)] {
        for (alg, key) in keys() {
            dpop_one(c, &rt, &route, &idp, stage, &format!("{alg}_proof{suffix}"), &key);
        }
    }
}

fn dpop_one(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    route: &Arc<RouteMeta>,
    idp: &DevIssuer,
    stage: &IdentityStage,
    name: &str,
    key: &DevIssuer,
) {
    use base64::Engine;
    use sha2::Digest;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims =
        idp.claims("alice", AUD, now as i64).set("cnf", serde_json::json!({"jkt": thumbprint(key.jwk())}));
    let token = idp.sign(&claims);
    let auth = HeaderValue::from_str(&format!("DPoP {token}")).unwrap();
    let ath = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(token.as_bytes()));
    let header = serde_json::json!({"typ": "dpop+jwt", "alg": key.alg(), "jwk": key.jwk()});
    let mut n = 0u64;
    let mut make = |nonce: Option<&str>| {
        n += 1;
        let mut claims = serde_json::json!({
            "jti": format!("{name}-{n}"), "htm": "GET", "htu": "https://gw.bench/fhir/Patient/1",
            "iat": now, "ath": ath,
        });
        if let Some(nonce) = nonce {
            claims["nonce"] = nonce.into();
        }
        let mut cx = ctx(route, &auth);
        cx.request.headers.insert(http::header::HOST, HeaderValue::from_static("gw.bench"));
        cx.request.headers.insert("dpop", HeaderValue::from_str(&key.sign_raw(&header, &claims)).unwrap());
        cx
    };
    // With nonces on, the first proof (without one) is answered with the nonce to use.
    let nonce = match rt.block_on(stage.on_request(&mut make(None))) {
        Ok(_) => None,
        Err(d) => {
            Some(d.headers.iter().find(|(h, _)| h == "dpop-nonce").unwrap().1.to_str().unwrap().to_owned())
        }
    };
    let mut request = || make(nonce.as_deref());
    rt.block_on(stage.on_request(&mut request())).unwrap();
    c.bench_function(&format!("validate/dpop_{name}/cache_hit"), |b| {
        b.iter_batched(
            &mut request,
            |mut cx| {
                let ok = rt.block_on(stage.on_request(&mut cx)).is_ok();
                assert!(ok);
                black_box(ok)
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench, dpop);
criterion_main!(benches);
