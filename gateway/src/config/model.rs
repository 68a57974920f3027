//! The gateway's YAML config, as typed structs. Every field's `///` doc is the config reference
//! (`config/REFERENCE.md` is generated from these docs).

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

use super::UpstreamConfig;

/// The whole gateway config file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Public listeners. They always serve TLS 1.3; plain HTTP is never served to clients.
    pub listeners: Vec<ListenerConfig>,
    /// The admin service (`/healthz`, `/readyz`, `/metrics`).
    #[serde(default)]
    pub admin: AdminConfig,
    /// Process settings: worker threads, shutdown and upgrade.
    #[serde(default)]
    pub server: ServerConfig,
    /// Request size limits, enforced before any stage runs.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// CIDRs of proxies in front of the gateway whose `X-Forwarded-For` chain is kept (and extended).
    /// From any other peer the inbound chain is discarded. Behind a trusted proxy the client's
    /// address (rate limits, audit `source_ip`, alerts) is the nearest address of the chain that is
    /// not itself a trusted proxy. Default: none.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Named upstream services.
    pub upstreams: Vec<UpstreamConfig>,
    /// Routes: path prefix → upstream. The longest matching prefix wins; no match is 404
    /// `route_not_found`.
    pub routes: Vec<RouteConfig>,
    /// Identity (stage `identity`, first): bearer JWTs from trusted issuers become a typed
    /// principal; MFA, freshness, certificate binding and idle timeout are enforced.
    /// Absent: no identity stage (requests are anonymous; not for PHI routes).
    #[serde(default)]
    pub identity: Option<phigate_identity::IdentityConfig>,
    /// Rate limits (stage `ratelimit`, after identity, before policy): GCRA limits keyed by
    /// principal, tenant, client IP and/or route, in memory or shared by every replica through
    /// Redis; over a limit is 429 `rate_limited` with `Retry-After`. Absent: no rate limits.
    #[serde(default)]
    pub rate_limits: Option<phigate_ratelimit::RateLimitConfig>,
    /// Patient-level authorization (stage `policy`, after identity): Rego policies decide over the
    /// principal, the classified FHIR request and the policy data; obligations narrow searches
    /// and verify responses. Absent: no policy stage.
    #[serde(default)]
    pub policy: Option<phigate_policy::PolicyConfig>,
    /// Exfiltration watch (stage `exfil`, after policy): per-principal sliding windows over the
    /// patients touched, pages fetched, ids probed and denials; findings become alert lines for
    /// the SOC, and a rule with `action: block` suspends the principal (403 `principal_blocked`).
    /// Policy-requested alerts (break-glass) go to the same file. Absent: no exfil stage.
    #[serde(default)]
    pub exfil: Option<phigate_exfil::ExfilConfig>,
    /// Identity assertions (stage `assertion`, after exfil, before audit): upstreams receive a
    /// short-lived JWS signed by the gateway naming the verified caller (any client-sent value of
    /// its header is removed); the JWKS to verify it is served on the admin port at
    /// `/.well-known/phigate/jwks.json`. Absent: no assertions.
    #[serde(default)]
    pub assertion: Option<phigate_assertion::AssertionConfig>,
    /// The tamper-evident audit trail (stage `audit`, always last): every request is recorded
    /// durably before anything is forwarded. Absent: no audit stage (not for PHI routes).
    #[serde(default)]
    pub audit: Option<phigate_audit::AuditConfig>,
    /// FHIR Bulk Data export through the gateway: the kick-off's status URL and the manifest's
    /// file URLs reach the client sealed to the principal that started the export (any replica
    /// with the key opens them; nothing is stored), so a leaked URL is useless to anyone else,
    /// and each file is checked line by line like any response (tenant, patients, security
    /// labels). Needs the `policy` section, which enforces who may use a URL. Absent: export
    /// status and file URLs pass as the upstream wrote them, and the gateway cannot check them.
    #[serde(default)]
    pub bulk_export: Option<crate::bulk::BulkExportConfig>,
    /// Distributed tracing: a span per request (and per stage and upstream exchange) exported
    /// over OTLP/HTTP; W3C `traceparent` continued from clients and sent upstream. Spans carry
    /// no PHI (no path, query, subject or client address). Absent: no tracing.
    #[serde(default)]
    pub tracing: Option<crate::telemetry::TracingConfig>,
}

/// A public TLS listener.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// A unique name (used in logs and metrics).
    pub name: String,
    /// Socket address to listen on, like `0.0.0.0:8443` or `[::1]:8443`.
    pub address: String,
    /// TLS settings. TLS 1.3 only.
    pub tls: ListenerTlsConfig,
    /// Offer HTTP/2 via ALPN (HTTP/1.1 is always offered). Default: true.
    #[serde(default = "default_true")]
    pub http2: bool,
}

/// TLS settings of a listener.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// Server certificate chain (PEM). Reloaded without dropping connections when the file changes
    /// or on SIGHUP.
    pub cert_path: PathBuf,
    /// Server private key (PEM: PKCS#8, SEC1 or PKCS#1). Reloaded together with `cert_path`.
    pub key_path: PathBuf,
    /// Client certificates: `none` (never asked), `optional` (verified when sent), `required` (the
    /// handshake fails without a valid one). Default: `none`.
    #[serde(default)]
    pub client_cert: ClientCertMode,
    /// CA bundle (PEM) that client certificates must chain to. Required unless `client_cert` is
    /// `none`.
    #[serde(default)]
    pub client_ca_path: Option<PathBuf>,
}

/// Whether a listener asks for client certificates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientCertMode {
    /// Never ask for a client certificate.
    #[default]
    None,
    /// Ask; verify it when sent; accept connections without one.
    Optional,
    /// Require a valid client certificate in the handshake.
    Required,
}

/// The admin service.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin service (plain HTTP: keep it on loopback or a private interface).
    /// Default: `127.0.0.1:9901`.
    #[serde(default = "default_admin_address")]
    pub address: String,
    /// File holding the bearer token (at least 32 printable characters) that operator actions
    /// require: `GET /exfil/blocks` and `POST /exfil/unblock` (relative to the config file).
    /// Absent: those actions answer 403 `admin_actions_disabled`; health, readiness and metrics
    /// need no token.
    #[serde(default)]
    pub token_path: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { address: default_admin_address(), token_path: None }
    }
}

/// Process settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Worker threads of the proxy service. Default: 2.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// On SIGTERM, keep serving in-flight requests for up to this long before stopping.
    /// Default: 10.
    #[serde(default = "default_grace_period_secs")]
    pub grace_period_secs: u64,
    /// After the grace period, how long services get to shut down. Default: 5.
    #[serde(default = "default_graceful_shutdown_timeout_secs")]
    pub graceful_shutdown_timeout_secs: u64,
    /// Unix socket used to hand listening sockets to a new process on SIGQUIT (zero-downtime
    /// upgrade). Default: `/tmp/phigate-upgrade.sock`.
    #[serde(default = "default_upgrade_sock")]
    pub upgrade_sock: PathBuf,
    /// PID file. Default: `/tmp/phigate.pid`.
    #[serde(default = "default_pid_file")]
    pub pid_file: PathBuf,
    /// Compress responses for clients that accept it (gzip, Brotli or zstd, as the client's
    /// `Accept-Encoding` prefers), at this level: 1 (fastest) to 9, 0 off. The gateway asks
    /// upstreams for uncompressed bodies (it reads what it verifies), so without this clients get
    /// them uncompressed; compression costs gateway CPU (a 50 KB search result at level 1: about
    /// a tenth of a millisecond). Default: 0.
    #[serde(default)]
    pub response_compression_level: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            threads: default_threads(),
            grace_period_secs: default_grace_period_secs(),
            graceful_shutdown_timeout_secs: default_graceful_shutdown_timeout_secs(),
            upgrade_sock: default_upgrade_sock(),
            pid_file: default_pid_file(),
            response_compression_level: 0,
        }
    }
}

/// Request size limits.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Longest request target (path and query) accepted, in bytes; longer is 414 `uri_too_long`.
    /// Default: 8192.
    #[serde(default = "default_max_target_bytes")]
    pub max_target_bytes: usize,
    /// Largest total size of request headers, in bytes; larger is 431 `headers_too_large`.
    /// Default: 32768.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Largest request body the gateway buffers to inspect (FHIR batch Bundles, POST `_search`),
    /// in bytes; larger is 413 `body_too_large`. At most 65536. Default: 65536.
    #[serde(default = "default_max_body_inspect_bytes")]
    pub max_body_inspect_bytes: usize,
    /// Largest upstream response body buffered when a stage must inspect it before it is sent
    /// (patient verification), in bytes; a larger one is refused. Default: 4194304.
    #[serde(default = "default_max_response_buffer_bytes")]
    pub max_response_buffer_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_target_bytes: default_max_target_bytes(),
            max_header_bytes: default_max_header_bytes(),
            max_body_inspect_bytes: default_max_body_inspect_bytes(),
            max_response_buffer_bytes: default_max_response_buffer_bytes(),
        }
    }
}

/// A route: requests whose path starts with `path_prefix` go to `upstream`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// A unique name (used in logs, metrics and per-route stage settings).
    pub name: String,
    /// Path prefix, starting with `/`, matched on whole segments (`/fhir` matches `/fhir` and
    /// `/fhir/Patient`, not `/fhirx`).
    pub path_prefix: String,
    /// Name of the upstream that serves this route.
    pub upstream: String,
    /// The route is a FHIR R4 base: requests are classified by the FHIR REST grammar, and errors
    /// are answered as `OperationOutcome`. Default: false.
    #[serde(default)]
    pub fhir: bool,
    /// Replace the matched prefix with this one when forwarding (for example `/` or `/baseR4`).
    /// The upstream is told the public prefix in `X-Forwarded-Prefix` (for servers that build
    /// their links from forwarding headers, such as HAPI with `ApacheProxyAddressStrategy`), and
    /// a `Location` or `Content-Location` it answers under its prefix (on the client's host or
    /// its own name) is mapped back under the route's, on the client's host (as nginx's
    /// `proxy_redirect default`; on every route), as are the paging links of the Bundles the
    /// gateway reads whole. Default: forward the path unchanged.
    #[serde(default)]
    pub upstream_path_prefix: Option<String>,
    /// Cross-origin access for browser apps (SMART on FHIR apps in a browser): the gateway
    /// answers preflights itself and puts its CORS headers on every response of the route.
    /// Absent: no CORS (an `OPTIONS` goes through the stages like any request, and upstream
    /// CORS headers pass through unchanged).
    #[serde(default)]
    pub cors: Option<crate::cors::CorsConfig>,
    /// The tenant the route's requests address: `{ fixed: tenant-a }` (the route serves one
    /// tenant), `{ host_suffix: .fhir.example.com }` (the tenant subdomain:
    /// `acme.fhir.example.com` addresses `acme`) or `{ header: x-tenant-id }`. Policies see it
    /// as `request.tenant`, and the shipped ones refuse a principal of another tenant with 403
    /// `tenant_mismatch` before anything is forwarded; the audit record names it. A request
    /// whose host or header names no tenant is refused with 400 `bad_request`. Absent: the
    /// principal's own tenant (requests then reach another tenant only through its patients,
    /// which the policy checks).
    #[serde(default)]
    pub tenant: Option<crate::tenant::RouteTenantConfig>,
}

fn default_true() -> bool {
    true
}
fn default_admin_address() -> String {
    "127.0.0.1:9901".to_owned()
}
fn default_threads() -> usize {
    2
}
fn default_grace_period_secs() -> u64 {
    10
}
fn default_graceful_shutdown_timeout_secs() -> u64 {
    5
}
fn default_upgrade_sock() -> PathBuf {
    PathBuf::from("/tmp/phigate-upgrade.sock")
}
fn default_pid_file() -> PathBuf {
    PathBuf::from("/tmp/phigate.pid")
}
fn default_max_target_bytes() -> usize {
    8192
}
fn default_max_header_bytes() -> usize {
    32768
}
fn default_max_body_inspect_bytes() -> usize {
    65536
}
fn default_max_response_buffer_bytes() -> usize {
    4 * 1024 * 1024
}
