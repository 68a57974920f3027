//! Origins as browsers serialize them in the `Origin` header (RFC 6454 §6.1, the Fetch
//! standard's "serialization of an origin"): `scheme://host[:port]`, host lowercase, no default
//! port, no path. Config origins are brought to that form once, at load, so a request's `Origin`
//! is then matched by plain byte equality: no parsing, no allocation, no case folding per request.

use std::net::{Ipv4Addr, Ipv6Addr};

const SHAPE: &str = "not an origin (like `https://app.example` or `https://app.example:8443`)";

/// A configured origin, brought to the form browsers send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Allowed {
    /// One origin, matched byte for byte.
    Exact(String),
    /// `scheme://*.suffix[:port]`: every origin of that scheme and port whose host is one or more
    /// labels followed by `.suffix`. Kept as the text before the wildcard (`https://`) and the
    /// text after it (`.apps.example` or `.apps.example:8443`).
    Subdomains {
        /// `scheme://`.
        prefix: String,
        /// `.suffix[:port]` (no port when it is the scheme's default).
        suffix: String,
    },
}

impl Allowed {
    /// Whether a request's `Origin` value is allowed: one byte comparison for an exact origin,
    /// two and a scan of the subdomain labels for a wildcard.
    pub(crate) fn matches(&self, origin: &[u8]) -> bool {
        match self {
            Allowed::Exact(o) => o.as_bytes() == origin,
            Allowed::Subdomains { prefix, suffix } => {
                origin.len() > prefix.len() + suffix.len()
                    && origin.starts_with(prefix.as_bytes())
                    && origin.ends_with(suffix.as_bytes())
                    && labels_ok(&origin[prefix.len()..origin.len() - suffix.len()])
            }
        }
    }
}

/// One or more lowercase DNS labels, dot-separated, as a browser serializes a host.
fn labels_ok(host: &[u8]) -> bool {
    host.split(|&b| b == b'.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l[0] != b'-'
            && l[l.len() - 1] != b'-'
            && l.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    })
}

/// A configured origin: exact, or with `*` as the whole first label of the host
/// (`https://*.apps.example`).
///
/// # Errors
/// A fixed message (never the value) saying what is wrong.
pub(crate) fn allowed(text: &str) -> Result<Allowed, &'static str> {
    let Some((scheme, rest)) = text.split_once("://") else { return canonical(text).map(Allowed::Exact) };
    let Some(rest) = rest.strip_prefix("*.") else { return canonical(text).map(Allowed::Exact) };
    if rest.contains('*') {
        return Err(WILDCARD);
    }
    // Canonicalized as the origin of the suffix itself, then split after its scheme.
    let base = canonical(&format!("{scheme}://{rest}"))?;
    let (prefix, host_port) = base.split_once("://").ok_or(SHAPE)?;
    let host = host_port.rsplit_once(':').filter(|_| !host_port.ends_with(']')).map_or(host_port, |(h, _)| h);
    if host.starts_with('[') || host.parse::<Ipv4Addr>().is_ok() {
        return Err("a wildcard needs a DNS name after it, not an IP address");
    }
    // `*.com`, `*.org`: every site under a top-level domain. (A public suffix of two labels,
    // such as `*.co.uk`, is not known here: do not list one.)
    if !host.contains('.') && host != "localhost" {
        return Err("a wildcard must be followed by at least two labels (`https://*.apps.example`)");
    }
    Ok(Allowed::Subdomains { prefix: format!("{prefix}://"), suffix: format!(".{host_port}") })
}

const WILDCARD: &str =
    "a wildcard must be the whole first label of the host, once (`https://*.apps.example`)";

/// The browser serialization of a configured origin.
///
/// # Errors
/// A fixed message (never the value) saying what is wrong.
pub(crate) fn canonical(text: &str) -> Result<String, &'static str> {
    if text == "null" {
        // Sandboxed frames, `file:` pages and some redirects all send `null`: allowing it
        // allows every one of them, including an attacker's sandboxed iframe.
        return Err("`null` is not allowed: it is the origin of every sandboxed frame and local file");
    }
    let (scheme, rest) = text.split_once("://").ok_or(SHAPE)?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return Err("scheme must be `https` (or `http` for a loopback development origin)"),
    };
    if rest.contains(['/', '?', '#']) {
        return Err("must not have a path, query or fragment (an origin is scheme, host and port only)");
    }
    if rest.contains('@') {
        return Err("must not contain user information");
    }
    if rest.contains('*') {
        return Err(WILDCARD);
    }
    let (host, port) = split_port(rest)?;
    let host = canonical_host(host)?;
    if scheme == "http" && !is_loopback(&host) {
        return Err("plain `http` is allowed only for loopback development origins \
                    (`http://localhost:3000`): a page served over HTTP can be altered in transit");
    }
    Ok(match port {
        Some(p) if p != default_port => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// `host[:port]` or `[v6][:port]`.
fn split_port(rest: &str) -> Result<(&str, Option<u16>), &'static str> {
    let (host, port) = if rest.starts_with('[') {
        let end = rest.find(']').ok_or(SHAPE)?;
        match &rest[end + 1..] {
            "" => (&rest[..=end], None),
            tail => (&rest[..=end], Some(tail.strip_prefix(':').ok_or(SHAPE)?)),
        }
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err("port must be a number from 1 to 65535"),
        },
    };
    Ok((host, port))
}

fn canonical_host(host: &str) -> Result<String, &'static str> {
    const BAD_HOST: &str = "host is not a valid DNS name or IP address (write IDNs in punycode)";
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip: Ipv6Addr = inner.parse().map_err(|_| BAD_HOST)?;
        return Ok(format!("[{ip}]"));
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(ip.to_string());
    }
    let host = host.to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    // The last label of a DNS name is never all digits: `1.2.3` is a malformed address.
    let last_numeric = host.rsplit('.').next().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if host.len() > 253 || !host.split('.').all(label_ok) || last_numeric {
        return Err(BAD_HOST);
    }
    Ok(host)
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
        || host == "[::1]"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_take_the_form_browsers_send() {
        for (text, want) in [
            ("https://app.example", "https://app.example"),
            ("HTTPS://App.Example", "https://app.example"),
            ("https://app.example:443", "https://app.example"),
            ("https://app.example:8443", "https://app.example:8443"),
            ("http://localhost:3000", "http://localhost:3000"),
            ("http://127.0.0.1:80", "http://127.0.0.1"),
            ("http://[::1]:5173", "http://[::1]:5173"),
            ("https://[2001:DB8::0:1]", "https://[2001:db8::1]"),
            ("https://10.0.0.5:8443", "https://10.0.0.5:8443"),
        ] {
            assert_eq!(canonical(text).as_deref(), Ok(want), "{text}");
        }
    }

    #[test]
    fn anything_but_scheme_host_and_port_is_refused() {
        for text in [
            "https://a.example/path",
            "https://a.example/",
            "https://a.example?x=1",
            "https://a.example#f",
            "ftp://x",
            "a.example",
            "null",
            "https://*.example",
            "https://user@a.example",
            "https://a.example:0",
            "https://a.example:99999",
            "https://a.example:+443",
            "https://a.example:",
            "https://",
            "https://-a.example",
            "https://a..example",
            "https://a_b.example",
            "https://1.2.3",
            "https://[::1",
            "https://[::1]x",
            "https://bücher.example",
        ] {
            assert!(canonical(text).is_err(), "{text} accepted");
        }
    }

    #[test]
    fn a_wildcard_first_label_allows_the_subdomains_of_one_scheme_and_port() {
        let w = allowed("HTTPS://*.Apps.Example").unwrap();
        assert_eq!(w, Allowed::Subdomains { prefix: "https://".into(), suffix: ".apps.example".into() });
        for yes in ["https://a.apps.example", "https://x-1.b2.apps.example"] {
            assert!(w.matches(yes.as_bytes()), "{yes}");
        }
        for no in [
            "https://apps.example",
            "https://.apps.example",
            "https://a..apps.example",
            "https://-a.apps.example",
            "https://A.apps.example",
            "https://a.apps.example:8443",
            "http://a.apps.example",
            "https://a.apps.example.evil",
            "https://evilapps.example",
            "https://a/b.apps.example",
            "https://a:1@b.apps.example",
            "https://a.apps.example/",
        ] {
            assert!(!w.matches(no.as_bytes()), "{no}");
        }
        let p = allowed("https://*.apps.example:8443").unwrap();
        assert!(p.matches(b"https://a.apps.example:8443"));
        assert!(!p.matches(b"https://a.apps.example"));
        assert_eq!(allowed("https://*.apps.example:443"), allowed("https://*.apps.example"));
        assert!(allowed("http://*.localhost:3000").unwrap().matches(b"http://app.localhost:3000"));
        assert_eq!(allowed("https://app.example"), Ok(Allowed::Exact("https://app.example".into())));
    }

    #[test]
    fn wildcards_anywhere_else_or_too_wide_are_refused() {
        for text in [
            "https://*.example",
            "https://*",
            "https://*.*.example.org",
            "https://a.*.example.org",
            "https://a*.example.org",
            "https://*a.example.org",
            "https://*.10.0.0.1",
            "https://*.[::1]",
            "http://*.apps.example",
            "*.apps.example",
            "https://*.apps.example/x",
        ] {
            assert!(allowed(text).is_err(), "{text} accepted");
        }
    }

    #[test]
    fn plain_http_is_for_loopback_only() {
        assert!(canonical("http://app.example").is_err());
        assert!(canonical("http://10.0.0.5:8080").is_err());
        assert!(canonical("http://localhost").is_ok());
        assert!(canonical("http://dev.localhost:8080").is_ok());
        assert!(canonical("http://127.0.0.2:8080").is_ok());
    }

    #[test]
    fn error_messages_never_echo_the_value() {
        for text in ["https://secret.example/x", "ftp://secret", "http://secret.example"] {
            assert!(!canonical(text).unwrap_err().contains("secret"));
        }
    }
}
