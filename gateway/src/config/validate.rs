//! Semantic validation of a loaded config: every problem at once, each with file, line and key
//! path, never the value.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use ipnet::IpNet;
use phigate_plugin::ConfigIssue;

use super::files::check_files;
use super::{load, ClientCertMode, ConfigError, ConfigErrors, LoadedConfig};

/// pingora's retry buffer holds at most this many request body bytes, so the gateway cannot
/// inspect (and still forward) a larger body.
const MAX_BODY_INSPECT_BYTES: usize = 65536;

/// What [`validate`] checks beyond the config itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidateOptions {
    /// Check that every configured file exists, is a readable regular file and holds the
    /// expected PEM items. Default: true (turn off only to check a config away from its host).
    pub check_files: bool,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        ValidateOptions { check_files: true }
    }
}

/// Checks a loaded config and reports every problem found.
///
/// # Errors
/// All problems, sorted by line.
pub fn validate(loaded: &LoadedConfig, opts: ValidateOptions) -> Result<(), ConfigErrors> {
    let mut v = Validator { loaded, errors: Vec::new() };
    v.listeners();
    v.process();
    v.trusted_proxies();
    v.upstreams();
    v.routes();
    v.empty_paths();
    v.tracing();
    v.bulk_export();
    if opts.check_files {
        check_files(loaded, &mut v.errors);
    }
    ConfigErrors(v.errors).into_result()
}

/// [`load`] then [`validate`]: what `phigate check` and `phigate run` do first.
///
/// # Errors
/// The parse error, or every validation problem.
pub fn load_and_validate(path: &Path, opts: ValidateOptions) -> Result<LoadedConfig, ConfigErrors> {
    let loaded = load(path)?;
    validate(&loaded, opts)?;
    Ok(loaded)
}

/// Turns the issues a stage reported about its config section into config errors: each key path
/// is prefixed with `section` and located at the line of its longest known prefix.
pub fn stage_issues(section: &str, issues: Vec<ConfigIssue>, loaded: &LoadedConfig) -> Vec<ConfigError> {
    issues
        .into_iter()
        .map(|issue| {
            let key_path = match issue.key_path.as_str() {
                "" => section.to_owned(),
                p if p.starts_with('[') => format!("{section}{p}"),
                p => format!("{section}.{p}"),
            };
            loaded.error_at(key_path, issue.message)
        })
        .collect()
}

struct Validator<'a> {
    loaded: &'a LoadedConfig,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn err(&mut self, key_path: String, message: impl Into<String>) {
        self.errors.push(self.loaded.error_at(key_path, message));
    }

    fn listeners(&mut self) {
        let listeners = &self.loaded.config.listeners;
        if listeners.is_empty() {
            self.err("listeners".into(), "at least one listener is required");
        }
        self.unique_names("listeners", listeners.iter().map(|l| l.name.as_str()));
        let mut bound: Vec<(SocketAddr, String)> = Vec::new();
        for (i, l) in listeners.iter().enumerate() {
            let key = format!("listeners[{i}]");
            self.socket_addr(format!("{key}.address"), &l.address, &mut bound);
            let tls = &l.tls;
            match (tls.client_cert, &tls.client_ca_path) {
                (ClientCertMode::None, Some(_)) => self.err(
                    format!("{key}.tls.client_ca_path"),
                    "is set but `client_cert` is `none`, so no client certificate would be asked \
                     for: set `client_cert: optional` or `required`, or remove it",
                ),
                (ClientCertMode::Optional | ClientCertMode::Required, None) => self.err(
                    format!("{key}.tls.client_ca_path"),
                    "is required when `client_cert` is `optional` or `required`",
                ),
                _ => {}
            }
        }
        self.socket_addr("admin.address".into(), &self.loaded.config.admin.address, &mut bound);
    }

    /// A listening address: it parses, and does not overlap one already in `bound`.
    fn socket_addr(&mut self, key: String, text: &str, bound: &mut Vec<(SocketAddr, String)>) {
        let Ok(addr) = text.parse::<SocketAddr>() else {
            self.err(key, "not a socket address (like `0.0.0.0:8443` or `[::]:8443`)");
            return;
        };
        if let Some((_, other)) = bound.iter().find(|(b, _)| overlaps(*b, addr)) {
            let message = format!("overlaps `{other}` (same port on the same or a wildcard IP)");
            self.err(key.clone(), message);
        }
        bound.push((addr, key));
    }

    fn process(&mut self) {
        let config = &self.loaded.config;
        if config.server.threads == 0 {
            self.err("server.threads".into(), "must be at least 1");
        }
        if config.server.response_compression_level > 9 {
            self.err("server.response_compression_level".into(), "must be between 0 and 9");
        }
        let limits = &config.limits;
        for (name, value) in [
            ("max_target_bytes", limits.max_target_bytes),
            ("max_header_bytes", limits.max_header_bytes),
            ("max_body_inspect_bytes", limits.max_body_inspect_bytes),
            ("max_response_buffer_bytes", limits.max_response_buffer_bytes),
        ] {
            if value == 0 {
                self.err(format!("limits.{name}"), "must be greater than 0");
            }
        }
        if limits.max_body_inspect_bytes > MAX_BODY_INSPECT_BYTES {
            self.err(
                "limits.max_body_inspect_bytes".into(),
                format!("must be at most {MAX_BODY_INSPECT_BYTES} (pingora's retry buffer size)"),
            );
        }
    }

    fn tracing(&mut self) {
        let Some(tracing) = &self.loaded.config.tracing else { return };
        for (key, message) in tracing.problems() {
            self.err(format!("tracing.{key}"), message);
        }
    }

    fn bulk_export(&mut self) {
        let cfg = &self.loaded.config;
        let Some(bulk) = &cfg.bulk_export else { return };
        for (key, message) in bulk.problems() {
            self.err(format!("bulk_export.{key}"), message);
        }
        if cfg.policy.is_none() {
            self.err(
                "bulk_export".into(),
                "needs the `policy` section: the policy stage refuses a bulk URL to anyone but the principal it was issued to",
            );
        }
    }

    fn trusted_proxies(&mut self) {
        for (i, text) in self.loaded.config.trusted_proxies.iter().enumerate() {
            let key = format!("trusted_proxies[{i}]");
            match text.parse::<IpNet>() {
                Err(_) => self.err(key, "not a CIDR (like `10.0.0.0/8` or `192.0.2.7/32`)"),
                // 0.0.0.0/0 would let any client forge its X-Forwarded-For chain.
                Ok(net) if net.prefix_len() == 0 => {
                    self.err(key, "trusts every address: list the proxies' networks")
                }
                Ok(net) if net.trunc() != net => {
                    self.err(key, "has host bits set (write the network address)")
                }
                Ok(_) => {}
            }
        }
    }

    fn upstreams(&mut self) {
        let upstreams = &self.loaded.config.upstreams;
        if upstreams.is_empty() {
            self.err("upstreams".into(), "at least one upstream is required");
        }
        self.unique_names("upstreams", upstreams.iter().map(|u| u.name.as_str()));
        for (i, u) in upstreams.iter().enumerate() {
            for (key, message) in u.problems() {
                self.err(format!("upstreams[{i}].{key}"), message);
            }
        }
    }

    fn routes(&mut self) {
        let config = &self.loaded.config;
        if config.routes.is_empty() {
            self.err("routes".into(), "at least one route is required");
        }
        self.unique_names("routes", config.routes.iter().map(|r| r.name.as_str()));
        let mut prefixes: HashMap<&str, usize> = HashMap::new();
        for (i, r) in config.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            if !config.upstreams.iter().any(|u| u.name == r.upstream) {
                self.err(format!("{key}.upstream"), "names no configured upstream");
            }
            match check_prefix(&r.path_prefix) {
                Err(why) => self.err(format!("{key}.path_prefix"), why),
                Ok(()) => {
                    if let Some(first) = prefixes.insert(&r.path_prefix, i) {
                        let message = format!("same prefix as routes[{first}]");
                        self.err(format!("{key}.path_prefix"), message);
                        prefixes.insert(&r.path_prefix, first);
                    }
                }
            }
            if let Some(Err(why)) = r.upstream_path_prefix.as_deref().map(check_prefix) {
                self.err(format!("{key}.upstream_path_prefix"), why);
            }
            for (sub, message) in r.cors.as_ref().map(|c| c.problems()).unwrap_or_default() {
                self.err(format!("{key}.cors.{sub}"), message);
            }
            for (sub, message) in r.tenant.as_ref().map(|t| t.problems()).unwrap_or_default() {
                self.err(format!("{key}.tenant.{sub}"), message);
            }
        }
    }

    /// File paths must not be empty (checked even without `check_files`).
    fn empty_paths(&mut self) {
        let config = &self.loaded.config;
        let mut paths: Vec<(String, &Path)> = vec![
            ("server.upgrade_sock".to_owned(), &config.server.upgrade_sock),
            ("server.pid_file".to_owned(), &config.server.pid_file),
        ];
        for (i, l) in config.listeners.iter().enumerate() {
            let key = format!("listeners[{i}].tls");
            paths.push((format!("{key}.cert_path"), &l.tls.cert_path));
            paths.push((format!("{key}.key_path"), &l.tls.key_path));
            if let Some(ca) = &l.tls.client_ca_path {
                paths.push((format!("{key}.client_ca_path"), ca));
            }
        }
        for (i, u) in config.upstreams.iter().enumerate() {
            if let Some(tls) = &u.tls {
                let key = format!("upstreams[{i}].tls");
                paths.push((format!("{key}.ca_path"), &tls.ca_path));
                paths.push((format!("{key}.client_cert_path"), &tls.client_cert_path));
                paths.push((format!("{key}.client_key_path"), &tls.client_key_path));
            }
        }
        for (key, path) in paths {
            if path.as_os_str().is_empty() {
                self.err(key, "must not be empty");
            }
        }
    }

    /// Names are non-empty and unique within `section`.
    fn unique_names<'n>(&mut self, section: &str, names: impl Iterator<Item = &'n str>) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, name) in names.enumerate() {
            let key = format!("{section}[{i}].name");
            if name.trim().is_empty() {
                self.err(key, "must not be empty");
            } else if let Some(first) = seen.get(name) {
                self.err(key, format!("duplicate name (also used by {section}[{first}])"));
            } else {
                seen.insert(name, i);
            }
        }
    }
}

/// Two listening addresses conflict when they share a port and an IP, or one IP is a wildcard.
/// Port 0 (an ephemeral port, used by tests) never conflicts.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// A path prefix: absolute, and free of anything normalization would reject or rewrite, since a
/// prefix that no normalized path can match is a silent dead route.
fn check_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') {
        return Err("must start with `/`".to_owned());
    }
    for bad in ["..", "//"] {
        if prefix.contains(bad) {
            return Err(format!("must not contain `{bad}`"));
        }
    }
    if let Some(c) = prefix.chars().find(|c| matches!(c, '%' | ';' | '?' | '#' | '\\')) {
        return Err(format!("must not contain `{c}`"));
    }
    if prefix.chars().any(|c| !c.is_ascii_graphic()) {
        return Err("must contain only visible ASCII characters".to_owned());
    }
    if prefix.len() > 1 && prefix.ends_with('/') {
        return Err("must not end with `/` (prefixes match whole segments)".to_owned());
    }
    Ok(())
}
