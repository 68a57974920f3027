//! Token introspection (RFC 7662) through the real gateway: an opaque access token, vouched for
//! by an authorization server over TLS on 127.0.0.1, reaches the same care-team policy as a
//! JWT; an inactive one is refused before anything is forwarded; a JWT of the issuer is asked
//! about too (`tokens: all`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use common::FullEnv;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use phigate::demo::pki::{DevPki, WhichCa};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Opaque (not a JWT), and unchanged by form encoding.
const OPAQUE: &str = "opaque-clinician-a-7f3c9e1d2b";

/// The authorization server's answers by token (unknown: inactive), and the tokens it was asked about.
#[derive(Default)]
struct Answers {
    by_token: Mutex<HashMap<String, serde_json::Value>>,
    asked: Mutex<Vec<String>>,
}

async fn start_authorization_server(pki: &DevPki, answers: Arc<Answers>) -> String {
    let cert = pki.issue_server(WhichCa::Internal, &["127.0.0.1"]).unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert_der().clone()], cert.key_der())
            .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, answers) = (acceptor.clone(), Arc::clone(&answers));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let answers = Arc::clone(&answers);
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let form = String::from_utf8(body.to_vec()).unwrap();
                        let token = form.split('&').find_map(|kv| kv.strip_prefix("token=")).unwrap_or("");
                        answers.asked.lock().unwrap().push(token.to_owned());
                        let answer = answers.by_token.lock().unwrap().get(token).cloned();
                        let answer = answer.unwrap_or_else(|| serde_json::json!({"active": false}));
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(answer.to_string()))))
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
            });
        }
    });
    format!("https://{addr}/introspect")
}

/// The claims of a demo persona's JWT (what its authorization server would answer for it).
fn payload(jwt: &str) -> serde_json::Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_token_is_introspected_and_then_authorized_like_a_jwt() {
    let as_pki = DevPki::generate().unwrap();
    let answers = Arc::new(Answers::default());
    let endpoint = start_authorization_server(&as_pki, Arc::clone(&answers)).await;
    let ca_pem = as_pki.internal_ca.cert_pem().to_owned();
    let section = format!(
        "      introspection:\n        endpoint: {endpoint}\n        ca_path: as-ca.pem\n        client_id: phigate\n\
         \x20       client_secret_path: as.secret\n        tokens: all\n"
    );
    let env = FullEnv::start_edited(
        |policies| {
            let dir = policies.parent().unwrap();
            std::fs::write(dir.join("as-ca.pem"), &ca_pem).unwrap();
            std::fs::write(dir.join("as.secret"), "gateway-secret\n").unwrap();
        },
        "",
        "",
        |cfg, _| {
            let claims = "      claims: { tenant: tenant, roles: roles }\n";
            assert!(cfg.contains(claims));
            cfg.replace(claims, &format!("{claims}{section}"))
        },
    )
    .await;
    let jwt = env.token("clinician_a");
    let mut answer = payload(&jwt);
    answer["active"] = true.into();
    answers.by_token.lock().unwrap().insert(OPAQUE.to_owned(), answer.clone());
    let client = env.pki.public_client();
    let get = |path: &str, token: &str| client.get(&env.gw.url(path)).bearer(token).send();

    // On her care team: forwarded. Not on it: the policy refuses, exactly as for her JWT.
    let res = get("/fhir/Patient/a-p1", OPAQUE).await.unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    let res = get("/fhir/Patient/a-p5", OPAQUE).await.unwrap();
    assert_eq!((res.status.as_u16(), common::error_code(&res.body).as_str()), (403, "patient_not_permitted"));
    assert_eq!(answers.asked.lock().unwrap().len(), 1, "the answer is cached");

    // Unknown to the authorization server: 401 token_inactive, nothing forwarded.
    let forwarded = env.upstream.recorder.count();
    let res = get("/fhir/Patient/a-p1", "opaque-revoked-0000").await.unwrap();
    assert_eq!((res.status.as_u16(), common::error_code(&res.body).as_str()), (401, "token_inactive"));
    assert!(res.header("www-authenticate").unwrap().starts_with("Bearer error=\"invalid_token\""));
    assert_eq!(env.upstream.recorder.count(), forwarded);

    // `tokens: all`: the issuer's JWTs pass their local checks, then are asked about.
    answers.by_token.lock().unwrap().insert(jwt.clone(), serde_json::json!({"active": true}));
    let res = get("/fhir/Patient/a-p1", &jwt).await.unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    let revoked = env.token("clinician_a2");
    let res = get("/fhir/Patient/a-p3", &revoked).await.unwrap();
    assert_eq!((res.status.as_u16(), common::error_code(&res.body).as_str()), (401, "token_inactive"));
    let asked = answers.asked.lock().unwrap().clone();
    assert_eq!(asked, [OPAQUE, "opaque-revoked-0000", jwt.as_str(), revoked.as_str()]);
}
