//! CORS (the Fetch standard's cross-origin protocol) for browser apps, per route, in the gateway
//! core: it must run before identity (a preflight carries no token) and decorate the gateway's own
//! error responses, which no stage can.
//!
//! ```text
//! admit: route found, route has `cors:`
//!   OPTIONS + Origin + Access-Control-Request-Method   → preflight: 204 with Access-Control-Allow-*
//!                                                         or 403 `cors_not_allowed`; never forwarded,
//!                                                         no stage runs, not audited (no data touched)
//!   anything else                                      → CorsState kept in the proxy context
//! every response on the route (upstream, error, local) → upstream Access-Control-* removed,
//!                                                         Vary: Origin, and for an allowed Origin
//!                                                         Access-Control-Allow-Origin/-Expose-Headers
//!                                                         (/-Allow-Credentials when configured)
//! ```
//!
//! A request from an origin not listed is forwarded like any other and answered without CORS
//! headers, so a browser withholds the answer from the page. Refusing it would add nothing: CORS
//! protects the browser user's ambient credentials, and the gateway authenticates only by bearer
//! token, which a foreign page does not have. Non-browser clients may send `Origin` too.
//!
//! Header values are joined and parsed once, when the policy is built; a preflight costs a
//! byte comparison per allowed origin, method and header, and the response head.

mod config;
mod origin;
mod respond;

use std::sync::Arc;

use http::{header, HeaderMap, HeaderName, HeaderValue, Method};

pub use config::{CorsConfig, MAX_MAX_AGE_SECS};
pub use respond::{decorate, preflight_response, PREFLIGHT_VARY};

/// A route's CORS policy, built once from its validated `cors:` block.
#[derive(Debug)]
pub struct CorsPolicy {
    /// Allowed origins (exact, canonical; or subdomain wildcards); `None` for `*`.
    origins: Option<Vec<origin::Allowed>>,
    methods: Vec<Method>,
    headers: Vec<HeaderName>,
    allow_methods: HeaderValue,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: HeaderValue,
    credentials: bool,
}

/// The block was not validated first (validation reports the same problems with file and line).
#[derive(Debug, thiserror::Error)]
#[error("cors.{key}: {message}")]
pub struct CorsConfigError {
    /// The key, relative to the `cors:` block.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl CorsPolicy {
    /// Builds the runtime policy.
    ///
    /// # Errors
    /// The first of [`CorsConfig::problems`].
    pub fn build(cfg: &CorsConfig) -> Result<CorsPolicy, CorsConfigError> {
        if let Some((key, message)) = cfg.problems().into_iter().next() {
            return Err(CorsConfigError { key, message });
        }
        let invalid = |key: &str| CorsConfigError { key: key.into(), message: "invalid".into() };
        let origins = match cfg.allowed_origins.iter().any(|o| o == "*") {
            true => None,
            false => Some(
                cfg.allowed_origins
                    .iter()
                    .map(|o| origin::allowed(o))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| invalid("allowed_origins"))?,
            ),
        };
        let methods: Vec<Method> =
            cfg.allowed_methods.iter().filter_map(|m| config::parse_method(m)).collect();
        let names = |list: &[String], key: &str| {
            list.iter()
                .map(|n| HeaderName::from_bytes(n.as_bytes()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| invalid(key))
        };
        let headers = names(&cfg.allowed_headers, "allowed_headers")?;
        let expose = names(&cfg.expose_headers, "expose_headers")?;
        Ok(CorsPolicy {
            origins,
            allow_methods: join(methods.iter().map(Method::as_str))
                .ok_or_else(|| invalid("allowed_methods"))?,
            allow_headers: join(headers.iter().map(HeaderName::as_str)),
            expose_headers: join(expose.iter().map(HeaderName::as_str)),
            max_age: HeaderValue::from(cfg.max_age_secs),
            credentials: cfg.allow_credentials,
            methods,
            headers,
        })
    }

    /// Whether `origin` (a request's `Origin` value) may read responses.
    pub fn allows_origin(&self, origin: &HeaderValue) -> bool {
        match &self.origins {
            None => true,
            Some(list) => list.iter().any(|o| o.matches(origin.as_bytes())),
        }
    }

    /// Judges a preflight for `origin` asking for `method` and `requested` headers (the values
    /// of every `Access-Control-Request-Headers` line).
    ///
    /// # Errors
    /// What the policy does not allow, origin first.
    pub fn check_preflight<'h>(
        &self,
        origin: &HeaderValue,
        method: &HeaderValue,
        requested: impl Iterator<Item = &'h HeaderValue>,
    ) -> Result<(), PreflightRefusal> {
        if !self.allows_origin(origin) {
            return Err(PreflightRefusal::Origin);
        }
        // Methods are case-sensitive (Fetch normalizes only the six standard ones).
        if !self.methods.iter().any(|m| m.as_str().as_bytes() == method.as_bytes()) {
            return Err(PreflightRefusal::Method);
        }
        for value in requested {
            let Ok(list) = value.to_str() else { return Err(PreflightRefusal::Header) };
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if !self.headers.iter().any(|h| h.as_str().eq_ignore_ascii_case(name)) {
                    return Err(PreflightRefusal::Header);
                }
            }
        }
        Ok(())
    }
}

/// Why a preflight was refused (the `outcome` label of the preflight counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreflightRefusal {
    /// The origin is not allowed.
    Origin,
    /// The requested method is not allowed.
    Method,
    /// A requested header is not allowed.
    Header,
}

impl PreflightRefusal {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            PreflightRefusal::Origin => "origin_not_allowed",
            PreflightRefusal::Method => "method_not_allowed",
            PreflightRefusal::Header => "header_not_allowed",
        }
    }
}

/// What a request on a CORS route is.
#[derive(Debug)]
pub enum CorsRequest {
    /// A preflight, judged; on success the origin to answer to.
    Preflight(Result<HeaderValue, PreflightRefusal>),
    /// Any other request: the state its response is decorated with.
    Actual(CorsState),
}

/// The CORS state of a request whose response will be decorated.
#[derive(Debug, Clone)]
pub struct CorsState {
    /// The route's policy.
    pub policy: Arc<CorsPolicy>,
    /// The request's `Origin`, when the policy allows it.
    pub origin: Option<HeaderValue>,
}

/// Classifies a request on a route with `policy`.
pub fn inspect(policy: &Arc<CorsPolicy>, method: &Method, headers: &HeaderMap) -> CorsRequest {
    let origin = crate::request::single_value(headers, &header::ORIGIN);
    if *method == Method::OPTIONS {
        if let (Some(origin), Some(asked)) =
            (origin, crate::request::single_value(headers, &header::ACCESS_CONTROL_REQUEST_METHOD))
        {
            let requested = headers.get_all(header::ACCESS_CONTROL_REQUEST_HEADERS).iter();
            return CorsRequest::Preflight(
                policy.check_preflight(origin, asked, requested).map(|()| origin.clone()),
            );
        }
    }
    let origin = origin.filter(|o| policy.allows_origin(o)).cloned();
    CorsRequest::Actual(CorsState { policy: policy.clone(), origin })
}

/// `a, b, c`, or `None` for an empty list.
fn join<'a>(items: impl Iterator<Item = &'a str>) -> Option<HeaderValue> {
    let joined = items.collect::<Vec<_>>().join(", ");
    (!joined.is_empty()).then(|| HeaderValue::from_str(&joined).ok()).flatten()
}

#[cfg(test)]
mod tests;
