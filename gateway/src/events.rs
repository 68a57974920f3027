//! Typed log events. Each carries allow-listed fields only: no paths, query strings, headers,
//! tokens or bodies, which may carry PHI or credentials.

/// One line per request.
#[derive(Debug)]
pub struct AccessLog<'a> {
    /// Request id.
    pub request_id: &'a str,
    /// Route name (`-` when unrouted).
    pub route: &'a str,
    /// Method.
    pub method: &'a str,
    /// Status sent (0 when none).
    pub status: u16,
    /// Error code or `ok`.
    pub code: &'a str,
    /// Time in the gateway, microseconds.
    pub duration_us: u128,
    /// The W3C trace id, when the gateway traces.
    pub trace_id: Option<&'a str>,
}

impl AccessLog<'_> {
    /// Writes the event to the log at info level.
    pub fn emit(&self) {
        log::info!(
            target: "phigate::access",
            "request_id={} route={} method={} status={} code={} duration_us={}{}{}",
            self.request_id,
            self.route,
            self.method,
            self.status,
            self.code,
            self.duration_us,
            if self.trace_id.is_some() { " trace_id=" } else { "" },
            self.trace_id.unwrap_or("")
        );
    }
}

/// An upstream endpoint's health flipped (active health checks).
#[derive(Debug)]
pub struct EndpointHealthChanged<'a> {
    /// Upstream name from the config.
    pub upstream: &'a str,
    /// The endpoint as configured (`host:port`).
    pub endpoint: &'a str,
    /// Its new health.
    pub healthy: bool,
}

impl EndpointHealthChanged<'_> {
    /// Writes the event: a warning when the endpoint leaves rotation, info when it returns.
    pub fn emit(&self) {
        let level = if self.healthy { log::Level::Info } else { log::Level::Warn };
        log::log!(
            target: "phigate::upstream",
            level,
            "upstream={} endpoint={} health={}",
            self.upstream,
            self.endpoint,
            if self.healthy { "healthy" } else { "unhealthy" }
        );
    }
}
