//! The tenant a request addresses, named by its route (`routes[].tenant`): a route that serves
//! one tenant, a tenant subdomain (`acme.fhir.example.com`), or a header. The stages see it as
//! `ctx.tenant` (policy input `request.tenant`); the shipped policy refuses a principal of
//! another tenant with 403 `tenant_mismatch`, and the audit record names the tenant addressed.
//! Without `tenant:` the principal's own tenant stands in, and a request can reach another
//! tenant's data only through patients, which the policy checks against their tenant.

use http::{header, HeaderMap, HeaderName};
use phigate_plugin::{Denial, ErrorCode, TenantId};
use schemars::JsonSchema;
use serde::Deserialize;

/// Longest tenant id taken from a request.
const MAX_TENANT_BYTES: usize = 64;

/// How a route names the tenant its requests address: exactly one of the keys.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteTenantConfig {
    /// The route serves this one tenant (`/tenant-a/fhir` in front of tenant A's FHIR server).
    #[serde(default)]
    pub fixed: Option<String>,
    /// The tenant is the host's first label before this suffix: `.fhir.example.com` makes
    /// `acme.fhir.example.com` address `acme`. A host without the suffix, or with more than one
    /// label before it, is refused with 400 `bad_request` (the `Host`, or HTTP/2's `:authority`,
    /// without its port, matched without regard to case; the tenant is the label in lowercase,
    /// so tenant ids compared with it should be lowercase too).
    #[serde(default)]
    pub host_suffix: Option<String>,
    /// The tenant is this request header's value (for example `x-tenant-id`); a request without
    /// it, with it twice, or with a value that is not a tenant id is refused with 400
    /// `bad_request`. The header is forwarded as sent.
    #[serde(default)]
    pub header: Option<String>,
}

/// A tenant id: 1 to 64 of `A-Z a-z 0-9 . _ -`.
fn is_tenant_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_TENANT_BYTES
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl RouteTenantConfig {
    /// What is wrong with the setting (key relative to `tenant`, message); never the value.
    pub fn problems(&self) -> Vec<(String, &'static str)> {
        let bad = |key: &str, message| vec![(key.to_owned(), message)];
        match (&self.fixed, &self.host_suffix, &self.header) {
            (Some(t), None, None) if !is_tenant_id(t) => {
                bad("fixed", "must be a tenant id: 1 to 64 of A-Z a-z 0-9 . _ -")
            }
            (None, Some(s), None) => {
                let labels_ok = s.len() > 1
                    && s.len() <= 253
                    && s[1..].split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                match (s.starts_with('.'), labels_ok) {
                    (false, _) => bad("host_suffix", "must start with `.` (like `.fhir.example.com`)"),
                    (true, false) => bad("host_suffix", "is not a DNS name after the leading `.`"),
                    _ => Vec::new(),
                }
            }
            (None, None, Some(h)) => match HeaderName::from_bytes(h.as_bytes()) {
                Err(_) => bad("header", "is not a valid header name"),
                Ok(n) if [header::AUTHORIZATION, header::HOST, header::COOKIE].contains(&n) => {
                    bad("header", "must be a header of its own, not `authorization`, `host` or `cookie`")
                }
                Ok(_) => Vec::new(),
            },
            (Some(_), None, None) => Vec::new(),
            _ => bad("fixed", "set exactly one of `fixed`, `host_suffix` and `header`"),
        }
    }
}

/// A route's tenant source, ready for requests.
#[derive(Debug, Clone)]
pub enum RouteTenant {
    /// One tenant for every request.
    Fixed(TenantId),
    /// The host label before this (lowercase) suffix.
    HostSuffix(String),
    /// This header's value.
    Header(HeaderName),
}

impl RouteTenant {
    /// From a validated setting (`None` when it was not validated first).
    pub fn build(cfg: &RouteTenantConfig) -> Option<RouteTenant> {
        if !cfg.problems().is_empty() {
            return None;
        }
        Some(match (&cfg.fixed, &cfg.host_suffix, &cfg.header) {
            (Some(t), _, _) => RouteTenant::Fixed(TenantId::new(t.as_str())),
            (_, Some(s), _) => RouteTenant::HostSuffix(s.to_ascii_lowercase()),
            (_, _, Some(h)) => RouteTenant::Header(HeaderName::from_bytes(h.as_bytes()).ok()?),
            _ => return None,
        })
    }

    /// The tenant `headers` address (`Host` already set from `:authority` for HTTP/2).
    ///
    /// # Errors
    /// 400 `bad_request` when the host or header names no tenant.
    pub fn of(&self, headers: &HeaderMap) -> Result<TenantId, Denial> {
        let refuse = |why: &'static str| Denial::new(ErrorCode::BadRequest).with_cause(why);
        match self {
            RouteTenant::Fixed(t) => Ok(t.clone()),
            RouteTenant::HostSuffix(suffix) => {
                let host = single(headers, &header::HOST)
                    .ok_or_else(|| refuse("no single Host to name the tenant"))?;
                let name = strip_port(host).to_ascii_lowercase();
                let label = name
                    .strip_suffix(suffix.as_str())
                    .ok_or_else(|| refuse("host outside the tenant domain"))?;
                if label.contains('.') || !is_tenant_id(label) {
                    return Err(refuse("host names no tenant"));
                }
                Ok(TenantId::new(label))
            }
            RouteTenant::Header(name) => {
                let value =
                    single(headers, name).ok_or_else(|| refuse("tenant header missing or repeated"))?;
                if !is_tenant_id(value) {
                    return Err(refuse("tenant header is not a tenant id"));
                }
                Ok(TenantId::new(value))
            }
        }
    }
}

/// The value of a header sent exactly once, as text.
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    crate::request::single_value(headers, name).and_then(|v| v.to_str().ok())
}

/// `host[:port]` without the port (an IPv6 literal names no tenant anyway).
fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_str(v).unwrap_or_else(|_| unreachable!()));
        }
        h
    }

    fn tenant(cfg: &str, pairs: &[(&'static str, &str)]) -> Result<String, ErrorCode> {
        let cfg: RouteTenantConfig = serde_yaml::from_str(cfg).unwrap_or_else(|e| panic!("{e}"));
        let rt = RouteTenant::build(&cfg).unwrap_or_else(|| panic!("invalid"));
        rt.of(&headers(pairs)).map(|t| t.as_str().to_owned()).map_err(|d| d.code)
    }

    #[test]
    fn each_source_names_the_tenant() {
        assert_eq!(tenant("fixed: tenant-a", &[]), Ok("tenant-a".into()));
        let host = "host_suffix: .FHIR.example.com";
        assert_eq!(tenant(host, &[("host", "acme.fhir.example.com")]), Ok("acme".into()));
        assert_eq!(tenant(host, &[("host", "Acme.FHIR.example.com:8443")]), Ok("acme".into()));
        assert_eq!(tenant("header: x-tenant-id", &[("x-tenant-id", "tenant-b")]), Ok("tenant-b".into()));
    }

    #[test]
    fn a_request_that_names_no_tenant_is_400() {
        let host = "host_suffix: .fhir.example.com";
        for h in [
            "fhir.example.com",
            "a.b.fhir.example.com",
            "acme.fhir.example.com.evil",
            "evil.com",
            "x_y!.fhir.example.com",
        ] {
            assert_eq!(tenant(host, &[("host", h)]), Err(ErrorCode::BadRequest), "{h}");
        }
        assert_eq!(tenant(host, &[]), Err(ErrorCode::BadRequest));
        let hdr = "header: x-tenant-id";
        assert_eq!(tenant(hdr, &[]), Err(ErrorCode::BadRequest));
        assert_eq!(tenant(hdr, &[("x-tenant-id", "a"), ("x-tenant-id", "b")]), Err(ErrorCode::BadRequest));
        assert_eq!(tenant(hdr, &[("x-tenant-id", "a b")]), Err(ErrorCode::BadRequest));
        assert_eq!(tenant(hdr, &[("x-tenant-id", &"t".repeat(65))]), Err(ErrorCode::BadRequest));
    }

    #[test]
    fn settings_are_checked() {
        let problems = |y: &str| {
            let cfg: RouteTenantConfig = serde_yaml::from_str(y).unwrap_or_else(|e| panic!("{e}"));
            cfg.problems().into_iter().map(|(k, _)| k).collect::<Vec<_>>()
        };
        assert_eq!(problems("fixed: 'a b'"), ["fixed"]);
        assert_eq!(problems("host_suffix: fhir.example.com"), ["host_suffix"]);
        assert_eq!(problems("host_suffix: .fhir..com"), ["host_suffix"]);
        assert_eq!(problems("header: authorization"), ["header"]);
        assert_eq!(problems("header: 'bad header'"), ["header"]);
        assert!(problems("header: x-tenant-id").is_empty());
        assert_eq!(problems("{ fixed: a, header: b }"), ["fixed"]);
        assert_eq!(problems("{}"), ["fixed"]);
        assert!(serde_yaml::from_str::<RouteTenantConfig>("{ fixd: a }").is_err());
    }
}
