//! `phigate demo`: the embedded default a new user runs first. It generates a dev PKI, starts the
//! sample FHIR upstream (mTLS only, from the gateway's client certificate), writes the gateway
//! config (the committed `config/demo.yaml` with free ports filled in), `demo.json` and prints
//! ready-to-paste curl lines, then runs the gateway in the foreground until SIGINT or SIGTERM.
//! Nothing is downloaded.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;

use super::authz::DevAuthorizationServer;
use super::data::SampleData;
use super::pki::{DevPki, DevPkiPaths};
use super::upstream::{DedicatedUpstream, SampleUpstream};
use crate::config::{self, ValidateOptions};

/// The committed demo config; ports are replaced at start.
const DEMO_CONFIG: &str = include_str!("../../../config/demo.yaml");

/// What the demo is running, as written to `demo.json`.
struct Demo {
    dir: PathBuf,
    config_path: PathBuf,
    pki: DevPkiPaths,
    issued: super::personas::IssuedDemo,
    gateway: SocketAddr,
    admin: SocketAddr,
    upstream_url: String,
    data: std::sync::Arc<SampleData>,
    /// Kept for the life of the demo.
    authz: DevAuthorizationServer,
}

/// Runs the demo; returns only on a start-up failure (the gateway itself exits the process).
pub fn run_demo(dir: Option<PathBuf>, port: Option<u16>) -> ExitCode {
    match prepare(dir, port) {
        Ok((demo, upstream)) => {
            let loaded =
                match config::load_and_validate(&demo.config_path, ValidateOptions { check_files: true }) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("demo: the generated config is invalid (a bug):\n{e}");
                        return ExitCode::FAILURE;
                    }
                };
            let gateway = match crate::Gateway::builder(loaded).build() {
                Ok(g) => g,
                Err(e) => {
                    eprintln!("demo: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if let Err(e) = write_demo_json(&demo) {
                eprintln!("demo: cannot write demo.json: {e}");
                return ExitCode::FAILURE;
            }
            print_banner(&demo);
            // The upstream runs on its own runtime for the life of the process.
            let _upstream: DedicatedUpstream = upstream;
            gateway.run_forever()
        }
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn prepare(dir: Option<PathBuf>, port: Option<u16>) -> Result<(Demo, DedicatedUpstream), String> {
    let dir = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("phigate-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(dir.join("run")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dir = dir.canonicalize().map_err(|e| format!("{}: {e}", dir.display()))?;
    let pki = DevPki::generate().map_err(|e| e.to_string())?;
    let paths = pki.write_to(&dir.join("pki")).map_err(|e| e.to_string())?;
    let gateway: SocketAddr = ([127, 0, 0, 1], port.unwrap_or_else(free_port)).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let data = std::sync::Arc::new(SampleData::generate());
    let upstream = SampleUpstream::builder()
        .identity(&pki.upstream)
        .client_ca(&pki.internal_ca)
        .base_path("/")
        .public_base_url(&format!("https://localhost:{}/fhir", gateway.port()))
        .shared_data(data.clone())
        .record_capacity(0)
        .bind_on_own_runtime(([127, 0, 0, 1], 0).into(), 1)
        .map_err(|e| format!("sample upstream: {e}"))?;
    let upstream_addr = upstream.upstream().addr;
    let config_text = DEMO_CONFIG
        .replace("127.0.0.1:8443", &gateway.to_string())
        .replace("127.0.0.1:9901", &admin.to_string())
        .replace("127.0.0.1:9443", &upstream_addr.to_string());
    audit_keys(&dir)?;
    admin_token(&dir)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let issued = super::personas::issue(&dir, &pki.client.thumbprint(), now)?;
    let authz = authorization_server(&dir, &pki, &issued)?;
    let config_text = config_text.replace("127.0.0.1:9444", &authz.addr_text());
    super::policies::write(&dir.join("policies"))?;
    let config_path = dir.join("config.yaml");
    std::fs::write(&config_path, config_text).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let upstream_url = format!("https://{upstream_addr}");
    Ok((Demo { dir, config_path, pki: paths, issued, gateway, admin, upstream_url, data, authz }, upstream))
}

/// The dev authorization server for the opaque tokens `issued` holds: a certificate from the
/// internal CA for 127.0.0.1, and a fresh client secret in `introspection.secret` (the file the
/// demo config names).
fn authorization_server(
    dir: &Path,
    pki: &DevPki,
    issued: &super::personas::IssuedDemo,
) -> Result<DevAuthorizationServer, String> {
    let cert = pki.issue_server(super::pki::WhichCa::Internal, &["127.0.0.1"]).map_err(|e| e.to_string())?;
    let secret = hex::encode(rand::random::<[u8; 24]>());
    let path = dir.join("introspection.secret");
    std::fs::write(&path, &secret).map_err(|e| format!("{}: {e}", path.display()))?;
    DevAuthorizationServer::start(&cert, "phigate-demo", &secret, issued.opaque.clone())
}

/// The admin token operator actions need (`admin.token_path`): 32 random bytes, hex; kept
/// across demo runs in the same directory.
fn admin_token(dir: &Path) -> Result<(), String> {
    let path = dir.join("admin.token");
    if path.exists() {
        return Ok(());
    }
    let token: [u8; 32] = rand::random();
    std::fs::write(&path, hex::encode(token)).map_err(|e| format!("{}: {e}", path.display()))
}

/// The audit trail's Ed25519 signing key (and its public half, for `audit verify`), the HMAC
/// key for query values, and the identity assertion's Ed25519 key; kept across demo runs in the
/// same directory.
fn audit_keys(dir: &Path) -> Result<(), String> {
    // The identity assertion key is its own: a key signs for one purpose only.
    let assertion = dir.join("assertion.key");
    if !assertion.exists() {
        phigate_audit::generate_signing_key(&assertion).map_err(|e| e.to_string())?;
    }
    let signing = dir.join("audit-signing.key");
    if !signing.exists() {
        let public = phigate_audit::generate_signing_key(&signing).map_err(|e| e.to_string())?;
        phigate_audit::write_public_key(&dir.join("audit-signing.pub"), &public)
            .map_err(|e| e.to_string())?;
    }
    let hmac = dir.join("audit-hmac.key");
    if !hmac.exists() {
        phigate_audit::generate_hmac_key(&hmac).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(8443)
}

fn write_demo_json(demo: &Demo) -> std::io::Result<()> {
    let tenants: serde_json::Map<String, serde_json::Value> = demo
        .data
        .tenants()
        .iter()
        .map(|t| (t.id.clone(), json!({ "patients": t.patients.iter().map(|p| &p.id).collect::<Vec<_>>() })))
        .collect();
    let value = json!({
        "gateway_url": format!("https://localhost:{}", demo.gateway.port()),
        "fhir_base": format!("https://localhost:{}/fhir", demo.gateway.port()),
        "admin_url": format!("http://{}", demo.admin),
        "upstream_url": demo.upstream_url,
        "introspection_endpoint": demo.authz.endpoint(),
        "config_path": demo.config_path,
        "ca_cert": demo.pki.ca_cert,
        "client_cert": demo.pki.client_cert,
        "client_key": demo.pki.client_key,
        "audit_dir": demo.dir.join("audit"),
        "audit_public_key": demo.dir.join("audit-signing.pub"),
        "alerts_path": demo.dir.join("alerts").join("exfil.jsonl"),
        "tenants": tenants,
        "issuer": {
            "iss": demo.issued.issuer.issuer(),
            "jwks_path": demo.issued.jwks_path,
            "signing_key_path": demo.issued.signing_key_path,
            "kid": demo.issued.issuer.kid(),
            "alg": demo.issued.issuer.alg(),
        },
        "personas": demo.issued.personas,
    });
    let text = serde_json::to_string_pretty(&value).map_err(std::io::Error::other)?;
    std::fs::write(demo.dir.join("demo.json"), text)
}

/// Curl lines a user can paste (also what the demo test runs).
fn curl_lines(demo: &Demo) -> Vec<(String, String)> {
    let base = format!("https://localhost:{}/fhir", demo.gateway.port());
    let ca = demo.pki.ca_cert.display();
    let tokens = demo.dir.join("tokens");
    let bearer = |who: &str| format!("-H \"Authorization: Bearer $(cat {}/{who}.jwt)\"", tokens.display());
    vec![
        (
            "clinician_a reads a patient on her care team".into(),
            format!("curl -s --cacert {ca} {} {base}/Patient/a-p1", bearer("clinician_a")),
        ),
        (
            "clinician_a searches that patient's observations (paged)".into(),
            format!(
                "curl -s --cacert {ca} {} '{base}/Observation?patient=a-p1&_count=5'",
                bearer("clinician_a")
            ),
        ),
        (
            "A record labelled PSY is withheld from clinician_a: left out of her search, 403 when read".into(),
            format!(
                "curl -s --cacert {ca} {} '{base}/Condition?patient=a-p1'; echo; curl -s --cacert {ca} {} {base}/Condition/a-p1-cond-psy",
                bearer("clinician_a"),
                bearer("clinician_a")
            ),
        ),
        (
            "psychiatrist_a, cleared for PSY, reads it".into(),
            format!("curl -s --cacert {ca} {} {base}/Condition/a-p1-cond-psy", bearer("psychiatrist_a")),
        ),
        (
            "bulk_a (a backend service) starts a bulk export; the status URL it gets back is sealed to it: \
             poll it twice (in progress, then the manifest, whose file URLs are sealed too)"
                .into(),
            format!(
                "loc=$(curl -s -D - -o /dev/null --cacert {ca} {auth} -H 'Prefer: respond-async' \
                 '{base}/Patient/$export?_type=Patient,Observation' | tr -d '\\r' | sed -n 's/^content-location: //Ip'); \
                 curl -s --cacert {ca} {auth} \"$loc\"; curl -s --cacert {ca} {auth} \"$loc\"",
                auth = bearer("bulk_a")
            ),
        ),
        (
            "No token: 401 with a Bearer challenge".into(),
            format!("curl -si --cacert {ca} {base}/Patient/a-p1"),
        ),
        (
            "A SMART app discovers the server before it has a token: public, and nothing else is".into(),
            format!("curl -s --cacert {ca} {base}/.well-known/smart-configuration"),
        ),
        (
            "Password-only sign-in: 401 with the RFC 9470 step-up challenge".into(),
            format!("curl -si --cacert {ca} {} {base}/Patient/a-p5", bearer("nurse_nomfa")),
        ),
        (
            "A certificate-bound token works only with its client certificate".into(),
            format!(
                "curl -s --cacert {ca} --cert {} --key {} {} {base}/Patient/a-p1",
                demo.pki.client_cert.display(),
                demo.pki.client_key.display(),
                bearer("bound_client")
            ),
        ),
        (
            "An ambiguous path is refused (400)".into(),
            format!("curl -s --cacert {ca} '{base}/Patient/a-p1%2F..%2Fb-p1'"),
        ),
        (
            "er_doctor_a uses break-glass outside her care team: allowed, audited, alerted".into(),
            format!(
                "curl -s --cacert {ca} {} -H 'X-Break-Glass-Reason: unconscious patient in ED' {base}/Patient/a-p5; echo; tail -n 1 {}",
                bearer("er_doctor_a"),
                demo.dir.join("alerts").join("exfil.jsonl").display()
            ),
        ),
        (
            "dpop_app's token is bound to its own key (DPoP): each request carries a fresh proof".into(),
            format!(
                "curl -s --cacert {ca} -H \"Authorization: DPoP $(cat {}/dpop_app.jwt)\" \
                 -H \"DPoP: $(phigate demo proof --dir {} GET {base}/Patient/a-p1)\" {base}/Patient/a-p1",
                tokens.display(),
                demo.dir.display()
            ),
        ),
        (
            "clinician_a's opaque token (not a JWT): the gateway asks the demo's authorization server (RFC 7662)"
                .into(),
            format!(
                "curl -s --cacert {ca} -H \"Authorization: Bearer $(cat {}/{}.opaque)\" {base}/Patient/a-p1",
                tokens.display(),
                super::personas::OPAQUE_PERSONA
            ),
        ),
        ("Readiness and metrics".into(), format!("curl -s http://{}/readyz", demo.admin)),
        (
            "The keys upstreams verify the gateway's signed identity assertion with (x-phigate-assertion)"
                .into(),
            format!("curl -s http://{}/.well-known/phigate/jwks.json", demo.admin),
        ),
        (
            "SOC: the exfiltration watch's blocks in force (lift one with POST /exfil/unblock)".into(),
            format!(
                "curl -s -H \"Authorization: Bearer $(cat {})\" http://{}/exfil/blocks",
                demo.dir.join("admin.token").display(),
                demo.admin
            ),
        ),
        (
            "Verify the audit trail (hash chains and signed checkpoints)".into(),
            format!(
                "phigate audit verify {} --public-key {}",
                demo.dir.join("audit").display(),
                demo.dir.join("audit-signing.pub").display()
            ),
        ),
        (
            "Who touched patient a-p1 (accounting of disclosures, from the verified trail)".into(),
            format!(
                "phigate audit report {} --public-key {} --patient a-p1",
                demo.dir.join("audit").display(),
                demo.dir.join("audit-signing.pub").display()
            ),
        ),
    ]
}

fn print_banner(demo: &Demo) {
    println!("phigate demo: files in {}", demo.dir.display());
    println!("  gateway  https://localhost:{}   (TLS 1.3; FHIR base /fhir)", demo.gateway.port());
    println!("  admin    http://{}", demo.admin);
    println!("  upstream {} (mTLS: only the gateway's client certificate gets in)", demo.upstream_url);
    println!("  config   {}", demo.config_path.display());
    println!();
    for (what, line) in curl_lines(demo) {
        println!("# {what}\n{line}\n");
    }
    println!("Ctrl-C stops the demo.");
}

/// The demo's files under `dir`, for tests.
pub fn demo_json_path(dir: &Path) -> PathBuf {
    dir.join("demo.json")
}
