//! Stable error codes and the [`Denial`] a stage returns.
//!
//! The codes are a public contract: clients and SIEM rules match on them. Each has one fixed status
//! and one fixed public message; the cause of a denial goes to the log, never to the client.

use std::borrow::Cow;
use std::fmt;

use http::{HeaderName, HeaderValue, StatusCode};

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = ($code:literal, $status:literal, $message:literal), )*) => {
        /// A stable, documented error code. See [`ErrorCode::ALL`] for the table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in documentation order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The snake_case code as it appears in response bodies, logs and metrics.
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The HTTP status this code is always sent with.
            pub fn status(self) -> StatusCode {
                let n: u16 = match self { $(ErrorCode::$variant => $status,)* };
                StatusCode::from_u16(n).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }

            /// The fixed public message (never contains request data).
            pub const fn message(self) -> &'static str {
                match self { $(ErrorCode::$variant => $message,)* }
            }
        }
    };
}

error_codes! {
    /// The request path, query or framing is ambiguous (encoded separators, dot segments, ...).
    AmbiguousRequest = ("ambiguous_request", 400, "The request is ambiguous and was not forwarded."),
    /// The request is malformed in a way that is not about ambiguity (bad FHIR type, bad body).
    BadRequest = ("bad_request", 400, "The request is malformed."),
    /// The method is not one the gateway forwards.
    MethodNotAllowed = ("method_not_allowed", 405, "This method is not allowed."),
    /// The request target (path and query) exceeds the configured limit.
    UriTooLong = ("uri_too_long", 414, "The request URI is too long."),
    /// The request line or headers exceed the configured limits.
    HeadersTooLarge = ("headers_too_large", 431, "The request line or headers are too large."),
    /// The request body exceeds what the gateway inspects.
    BodyTooLarge = ("body_too_large", 413, "The request body is too large."),
    /// A request body the gateway must read (a FHIR write, batch or `_search` form) was sent with
    /// a `Content-Encoding` (gzip, ...): it reads bodies as sent, so they must come uncompressed.
    ContentEncodingUnsupported = ("content_encoding_unsupported", 415, "The gateway reads request bodies; send them without Content-Encoding."),
    /// No route matches the path.
    RouteNotFound = ("route_not_found", 404, "No route matches this path."),
    /// A CORS preflight (an `OPTIONS` with `Origin` and `Access-Control-Request-Method`) asked for
    /// an origin, method or header the route's CORS policy does not allow.
    CorsNotAllowed = ("cors_not_allowed", 403, "This cross-origin request is not allowed."),
    /// No bearer token was presented.
    TokenMissing = ("token_missing", 401, "A bearer access token is required."),
    /// The token is not a well-formed JWT, or is presented in a way the gateway does not accept.
    TokenMalformed = ("token_malformed", 401, "The access token is malformed."),
    /// The token has expired.
    TokenExpired = ("token_expired", 401, "The access token has expired."),
    /// The token's `nbf` is in the future.
    TokenNotYetValid = ("token_not_yet_valid", 401, "The access token is not valid yet."),
    /// The token's signature does not verify, or its key or algorithm is not acceptable.
    TokenSignatureInvalid = ("token_signature_invalid", 401, "The access token signature is invalid."),
    /// The token's issuer is not configured.
    TokenIssuerUnknown = ("token_issuer_unknown", 401, "The access token issuer is not trusted."),
    /// The token's audience does not include this gateway.
    TokenAudienceInvalid = ("token_audience_invalid", 401, "The access token audience is not accepted."),
    /// The authorization server reports the token as not active (RFC 7662 introspection:
    /// revoked, expired, unknown to it, or not for this gateway's client).
    TokenInactive = ("token_inactive", 401, "The access token is not active."),
    /// The token does not prove multi-factor authentication.
    MfaRequired = ("mfa_required", 401, "Multi-factor authentication is required."),
    /// The authentication event is older than the route allows.
    AuthTooOld = ("auth_too_old", 401, "The authentication is too old; sign in again."),
    /// The token is bound to a client certificate other than the one on this connection.
    TokenBindingMismatch = ("token_binding_mismatch", 401, "The access token is not bound to this client certificate."),
    /// The DPoP proof (RFC 9449) of a DPoP-bound token is missing, invalid, stale, replayed, or
    /// signed by a key other than the token's.
    DpopProofInvalid = ("dpop_proof_invalid", 401, "The DPoP proof is missing or invalid."),
    /// The route requires a DPoP-bound access token (RFC 9449) and the token is not one.
    DpopRequired = ("dpop_required", 401, "This route requires a DPoP-bound access token."),
    /// The route requires a server-provided DPoP nonce (RFC 9449 §9) and the proof has none, or
    /// an unknown or expired one: retry with the nonce sent in the `DPoP-Nonce` response header.
    DpopNonceRequired = ("dpop_nonce_required", 401, "A fresh DPoP nonce is required; use the one in the DPoP-Nonce header."),
    /// The session was idle longer than allowed (automatic logoff).
    SessionIdleTimeout = ("session_idle_timeout", 401, "The session timed out; sign in again."),
    /// A client certificate is required on this listener or route.
    ClientCertRequired = ("client_cert_required", 401, "A client certificate is required."),
    /// The principal may not access data of the addressed tenant.
    TenantMismatch = ("tenant_mismatch", 403, "Access to this tenant is not permitted."),
    /// The principal may not access one or more of the patients the request touches.
    PatientNotPermitted = ("patient_not_permitted", 403, "Access to this patient is not permitted."),
    /// The record the request reads or changes carries a security label (FHIR `meta.security`,
    /// such as a restricted confidentiality or a sensitive-information code) the principal is
    /// not cleared for. Search results are not refused for this: such entries are left out.
    SecurityLabelNotPermitted = ("security_label_not_permitted", 403, "This record is restricted by a security label the caller is not cleared for."),
    /// What a client is told instead of another refusal that would say too much: a read of a
    /// record whose security label it is not cleared for, when the policy keeps withheld records
    /// silent (`policy.withheld_notice: silent`). The audit trail keeps the true code.
    ResourceNotFound = ("resource_not_found", 404, "The resource was not found."),
    /// The principal's scopes do not allow this interaction or resource type.
    ScopeInsufficient = ("scope_insufficient", 403, "The token's scopes do not allow this request."),
    /// Policy denied the request for another reason.
    PolicyDenied = ("policy_denied", 403, "The request is not permitted by policy."),
    /// Policy evaluation failed or timed out (the request is denied: fail closed).
    PolicyError = ("policy_error", 403, "The request could not be authorized."),
    /// Break-glass access was requested without the break-glass role or a valid reason.
    BreakGlassNotPermitted = ("break_glass_not_permitted", 403, "Emergency access is not permitted."),
    /// The requested page size exceeds the allowed maximum.
    PageSizeExceeded = ("page_size_exceeded", 400, "The requested page size exceeds the maximum."),
    /// The search would return an unbounded result.
    UnboundedSearch = ("unbounded_search", 400, "The search must be narrowed or paginated."),
    /// The client asked for a response format other than FHIR JSON (`_format=xml`, `Accept:
    /// application/fhir+xml`, ...) on a request whose response the gateway verifies, and it reads
    /// FHIR JSON only. Nothing was forwarded.
    FormatNotAcceptable = ("format_not_acceptable", 406, "Responses are verified by the gateway, which reads FHIR JSON only; ask for application/fhir+json."),
    /// Bulk export must be requested asynchronously.
    ExportRequiresAsync = ("export_requires_async", 400, "Bulk export must be requested with Prefer: respond-async."),
    /// A bulk-export URL (status or file) the gateway did not issue, or whose time ran out; also
    /// the upstream's own status URL asked for directly instead of through the one the gateway
    /// issued.
    BulkUrlInvalid = ("bulk_url_invalid", 404, "This bulk export URL is not valid or has expired; start a new export."),
    /// A bulk-export URL issued to another principal: an export belongs to whoever started it.
    BulkUrlNotOwner = ("bulk_url_not_owner", 403, "This bulk export was started by another client."),
    /// Too many requests.
    RateLimited = ("rate_limited", 429, "Too many requests."),
    /// The principal is blocked after exfiltration-like activity.
    PrincipalBlocked = ("principal_blocked", 403, "Access is suspended; contact your security team."),
    /// The audit record could not be made durable, so nothing was forwarded (fail closed).
    AuditUnavailable = ("audit_unavailable", 503, "The request could not be audited and was not forwarded."),
    /// The upstream's TLS certificate or handshake failed verification.
    UpstreamTlsError = ("upstream_tls_error", 502, "The upstream service could not be reached securely."),
    /// The upstream could not be connected to.
    UpstreamUnavailable = ("upstream_unavailable", 502, "The upstream service is unavailable."),
    /// The upstream already has `max_requests_in_flight` requests from this gateway: refused at
    /// once (nothing was sent) so a slow upstream cannot pile requests up in the gateway; retry
    /// after `Retry-After`.
    UpstreamOverloaded = ("upstream_overloaded", 503, "The upstream service is at capacity; retry shortly."),
    /// The upstream did not answer in time.
    UpstreamTimeout = ("upstream_timeout", 504, "The upstream service did not answer in time."),
    /// The upstream failed while the response was being proxied.
    UpstreamError = ("upstream_error", 502, "The upstream service failed."),
    /// A required component is not ready (keys, policies or sinks still loading).
    NotReady = ("not_ready", 503, "The gateway is not ready."),
    /// An unexpected internal failure.
    InternalError = ("internal_error", 500, "Internal error."),
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal from a stage: a stable code, extra response headers (for example
/// `WWW-Authenticate` or `Retry-After`), and a cause for the log only.
#[derive(Debug, Clone)]
pub struct Denial {
    /// The stable code; it fixes the status and public message.
    pub code: ErrorCode,
    /// Headers to add to the error response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Why, for operators. Goes to the log, never to the client; must not contain tokens or PHI.
    pub cause: Option<Cow<'static, str>>,
    /// The code the client is answered with instead of `code`, when `code` itself would tell
    /// too much; the audit record, metrics and alerts keep `code`. Default: none.
    pub answered_as: Option<ErrorCode>,
}

impl Denial {
    /// A denial with this code and no extra headers or cause.
    pub fn new(code: ErrorCode) -> Self {
        Denial { code, headers: Vec::new(), cause: None, answered_as: None }
    }

    /// Answers the client with `public` (its status and message) while `code` is what is
    /// recorded.
    pub fn answered_as(mut self, public: ErrorCode) -> Self {
        self.answered_as = Some(public);
        self
    }

    /// The code the client sees: [`Denial::answered_as`] if set, else `code`.
    pub fn shown(&self) -> ErrorCode {
        self.answered_as.unwrap_or(self.code)
    }

    /// Adds a log-only cause.
    pub fn with_cause(mut self, cause: impl Into<Cow<'static, str>>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl From<ErrorCode> for Denial {
    fn from(code: ErrorCode) -> Self {
        Denial::new(code)
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Some(c) => write!(f, "{}: {c}", self.code),
            None => write!(f, "{}", self.code),
        }
    }
}

impl std::error::Error for Denial {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_with_error_statuses() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "duplicate {c}");
            assert!(c.as_str().chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'), "{c}");
            assert!(c.status().is_client_error() || c.status().is_server_error(), "{c}");
            assert!(!c.message().is_empty());
        }
    }

    #[test]
    fn a_denial_answered_as_another_code_keeps_its_own() {
        let d = Denial::new(ErrorCode::SecurityLabelNotPermitted);
        assert_eq!(d.shown(), ErrorCode::SecurityLabelNotPermitted);
        let d = d.answered_as(ErrorCode::ResourceNotFound);
        assert_eq!((d.code, d.shown()), (ErrorCode::SecurityLabelNotPermitted, ErrorCode::ResourceNotFound));
        assert_eq!(d.shown().status(), StatusCode::NOT_FOUND);
    }
}
