//! Shared fixture for the gateway's end-to-end tests: a dev PKI, the sample FHIR upstream over
//! mTLS on a loopback port, and an in-process gateway in front of it.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // each test binary uses a subset

pub mod writes;

use std::net::SocketAddr;

use phigate::demo::pki::UPSTREAM_SERVER_NAME;
use phigate::demo::upstream::SampleUpstreamBuilder;
use phigate_test_support::{start_upstream, RunningUpstream, TestGateway, TestPki, TestResponse};

/// PKI + upstream + gateway.
pub struct Env {
    pub pki: TestPki,
    pub upstream: RunningUpstream,
    pub gw: TestGateway,
}

/// Gateway YAML: one TLS listener (client certificates per `client_cert`), one mTLS upstream,
/// a FHIR route at `/fhir` and a plain route at `/api`.
pub fn yaml(pki: &TestPki, upstream: SocketAddr, client_cert: &str) -> String {
    yaml_sni(pki, upstream, client_cert, UPSTREAM_SERVER_NAME)
}

/// The FHIR route line of [`yaml`], as tests that add routes next to it find it.
pub const FHIR_ROUTE: &str = "  - { name: fhir, path_prefix: /fhir, upstream: fhir, fhir: true }\n";

/// `cfg` (from [`yaml`]) with its FHIR route replaced by `routes` (YAML list items).
pub fn replace_fhir_route(cfg: &str, routes: &str) -> String {
    assert!(cfg.contains(FHIR_ROUTE), "no FHIR route in {cfg}");
    cfg.replace(FHIR_ROUTE, routes)
}

/// [`yaml`] with another upstream SNI (the name the upstream certificate must carry).
pub fn yaml_sni(pki: &TestPki, upstream: SocketAddr, client_cert: &str, sni: &str) -> String {
    let p = &pki.paths;
    format!(
        r#"
listeners:
  - name: public
    address: 127.0.0.1:0
    tls:
      cert_path: {gw_cert}
      key_path: {gw_key}
      client_cert: {client_cert}
      client_ca_path: {ca}
upstreams:
  - name: fhir
    address: "{upstream}"
    sni: {sni}
    tls: {{ ca_path: {ica}, client_cert_path: {gc_cert}, client_key_path: {gc_key} }}
routes:
  - {{ name: fhir, path_prefix: /fhir, upstream: fhir, fhir: true }}
  - {{ name: api, path_prefix: /api, upstream: fhir, upstream_path_prefix: /fhir }}
"#,
        gw_cert = p.gateway_cert.display(),
        gw_key = p.gateway_key.display(),
        ca = p.ca_cert.display(),
        ica = p.internal_ca_cert.display(),
        gc_cert = p.gateway_client_cert.display(),
        gc_key = p.gateway_client_key.display(),
    )
}

impl Env {
    /// Starts everything with client certificates off.
    pub async fn start() -> Env {
        Self::with_client_cert("none").await
    }

    /// Starts everything with the given client certificate mode.
    pub async fn with_client_cert(mode: &str) -> Env {
        let pki = TestPki::new();
        let upstream = start_upstream(&pki).await;
        let gw = TestGateway::start_yaml(&yaml(&pki, upstream.addr, mode), pki.dir(), Vec::new());
        Env { pki, upstream, gw }
    }
}

/// GET over plain HTTP/1.1 to the admin service; returns the raw response text.
pub async fn admin_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// A raw HTTP/1.1 request to the admin service with an optional bearer token and JSON body;
/// returns (status, body).
pub async fn admin_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.map(serde_json::Value::to_string).unwrap_or_default();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{head}{body}").as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let (status, _, body) = parse_raw(&out);
    (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

/// The stable error code of a JSON error or an `OperationOutcome`.
pub fn error_code(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["error"]["code"].as_str().map(str::to_owned).unwrap_or_else(|| {
        v["issue"][0]["details"]["coding"][0]["code"].as_str().unwrap_or_default().to_owned()
    })
}

/// Status line code and body of a raw HTTP/1.1 response.
pub fn parse_raw(raw: &[u8]) -> (u16, String, Vec<u8>) {
    let text = String::from_utf8_lossy(raw);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").map_or(raw.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    (status, head, raw[split..].to_vec())
}

/// The whole pipeline (identity, policy, audit) in front of the sample upstream, with the demo's
/// personas, policies and care teams.
pub struct FullEnv {
    pub pki: TestPki,
    pub upstream: RunningUpstream,
    pub gw: TestGateway,
}

impl FullEnv {
    /// Starts everything with the demo's policies; client certificates optional.
    pub async fn start() -> FullEnv {
        Self::start_with_policies(|_| {}).await
    }

    /// [`FullEnv::start`], with `edit` run on the policy directory (the demo's policies, data in
    /// `data/`) before the gateway loads it.
    pub async fn start_with_policies(edit: impl FnOnce(&std::path::Path)) -> FullEnv {
        Self::start_with(edit, "").await
    }

    /// [`FullEnv::start_with_policies`], with `extra` config sections (YAML at the top level,
    /// paths relative to the test directory) appended.
    pub async fn start_with(edit: impl FnOnce(&std::path::Path), extra: &str) -> FullEnv {
        Self::start_full(edit, "", extra).await
    }

    /// [`FullEnv::start_with`], with `identity` lines (YAML indented by two spaces) added to the
    /// `identity:` section.
    pub async fn start_full(edit: impl FnOnce(&std::path::Path), identity: &str, extra: &str) -> FullEnv {
        Self::start_edited(edit, identity, extra, |cfg, _| cfg).await
    }

    /// [`FullEnv::start_full`], with `edit_cfg` applied last to the whole config text, given the
    /// sample upstream's address (to change the routes, or give the upstream more endpoints).
    pub async fn start_edited(
        edit: impl FnOnce(&std::path::Path),
        identity: &str,
        extra: &str,
        edit_cfg: impl FnOnce(String, SocketAddr) -> String,
    ) -> FullEnv {
        Self::start_custom(|b| b, edit, identity, extra, edit_cfg).await
    }

    /// [`FullEnv::start_edited`], with the sample upstream's builder adjusted by `upstream`.
    pub async fn start_custom(
        upstream: impl FnOnce(SampleUpstreamBuilder) -> SampleUpstreamBuilder,
        edit: impl FnOnce(&std::path::Path),
        identity: &str,
        extra: &str,
        edit_cfg: impl FnOnce(String, SocketAddr) -> String,
    ) -> FullEnv {
        let pki = TestPki::new();
        let upstream = upstream(phigate_test_support::upstream_builder(&pki))
            .bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let dir = pki.dir();
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        phigate::demo::personas::issue(dir, &pki.client.thumbprint(), now).unwrap();
        phigate::demo::policies::write(&dir.join("policies")).unwrap();
        edit(&dir.join("policies"));
        phigate_audit::generate_signing_key(&dir.join("audit.key")).unwrap();
        // Debug builds of regorus on a busy 2-core CI machine: the evaluation time limit is not
        // what these tests measure (plugins/policy tests it), so it is generous here.
        let cfg = format!(
            "{}identity:\n  issuers:\n    - issuer: {}\n      audiences: [{}]\n      jwks_path: issuer/jwks.json\n\
             \x20     algorithms: [ES256]\n      claims: {{ tenant: tenant, roles: roles }}\n{identity}\
             policy:\n  dir: policies\n  data_dir: policies/data\n  max_eval_ms: 2000\n\
             audit:\n  dir: audit\n  signing_key_path: audit.key\n  max_wait_ms: 2000\n{extra}",
            yaml(&pki, upstream.addr, "optional"),
            phigate::demo::personas::ISSUER,
            phigate::demo::personas::AUDIENCE,
        );
        let gw = TestGateway::start_yaml(&edit_cfg(cfg, upstream.addr), dir, Vec::new());
        FullEnv { pki, upstream, gw }
    }

    /// The persona's token.
    pub fn token(&self, persona: &str) -> String {
        std::fs::read_to_string(self.pki.dir().join("tokens").join(format!("{persona}.jwt"))).unwrap()
    }

    /// GET as a persona; returns (status, error code or "", body text).
    pub async fn get_as(&self, persona: &str, path: &str) -> (u16, String, String) {
        let res = self
            .pki
            .public_client()
            .get(&self.gw.url(path))
            .bearer(&self.token(persona))
            .send()
            .await
            .unwrap();
        let code = serde_json::from_slice::<serde_json::Value>(&res.body)
            .ok()
            .map(|_| error_code(&res.body))
            .unwrap_or_default();
        (res.status.as_u16(), code, res.text())
    }

    /// GET as a persona claiming emergency access with `reason` (`X-Break-Glass-Reason`).
    pub async fn get_break_glass(&self, persona: &str, path: &str, reason: &str) -> TestResponse {
        self.pki
            .public_client()
            .get(&self.gw.url(path))
            .bearer(&self.token(persona))
            .header("x-break-glass-reason", reason)
            .send()
            .await
            .unwrap()
    }

    /// Every audit record written so far.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        audit_records(&self.pki.dir().join("audit"))
    }

    /// Waits (bounded) until the audit trail holds a record of request `rid`. A request a stage
    /// refused has its `denied` record durable before the answer; one the core refused before
    /// the stages, or whose upstream exchange failed, is recorded once its response has gone,
    /// so a test that stops the gateway right after that response could stop it before.
    pub async fn wait_audited(&self, rid: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        // The raw text, not parsed records: a line may be read while it is being appended.
        let needle = format!("\"request_id\":\"{rid}\"");
        let dir = self.pki.dir().join("audit");
        let written = || {
            std::fs::read_dir(&dir).into_iter().flatten().flatten().any(|e| {
                e.file_name().to_string_lossy().starts_with("seg-")
                    && std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(&needle))
            })
        };
        while !written() {
            assert!(std::time::Instant::now() < deadline, "no audit record of {rid} after 20 s");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl FullEnv {
    /// Waits (bounded) until the audit trail holds a record matching `want`, and returns the
    /// first. Changes (policy revisions, certificates) are recorded by a background task after
    /// they took effect, so a test waits for the record as an auditor's tail would.
    pub async fn wait_record(&self, want: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let dir = self.pki.dir().join("audit");
        loop {
            if let Some(found) = complete_records(&dir).into_iter().find(|r| want(r)) {
                return found;
            }
            assert!(std::time::Instant::now() < deadline, "no matching audit record after 20 s");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until the policy stage's file watcher is established (`/readyz` says
    /// `watching`): a file written before it would not be seen.
    pub async fn wait_policy_watching(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !admin_get(self.gw.admin, "/readyz").await.contains("; watching") {
            assert!(std::time::Instant::now() < deadline, "the policy watcher did not start in 20 s");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// The complete lines of the segments in `dir`, parsed (a line being appended is skipped).
fn complete_records(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("seg-")))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    segments.sort();
    segments
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|text| {
            let complete = text.rfind('\n').map_or("", |end| &text[..end]).to_owned();
            complete.lines().filter_map(|l| serde_json::from_str(l).ok()).collect::<Vec<_>>()
        })
        .collect()
}

/// The exfil alert lines (`alerts/exfil.jsonl`) once at least `n` are on disk. The writer is a
/// background task, so this waits for its effect (bounded), as a SIEM tailing the file would.
pub async fn exfil_alerts(env: &FullEnv, n: usize) -> Vec<serde_json::Value> {
    let path = env.pki.dir().join("alerts").join("exfil.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(std::time::Instant::now() < deadline, "{} alert lines after 20 s, expected {n}", lines.len());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Every audit record in the segments of an audit directory, in order.
pub fn audit_records(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "jsonl")
                && p.file_name().unwrap().to_string_lossy().starts_with("seg-")
        })
        .collect();
    segments.sort();
    segments
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}
