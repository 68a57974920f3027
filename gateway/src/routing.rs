//! Routes: the longest path prefix, matched on whole segments, picks the upstream.

use std::sync::Arc;

use phigate_plugin::RouteMeta;

/// A runtime route.
#[derive(Debug)]
pub struct Route {
    /// What stages see.
    pub meta: Arc<RouteMeta>,
    /// Index of the upstream in the runtime upstream list.
    pub upstream: usize,
    /// The matched prefix without a trailing `/` (empty for `/`).
    prefix: String,
    /// Replacement prefix when forwarding, without a trailing `/`.
    rewrite: Option<String>,
    /// The route's CORS policy, if any.
    pub cors: Option<Arc<crate::cors::CorsPolicy>>,
    /// How the route names the tenant its requests address, if it does.
    pub tenant: Option<crate::tenant::RouteTenant>,
}

impl Route {
    /// A route for `prefix` (normalized: no trailing `/`), forwarding to upstream `upstream`.
    pub fn new(meta: Arc<RouteMeta>, upstream: usize, prefix: &str, rewrite: Option<&str>) -> Self {
        Route {
            meta,
            upstream,
            prefix: prefix.trim_end_matches('/').to_owned(),
            rewrite: rewrite.map(|r| r.trim_end_matches('/').to_owned()),
            cors: None,
            tenant: None,
        }
    }

    /// The route with this tenant source.
    pub fn with_tenant(mut self, tenant: Option<crate::tenant::RouteTenant>) -> Self {
        self.tenant = tenant;
        self
    }

    /// The route with this CORS policy.
    pub fn with_cors(mut self, cors: Option<Arc<crate::cors::CorsPolicy>>) -> Self {
        self.cors = cors;
        self
    }

    /// Whether the route serves `path` (a prefix match on whole segments).
    pub fn matches(&self, path: &str) -> bool {
        path.strip_prefix(self.prefix.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// The part of `path` after the route prefix (`/` when empty).
    pub fn rest<'p>(&self, path: &'p str) -> &'p str {
        match path.get(self.prefix.len()..) {
            Some("") | None => "/",
            Some(rest) => rest,
        }
    }

    /// The matched prefix without a trailing `/` (empty for `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The prefix the upstream sees the route under: the replacement prefix when the route has
    /// one, else its own (no trailing `/`; empty for `/`).
    pub fn upstream_prefix(&self) -> &str {
        self.rewrite.as_deref().unwrap_or(&self.prefix)
    }

    /// Whether the route forwards under another prefix (`upstream_path_prefix`).
    pub fn rewrites(&self) -> bool {
        self.rewrite.as_deref().is_some_and(|r| r != self.prefix)
    }

    /// For a path as the upstream sees it (under the replacement prefix when the route has one,
    /// else under the route's own), the rest after that prefix (`""` or starting with `/`); `None`
    /// when the path is not under it (on whole segments).
    pub fn upstream_rest<'p>(&self, path: &'p str) -> Option<&'p str> {
        let base = self.rewrite.as_deref().unwrap_or(&self.prefix);
        path.strip_prefix(base).filter(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// The path to forward upstream for the normalized `path`.
    pub fn upstream_path(&self, path: &str) -> String {
        match &self.rewrite {
            None => path.to_owned(),
            Some(rewrite) => {
                let rest = path.get(self.prefix.len()..).unwrap_or("");
                let joined = format!("{rewrite}{rest}");
                if joined.is_empty() {
                    "/".to_owned()
                } else {
                    joined
                }
            }
        }
    }
}

/// All routes, in config order (so `RouteMeta::index` addresses them), matched longest prefix
/// first.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
    /// Positions in `routes`, longest prefix first.
    by_length: Vec<usize>,
}

impl Router {
    /// A router over these routes, given in config order.
    pub fn new(routes: Vec<Route>) -> Self {
        let mut by_length: Vec<usize> = (0..routes.len()).collect();
        by_length.sort_by_key(|&i| std::cmp::Reverse(routes[i].prefix.len()));
        Router { routes, by_length }
    }

    /// The route for a normalized path, if any.
    pub fn find(&self, path: &str) -> Option<&Route> {
        self.by_length.iter().map(|&i| &self.routes[i]).find(|r| r.matches(path))
    }

    /// The route with this `RouteMeta::index`.
    pub fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, rewrite: Option<&str>) -> Route {
        let meta = Arc::new(RouteMeta {
            name: prefix.into(),
            index: 0,
            prefix: prefix.into(),
            fhir: false,
            upstream: "u".into(),
        });
        Route::new(meta, 0, prefix, rewrite)
    }

    #[test]
    fn prefix_matches_whole_segments_only() {
        let r = route("/fhir", None);
        assert!(r.matches("/fhir"));
        assert!(r.matches("/fhir/Patient/1"));
        assert!(!r.matches("/fhirx"));
        assert!(!r.matches("/fhi"));
        assert!(route("/", None).matches("/anything"));
    }

    #[test]
    fn longest_prefix_wins() {
        let router = Router::new(vec![route("/", None), route("/fhir", None), route("/fhir/admin", None)]);
        assert_eq!(&*router.find("/fhir/admin/x").map(|r| r.meta.prefix.clone()).unwrap(), "/fhir/admin");
        assert_eq!(&*router.find("/fhir/Patient").map(|r| r.meta.prefix.clone()).unwrap(), "/fhir");
        assert_eq!(&*router.find("/other").map(|r| r.meta.prefix.clone()).unwrap(), "/");
    }

    #[test]
    fn routes_stay_addressable_by_config_index() {
        let router = Router::new(vec![route("/", None), route("/fhir", Some("/baseR4"))]);
        assert_eq!(&*router.get(1).unwrap().meta.prefix, "/fhir");
        assert_eq!(router.get(1).unwrap().upstream_path("/fhir/Patient/1"), "/baseR4/Patient/1");
        assert_eq!(&*router.find("/fhir/x").unwrap().meta.prefix, "/fhir");
        assert!(router.get(2).is_none());
    }

    #[test]
    fn rewrite_replaces_the_prefix() {
        let r = route("/fhir", Some("/baseR4"));
        assert_eq!(r.upstream_path("/fhir/Patient/1"), "/baseR4/Patient/1");
        assert_eq!(r.upstream_path("/fhir"), "/baseR4");
        let r = route("/fhir", Some("/"));
        assert_eq!(r.upstream_path("/fhir/Patient/1"), "/Patient/1");
        assert_eq!(r.upstream_path("/fhir"), "/");
        assert_eq!(r.rest("/fhir"), "/");
        assert_eq!(r.rest("/fhir/metadata"), "/metadata");
    }
}
