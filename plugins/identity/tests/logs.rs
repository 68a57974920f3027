//! Nothing the stage logs, at any level, contains a token or a token segment.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Mutex;

use phigate_identity::dev::DevIssuer;
use serde_json::json;
use support::*;

struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        self.0.lock().unwrap().push(format!("{} {}", r.target(), r.args()));
    }
    fn flush(&self) {}
}

static LOGS: Capture = Capture(Mutex::new(Vec::new()));

#[tokio::test]
async fn denials_and_refresh_failures_never_log_tokens() {
    log::set_logger(&LOGS).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let idp = DevIssuer::es256("https://logs.test").unwrap();
    let dir = temp_dir("logs");
    let j = file_issuer(&dir, "idp", &[&idp]);
    let yaml =
        format!("issuers: [{{ issuer: \"https://logs.test\", audiences: [\"{AUD}\"], jwks_path: {j} }}]\n");
    let routes = routes(&["a"]);
    let stage = build(&yaml, &routes, &dir);
    let c = || idp.claims("alice-secret-subject", AUD, now());
    let tokens = vec![
        idp.sign(&c().password_only(now())),
        idp.sign(&c().exp(now() - 3600)),
        idp.sign(&c().set("aud", "other")),
        idp.sign_raw(&json!({"alg": "ES256", "kid": "nope"}), &json!(c().0)),
        idp.sign(&c().mfa(now()).cnf_x5t_s256("thumb")),
    ];
    for t in &tokens {
        assert!(run(&stage, &mut bearer(&routes[0], t)).await.is_err());
    }
    std::fs::remove_file(dir.join(&j)).unwrap();
    stage.refresh_jwks_now().await;
    let logs = LOGS.0.lock().unwrap().join("\n");
    assert!(logs.contains("code=mfa_required"), "denials are logged: {logs}");
    assert!(logs.contains("jwks refresh failed"));
    assert!(!logs.contains("alice-secret-subject"));
    for t in &tokens {
        for seg in t.split('.') {
            assert!(!logs.contains(seg), "token segment in logs");
        }
    }
}
