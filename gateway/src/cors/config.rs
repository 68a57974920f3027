//! The per-route `cors:` block and its validation (every problem at once, as key/message pairs
//! that the config validator locates at file and line).

use http::{HeaderName, Method};
use schemars::JsonSchema;
use serde::Deserialize;

use super::origin;

/// The longest preflight cache time accepted, in seconds. Browsers cap it lower anyway
/// (Chromium at 7200, Firefox at 86400); a longer value would only pretend to more.
pub const MAX_MAX_AGE_SECS: u32 = 86_400;

/// The methods the gateway forwards at all (others are 405 before routing).
const FORWARDED_METHODS: [Method; 6] =
    [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];

/// Cross-origin resource sharing (the Fetch standard's CORS protocol) for browser apps, such as
/// patient-facing SMART on FHIR apps, that call this route from another origin.
///
/// The gateway answers preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
/// itself, before identity and every stage: they are never forwarded, need no token and are not
/// audited (they touch no data). Every response to a request from an allowed origin, the
/// upstream's and the gateway's own errors alike (401, 403, 413, 429, 503, ...), carries
/// `Access-Control-Allow-Origin`, so the app can read why it was refused. `Access-Control-*`
/// headers from the upstream are always removed on this route: the gateway's policy is the only
/// one. A request from an origin not listed is not refused (non-browser clients may send
/// `Origin`, and CORS is not an access control: the token is); it gets no CORS headers, so a
/// browser does not let the page read the answer.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed to call the route: exact `scheme://host[:port]` values as browsers send
    /// them (`https://app.example`, `https://app.example:8443`), with no path and never `null`.
    /// At load the host is lowercased and a default port (`:443`, `:80`) dropped, the form
    /// browsers send; a request's `Origin` must then match one exactly. A `*` as the whole first
    /// label (`https://*.apps.example`) allows every subdomain, at any depth, of the name after
    /// it, with that scheme and port (not the name itself: list it too); at least two labels must
    /// follow it (`https://*.example` is refused), never an IP address. Every host under it can
    /// then read responses with the user's token: use it only for a domain whose every
    /// subdomain you control.
    /// Plain `http` is accepted only for loopback development origins (`http://localhost:3000`):
    /// a page served over plain HTTP can be altered in transit to misuse the user's token. A
    /// single `*` allows any origin (answered with `Access-Control-Allow-Origin: *`); it cannot
    /// be combined with `allow_credentials`. Required, at least one.
    pub allowed_origins: Vec<String>,
    /// Methods a preflight may ask for (`Access-Control-Allow-Methods`), uppercase, among `GET`,
    /// `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE`. Default: all six.
    #[serde(default = "default_allowed_methods")]
    pub allowed_methods: Vec<String>,
    /// Request headers a preflight may ask for (`Access-Control-Allow-Headers`), matched without
    /// regard to case. Listed explicitly (no `*`). Default: `accept`, `authorization`,
    /// `content-type`, `dpop`, `if-match`, `if-modified-since`, `if-none-exist`,
    /// `if-none-match`, `prefer`, `traceparent`, `tracestate`, `x-break-glass-reason`.
    #[serde(default = "default_allowed_headers")]
    pub allowed_headers: Vec<String>,
    /// Response headers the app's script may read beyond the always-readable ones
    /// (`Access-Control-Expose-Headers`). Default: `content-location`, `dpop-nonce`, `etag`,
    /// `last-modified`, `location`, `ratelimit`, `ratelimit-policy`, `retry-after`,
    /// `www-authenticate`, `x-request-id`.
    #[serde(default = "default_expose_headers")]
    pub expose_headers: Vec<String>,
    /// How long a browser may cache a preflight answer (`Access-Control-Max-Age`), in seconds.
    /// At most 86400. Default: 600.
    #[serde(default = "default_max_age_secs")]
    pub max_age_secs: u32,
    /// Send `Access-Control-Allow-Credentials: true`, letting the page send cookies or a TLS
    /// client certificate (`credentials: "include"`). Bearer tokens in `Authorization` do not
    /// need it, so SMART apps usually leave it off. Not allowed with the `*` origin.
    /// Default: false.
    #[serde(default)]
    pub allow_credentials: bool,
}

fn default_allowed_methods() -> Vec<String> {
    FORWARDED_METHODS.iter().map(|m| m.as_str().to_owned()).collect()
}

fn default_allowed_headers() -> Vec<String> {
    [
        "accept",
        "authorization",
        "content-type",
        "dpop",
        "if-match",
        "if-modified-since",
        "if-none-exist",
        "if-none-match",
        "prefer",
        "traceparent",
        "tracestate",
        "x-break-glass-reason",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn default_expose_headers() -> Vec<String> {
    [
        "content-location",
        "dpop-nonce",
        "etag",
        "last-modified",
        "location",
        "ratelimit",
        "ratelimit-policy",
        "retry-after",
        "www-authenticate",
        "x-request-id",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn default_max_age_secs() -> u32 {
    600
}

impl CorsConfig {
    /// What is wrong with the block, as `(key, message)` pairs (keys relative to the block).
    /// Messages never repeat the configured value.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.origin_problems(&mut out);
        if self.allowed_methods.is_empty() {
            out.push(("allowed_methods".into(), "at least one method is required".into()));
        }
        for (i, m) in self.allowed_methods.iter().enumerate() {
            if parse_method(m).is_none() {
                out.push((
                    format!("allowed_methods[{i}]"),
                    "not one of `GET`, `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE` (uppercase)".into(),
                ));
            }
        }
        for (field, names) in
            [("allowed_headers", &self.allowed_headers), ("expose_headers", &self.expose_headers)]
        {
            for (i, name) in names.iter().enumerate() {
                if let Some(why) = header_name_problem(name) {
                    out.push((format!("{field}[{i}]"), why.into()));
                }
            }
        }
        if self.max_age_secs > MAX_MAX_AGE_SECS {
            out.push(("max_age_secs".into(), format!("must be at most {MAX_MAX_AGE_SECS}")));
        }
        out
    }

    fn origin_problems(&self, out: &mut Vec<(String, String)>) {
        if self.allowed_origins.is_empty() {
            out.push(("allowed_origins".into(), "at least one origin is required".into()));
        }
        let any = self.allowed_origins.iter().any(|o| o == "*");
        if any && self.allowed_origins.len() > 1 {
            out.push(("allowed_origins".into(), "`*` must be the only entry when present".into()));
        }
        // Fetch refuses `Access-Control-Allow-Origin: *` on credentialed requests: the pair
        // would be a policy that silently never works, or (if "fixed" by reflecting any origin)
        // one that lets every site act with the user's cookies and certificate.
        if any && self.allow_credentials {
            out.push((
                "allow_credentials".into(),
                "cannot be true with the `*` origin: list the allowed origins".into(),
            ));
        }
        for (i, text) in self.allowed_origins.iter().enumerate() {
            if text == "*" {
                continue;
            }
            if let Err(why) = origin::allowed(text) {
                out.push((format!("allowed_origins[{i}]"), why.into()));
            }
        }
    }
}

/// A method the gateway forwards, written in uppercase.
pub(super) fn parse_method(text: &str) -> Option<Method> {
    FORWARDED_METHODS.iter().find(|m| m.as_str() == text).cloned()
}

fn header_name_problem(name: &str) -> Option<&'static str> {
    if name == "*" {
        return Some("`*` is not supported: list the header names");
    }
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(_) => None,
        Err(_) => Some("not a valid header name"),
    }
}
