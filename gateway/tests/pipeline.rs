//! The stage pipeline through the library's extension point (`Gateway::builder().stage(..)`):
//! stages run in order, a denial becomes the one central error response, a stage can answer
//! locally, edit the forwarded request, add response headers and verify a buffered response
//! before any of it reaches the client; `/readyz` follows stage readiness.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod common;

use std::sync::{Arc, Mutex};

use common::{admin_get, error_code, yaml};
use http::{HeaderName, HeaderValue, StatusCode};
use phigate_plugin::{
    async_trait, Denial, ErrorCode, Flow, LocalResponse, QueryParam, Readiness, RequestCtx, ResponseHead,
    Stage,
};
use phigate_test_support::{start_upstream, TestGateway, TestPki};

/// Records its name in a shared log and applies a behaviour chosen by the request path.
struct Probe {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl Stage for Probe {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn on_request(&self, ctx: &mut RequestCtx) -> Result<Flow, Denial> {
        self.log.lock().unwrap().push(format!("{}:request", self.name));
        if self.name != "first" {
            return Ok(Flow::Continue);
        }
        let path = ctx.request.path.clone();
        if path.ends_with("/deny") {
            let challenge = HeaderValue::from_static("Bearer error=\"invalid_token\"");
            return Err(Denial::new(ErrorCode::TokenExpired)
                .with_header(http::header::WWW_AUTHENTICATE, challenge)
                .with_cause("test denial"));
        }
        if path.ends_with("/local") {
            return Ok(Flow::Respond(LocalResponse {
                status: StatusCode::ACCEPTED,
                headers: vec![],
                body: bytes::Bytes::from_static(b"{\"local\":true}"),
            }));
        }
        // Narrow the query and add a header for the upstream.
        if path.ends_with("/Observation") {
            ctx.request.query.push(QueryParam { name: "_count".into(), value: "3".into() });
        }
        ctx.upstream
            .set_headers
            .push((HeaderName::from_static("x-stage"), HeaderValue::from_static("first")));
        ctx.upstream.remove_headers.push(HeaderName::from_static("x-drop-me"));
        if ctx.request.headers.contains_key("x-verify") {
            ctx.response.buffer_body = true;
        }
        Ok(Flow::Continue)
    }

    fn on_response(&self, ctx: &mut RequestCtx, head: &mut ResponseHead<'_>) -> Result<(), Denial> {
        self.log.lock().unwrap().push(format!("{}:response:{}", self.name, head.status.as_u16()));
        ctx.response
            .add_headers
            .push((HeaderName::from_static("x-seen-by"), HeaderValue::from_static(self.name)));
        Ok(())
    }

    fn on_buffered_response(&self, _ctx: &mut RequestCtx, body: &[u8]) -> Result<(), Denial> {
        // Refuse any response naming tenant B's patient.
        if body.windows(4).any(|w| w == b"b-p1") {
            return Err(Denial::new(ErrorCode::PatientNotPermitted));
        }
        Ok(())
    }

    async fn on_complete(&self, ctx: &RequestCtx) {
        let code = ctx.error.map_or("ok", |c| c.as_str());
        self.log.lock().unwrap().push(format!("{}:complete:{code}", self.name));
    }
}

struct NotReady;

#[async_trait]
impl Stage for NotReady {
    fn name(&self) -> &'static str {
        "keys"
    }
    fn readiness(&self) -> Readiness {
        Readiness::NotReady("keys not loaded".into())
    }
}

async fn start(stages: Vec<Arc<dyn Stage>>) -> (TestPki, phigate_test_support::RunningUpstream, TestGateway) {
    let pki = TestPki::new();
    let upstream = start_upstream(&pki).await;
    let gw = TestGateway::start_yaml(&yaml(&pki, upstream.addr, "none"), pki.dir(), stages);
    (pki, upstream, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_run_in_order_and_shape_the_forwarded_request_and_response() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let first: Arc<dyn Stage> = Arc::new(Probe { name: "first", log: log.clone() });
    let second: Arc<dyn Stage> = Arc::new(Probe { name: "second", log: log.clone() });
    let (pki, upstream, gw) = start(vec![first, second]).await;
    let res = pki
        .public_client()
        .get(&gw.url("/fhir/Observation?patient=a-p1"))
        .header("x-drop-me", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-seen-by"), Some("second"), "later stages' headers win");
    let seen = upstream.recorder.next().await;
    assert_eq!(seen.path_and_query, "/fhir/Observation?patient=a-p1&_count=3");
    assert_eq!(seen.headers.get("x-stage").unwrap(), "first");
    assert!(seen.headers.get("x-drop-me").is_none());
    drop(gw); // joins the gateway: every on_complete has run
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            "first:request",
            "second:request",
            "first:response:200",
            "second:response:200",
            "first:complete:ok",
            "second:complete:ok"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_stops_the_pipeline_and_becomes_the_central_error_response() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let first: Arc<dyn Stage> = Arc::new(Probe { name: "first", log: log.clone() });
    let second: Arc<dyn Stage> = Arc::new(Probe { name: "second", log: log.clone() });
    let (pki, upstream, gw) = start(vec![first, second]).await;
    let res = pki.public_client().get(&gw.url("/fhir/Patient/deny")).send().await.unwrap();
    assert_eq!(res.status, 401);
    assert_eq!(error_code(&res.body), "token_expired");
    assert_eq!(res.header("www-authenticate"), Some("Bearer error=\"invalid_token\""));
    assert_eq!(res.header("content-type"), Some("application/fhir+json"));
    assert!(!String::from_utf8_lossy(&res.body).contains("test denial"), "the cause is never sent");
    let local = pki.public_client().get(&gw.url("/api/local")).send().await.unwrap();
    assert_eq!(local.status, 202);
    assert_eq!(&local.body[..], b"{\"local\":true}");
    assert_eq!(upstream.recorder.count(), 0, "nothing was forwarded");
    drop(gw);
    let log = log.lock().unwrap().clone();
    assert!(!log.contains(&"second:request".to_owned()), "{log:?}");
    assert!(log.contains(&"second:complete:token_expired".to_owned()), "on_complete always runs: {log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffered_response_is_verified_before_any_byte_reaches_the_client() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let first: Arc<dyn Stage> = Arc::new(Probe { name: "first", log });
    let (pki, upstream, gw) = start(vec![first]).await;
    // Tenant A's patient passes verification: the upstream body is sent, with a fixed length.
    let ok =
        pki.public_client().get(&gw.url("/fhir/Patient/a-p1")).header("x-verify", "1").send().await.unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(String::from_utf8_lossy(&ok.body).contains("\"id\":\"a-p1\""));
    // A response naming b-p1 is replaced: status and body, and the upstream's body never leaks.
    let denied =
        pki.public_client().get(&gw.url("/fhir/Patient/b-p1")).header("x-verify", "1").send().await.unwrap();
    assert_eq!(denied.status, 403);
    assert_eq!(error_code(&denied.body), "patient_not_permitted");
    assert!(!String::from_utf8_lossy(&denied.body).contains("MRN"));
    assert_eq!(upstream.recorder.count(), 2, "both were fetched from the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_a_stage_is_not_ready() {
    let (_pki, _upstream, gw) = start(vec![Arc::new(NotReady)]).await;
    let ready = admin_get(gw.admin, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(ready.contains("keys not loaded"));
    assert!(admin_get(gw.admin, "/metrics").await.contains("phigate_stage_ready{stage=\"keys\"} 0"));
}
