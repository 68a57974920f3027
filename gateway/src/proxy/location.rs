//! `Location` and `Content-Location` answered by an upstream, mapped back to where the client
//! reached it (as nginx's `proxy_redirect default`): a URL under the upstream's base path (the
//! route's `upstream_path_prefix`, else its own prefix), on the client's host or on the
//! upstream's own name, becomes the same URL under the route's prefix on the client's host. A
//! created resource's `Location` (`201 Created`) then names a URL the client can follow through
//! the gateway, not the server behind it. A Bundle's paging links are mapped the same way in the
//! bodies the gateway reads whole. Anything else is left as it is.

use http::header::{CONTENT_LOCATION, LOCATION};
use http::HeaderValue;
use pingora::http::ResponseHeader;

use super::ctx::GatewayCtx;
use crate::runtime::Runtime;

/// Maps the response's `Location` and `Content-Location` (not with `bulk_export`, for a kick-off
/// or the URLs it issued: the gateway seals those itself).
pub(super) fn map_to_route(rt: &Runtime, ctx: &GatewayCtx, resp: &mut ResponseHeader) {
    if !resp.headers.contains_key(LOCATION) && !resp.headers.contains_key(CONTENT_LOCATION) {
        return;
    }
    with_bases(rt, ctx, |bases| {
        for name in [LOCATION, CONTENT_LOCATION] {
            let mapped = resp.headers.get(&name).and_then(|v| v.to_str().ok()).and_then(|v| bases.map(v));
            if let Some(value) = mapped.and_then(|m| HeaderValue::from_str(&m).ok()) {
                // Replacing a header that is there cannot fail.
                let _ = resp.insert_header(name, value);
            }
        }
    });
}

/// A Bundle's paging links (`link[].url`) mapped like `Location`, so that a client pages
/// through the gateway (a server that builds its links from its own base writes URLs under
/// the upstream's prefix). The rest of the body is sent as it is (`fullUrl` and resources too).
/// `None`: nothing to change.
pub(super) fn map_bundle_links(rt: &Runtime, ctx: &GatewayCtx, body: &[u8]) -> Option<Vec<u8>> {
    with_bases(rt, ctx, |bases| bases.bundle_links(body)).flatten()
}

/// Runs `f` with where the upstream and the client see the request's route.
fn with_bases<R>(rt: &Runtime, ctx: &GatewayCtx, f: impl FnOnce(&Bases<'_>) -> R) -> Option<R> {
    let req = ctx.req.as_ref()?;
    let export = req.fhir.as_ref().and_then(|f| f.operation.as_deref()) == Some("export");
    if rt.bulk.is_some() && (req.bulk.is_some() || export) {
        return None;
    }
    let route = rt.router.get(req.route.index)?;
    let host = req.request.headers.get(http::header::HOST).and_then(|h| h.to_str().ok())?;
    let upstream = rt.upstreams.get(ctx.upstream);
    // The upstream's own names: its SNI and its endpoints (`host:port`, without a `#n` slot).
    let each_name = |f: &mut dyn FnMut(&str) -> bool| {
        upstream.is_some_and(|u| {
            let labels = u.endpoints.iter().map(|e| e.label.split('#').next().unwrap_or(""));
            std::iter::once(u.sni.as_str()).chain(labels).any(|n| !n.is_empty() && f(n))
        })
    };
    let names = |authority: &http::uri::Authority| {
        each_name(&mut |n| {
            n.eq_ignore_ascii_case(authority.as_str()) || n.eq_ignore_ascii_case(authority.host())
        })
    };
    // A `"url"` member whose value is an http(s) URL on one of those names (a `fullUrl` does not
    // count: it is not a link, and is sent as written).
    let named_in = |body: &[u8]| {
        memchr::memmem::find_iter(body, b"\"url\"").any(|at| {
            let rest = &body[at + 5..];
            let start = rest.iter().position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b':'));
            let Some(value) = start.and_then(|i| rest.get(i..)).and_then(|v| v.strip_prefix(b"\"")) else {
                return false;
            };
            let Some(after) = value.strip_prefix(b"https://").or_else(|| value.strip_prefix(b"http://"))
            else {
                return false;
            };
            each_name(&mut |n| {
                after.len() > n.len()
                    && after[..n.len()].eq_ignore_ascii_case(n.as_bytes())
                    && matches!(after[n.len()], b'/' | b':' | b'"' | b'?')
            })
        })
    };
    let bases = Bases {
        upstream: route.upstream_prefix(),
        public: route.prefix(),
        host,
        names: &names,
        named_in: &named_in,
    };
    Some(f(&bases))
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
    /// Whether a body names one of them as a URL's host (a cheap test before parsing).
    named_in: &'a dyn Fn(&[u8]) -> bool,
}

/// The root `resourceType` and `link` of a JSON object, read only as far as needed: parsing
/// stops once both are found (a server that writes `link` before `entry`, as HAPI does, costs
/// only the Bundle's head).
fn bundle_head(body: &[u8]) -> Option<&serde_json::value::RawValue> {
    use serde::de::{Deserializer as _, Error as _, IgnoredAny, MapAccess, Visitor};
    use std::borrow::Cow;
    use std::cell::Cell;

    struct Head<'a> {
        bundle: Cell<bool>,
        link: Cell<Option<&'a serde_json::value::RawValue>>,
    }
    impl<'de> Visitor<'de> for &Head<'de> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a FHIR resource")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen_type = false;
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                match &*key {
                    "resourceType" => {
                        self.bundle.set(map.next_value::<Cow<'de, str>>()? == "Bundle");
                        seen_type = true;
                    }
                    "link" => self.link.set(Some(map.next_value()?)),
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                if seen_type && (!self.bundle.get() || self.link.get().is_some()) {
                    // Enough is known: stop reading (the error only ends the walk).
                    return Err(A::Error::custom("head read"));
                }
            }
            Ok(())
        }
    }
    let head = Head { bundle: Cell::new(false), link: Cell::new(None) };
    let _ = serde_json::Deserializer::from_slice(body).deserialize_map(&head);
    head.link.get().filter(|_| head.bundle.get())
}

impl Bases<'_> {
    /// The body with its root `link` URLs mapped, `None` when it is not a Bundle or no link
    /// needs it.
    fn bundle_links(&self, body: &[u8]) -> Option<Vec<u8>> {
        // Cheap first: parsed only when a URL may need it (under the upstream's own prefix on
        // a route that forwards under another, or on the upstream's own name).
        let rewrites = self.upstream != self.public;
        let candidate = if rewrites {
            let prefix = self.upstream.as_bytes();
            memchr::memmem::find_iter(body, prefix).any(|at| body.get(at + prefix.len()) == Some(&b'/'))
        } else {
            (self.named_in)(body)
        };
        if !candidate {
            return None;
        }
        let raw = bundle_head(body)?;
        let mut links: Vec<serde_json::Value> = serde_json::from_str(raw.get()).ok()?;
        let mut changed = false;
        for link in &mut links {
            let mapped = link.get("url").and_then(|u| u.as_str()).and_then(|u| self.map(u));
            if let (Some(url), Some(obj)) = (mapped, link.as_object_mut()) {
                obj.insert("url".to_owned(), serde_json::Value::String(url));
                changed = true;
            }
        }
        if !changed {
            return None;
        }
        let start = (raw.get().as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
        let end = start + raw.get().len();
        let mut out = Vec::with_capacity(body.len() + 64);
        out.extend_from_slice(body.get(..start)?);
        serde_json::to_writer(&mut out, &links).ok()?;
        out.extend_from_slice(body.get(end..)?);
        Some(out)
    }

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

    fn hapi_in(body: &[u8]) -> bool {
        String::from_utf8_lossy(body).contains("\"url\":\"https://hapi.internal")
    }

    fn bases<'a>(upstream: &'a str, public: &'a str) -> Bases<'a> {
        Bases { upstream, public, host: "fhir.example.com", names: &hapi, named_in: &hapi_in }
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
    fn a_bundles_paging_links_are_mapped_and_nothing_else() {
        let b = bases("/baseR4", "/fhir");
        let body = r#"{"resourceType":"Bundle","type":"searchset","link":[{"relation":"self","url":"https://fhir.example.com/baseR4/Observation?patient=a"},{"relation":"next","url":"https://hapi.internal/baseR4?_getpages=x&_getpagesoffset=20"}],"entry":[{"fullUrl":"https://fhir.example.com/baseR4/Observation/1","resource":{"resourceType":"Observation","id":"1","note":[{"text":"see https://fhir.example.com/baseR4/x"}]}}]}"#;
        let out = String::from_utf8(b.bundle_links(body.as_bytes()).unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["link"][0]["url"], "https://fhir.example.com/fhir/Observation?patient=a");
        assert_eq!(v["link"][1]["url"], "https://fhir.example.com/fhir?_getpages=x&_getpagesoffset=20");
        assert_eq!(v["link"][1]["relation"], "next");
        let entries = &body[body.find(r#""entry""#).unwrap()..];
        assert!(out.ends_with(entries), "the entries are the server's bytes: {out}");
        // Links already under the route, a resource, or no Bundle: nothing to change.
        let same = bases("/fhir", "/fhir");
        let public = r#"{"resourceType":"Bundle","link":[{"relation":"self","url":"https://fhir.example.com/fhir/Observation"}]}"#;
        assert_eq!(same.bundle_links(public.as_bytes()), None);
        assert_eq!(
            b.bundle_links(
                br#"{"resourceType":"Observation","link":[{"url":"https://hapi.internal/baseR4/x"}]}"#
            ),
            None
        );
        assert_eq!(b.bundle_links(b"not json /baseR4/"), None);
    }

    #[test]
    fn the_head_is_found_in_any_member_order_and_only_in_a_bundle() {
        let link = r#"[{"relation":"next","url":"u"}]"#;
        for body in [
            format!(r#"{{"resourceType":"Bundle","link":{link},"entry":[{{"resource":{{"link":[]}}}}]}}"#),
            format!(
                r#"{{"entry":[{{"resource":{{"resourceType":"Patient","link":[]}}}}],"link":{link},"resourceType":"Bundle"}}"#
            ),
            format!(r#"{{"link":{link},"type":"searchset","resourceType":"Bundle"}}"#),
        ] {
            assert_eq!(super::bundle_head(body.as_bytes()).map(|r| r.get()), Some(link), "{body}");
        }
        assert!(super::bundle_head(br#"{"resourceType":"Patient","link":[{"other":{}}]}"#).is_none());
        assert!(super::bundle_head(br#"{"resourceType":"Bundle","entry":[]}"#).is_none());
        assert!(super::bundle_head(b"[1,2]").is_none());
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
