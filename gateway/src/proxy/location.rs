//! `Location` and `Content-Location` answered by an upstream, mapped back to where the client
//! reached it (as nginx's `proxy_redirect default`): a URL under the upstream's base path (the
//! route's `upstream_path_prefix`, else its own prefix), on the client's host or on the
//! upstream's own name, becomes the same URL under the route's prefix on the client's host. A
//! created resource's `Location` (`201 Created`) then names a URL the client can follow through
//! the gateway, not the server behind it. Anything else is left as it is.

use http::header::{CONTENT_LOCATION, LOCATION};
use http::HeaderValue;
use pingora::http::ResponseHeader;

use super::ctx::GatewayCtx;
use crate::runtime::Runtime;

/// Maps the response's `Location` and `Content-Location` (not with `bulk_export`, for a kick-off
/// or the URLs it issued: the gateway seals those itself).
pub(super) fn map_to_route(rt: &Runtime, ctx: &GatewayCtx, resp: &mut ResponseHeader) {
    let Some(req) = ctx.req.as_ref() else { return };
    let export = req.fhir.as_ref().and_then(|f| f.operation.as_deref()) == Some("export");
    if rt.bulk.is_some() && (req.bulk.is_some() || export) {
        return;
    }
    if !resp.headers.contains_key(LOCATION) && !resp.headers.contains_key(CONTENT_LOCATION) {
        return;
    }
    let Some(route) = rt.router.get(req.route.index) else { return };
    let Some(host) = req.request.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()) else {
        return;
    };
    let upstream = rt.upstreams.get(ctx.upstream);
    // The upstream's own names: its SNI and its endpoints (`host:port`, without a `#n` slot).
    let names = |authority: &http::uri::Authority| {
        upstream.is_some_and(|u| {
            let labels = u.endpoints.iter().map(|e| e.label.split('#').next().unwrap_or(""));
            std::iter::once(u.sni.as_str()).chain(labels).any(|n| {
                n.eq_ignore_ascii_case(authority.as_str()) || n.eq_ignore_ascii_case(authority.host())
            })
        })
    };
    let bases = Bases { upstream: route.upstream_prefix(), public: route.prefix(), host, names: &names };
    for name in [LOCATION, CONTENT_LOCATION] {
        let mapped = resp.headers.get(&name).and_then(|v| v.to_str().ok()).and_then(|v| bases.map(v));
        if let Some(value) = mapped.and_then(|m| HeaderValue::from_str(&m).ok()) {
            // Replacing a header that is there cannot fail.
            let _ = resp.insert_header(name, value);
        }
    }
}

/// Where the upstream and the client see the route.
struct Bases<'a> {
    /// The upstream's base path (no trailing `/`; empty for `/`).
    upstream: &'a str,
    /// The route's prefix (no trailing `/`; empty for `/`).
    public: &'a str,
    /// The client's `Host`.
    host: &'a str,
    /// Whether an authority is one of the upstream's own names.
    names: &'a dyn Fn(&http::uri::Authority) -> bool,
}

impl Bases<'_> {
    /// `value` under the route, `None` when it is not the upstream's or needs no change.
    fn map(&self, value: &str) -> Option<String> {
        let uri: http::Uri = value.parse().ok()?;
        let absolute = uri.scheme().is_some();
        if absolute {
            let scheme = uri.scheme_str()?;
            let authority = uri.authority()?;
            let ours = authority.as_str().eq_ignore_ascii_case(self.host) || (self.names)(authority);
            if !(scheme == "http" || scheme == "https") || !ours {
                return None;
            }
        } else if !value.starts_with('/') {
            return None;
        }
        let path = uri.path();
        let rest = path.strip_prefix(self.upstream).filter(|r| r.is_empty() || r.starts_with('/'))?;
        let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        let mapped = if absolute {
            format!("https://{}{}{rest}{query}", self.host, self.public)
        } else {
            format!("{}{rest}{query}", self.public)
        };
        (mapped != value).then_some(mapped)
    }
}

#[cfg(test)]
mod tests {
    use super::Bases;

    /// The upstream is `hapi.internal` (any port) and `10.0.0.5:8443`.
    fn hapi(a: &http::uri::Authority) -> bool {
        a.host() == "hapi.internal" || a.as_str() == "10.0.0.5:8443"
    }

    fn bases<'a>(upstream: &'a str, public: &'a str) -> Bases<'a> {
        Bases { upstream, public, host: "fhir.example.com", names: &hapi }
    }

    #[test]
    fn an_upstream_url_is_mapped_to_the_route_on_the_clients_host() {
        let b = bases("/baseR4", "/fhir");
        for (from, to) in [
            (
                "https://hapi.internal/baseR4/Observation/9/_history/1",
                "https://fhir.example.com/fhir/Observation/9/_history/1",
            ),
            ("http://10.0.0.5:8443/baseR4/Patient/a?x=1", "https://fhir.example.com/fhir/Patient/a?x=1"),
            ("https://fhir.example.com/baseR4/Observation/9", "https://fhir.example.com/fhir/Observation/9"),
            ("/baseR4/Observation/9", "/fhir/Observation/9"),
            ("/baseR4", "/fhir"),
        ] {
            assert_eq!(b.map(from).as_deref(), Some(to), "{from}");
        }
    }

    #[test]
    fn anything_else_is_left_as_it_is() {
        let b = bases("/baseR4", "/fhir");
        for value in [
            "https://elsewhere.example.org/baseR4/Observation/9",
            "https://hapi.internal/baseR4x/Observation/9",
            "https://hapi.internal/other/Observation/9",
            "Observation/9",
            "ftp://hapi.internal/baseR4/x",
            "not a url",
        ] {
            assert_eq!(b.map(value), None, "{value}");
        }
        // Same base on both sides, on the client's host already: nothing to change.
        let same = bases("/fhir", "/fhir");
        assert_eq!(same.map("https://fhir.example.com/fhir/Observation/9"), None);
        assert_eq!(
            same.map("https://hapi.internal/fhir/Observation/9").as_deref(),
            Some("https://fhir.example.com/fhir/Observation/9"),
            "the upstream's own name is replaced"
        );
    }
}
