//! The runtime model built once from a validated config: routes, upstream peers, limits and the
//! stage pipeline, shared read-only by every request.

use std::path::Path;
use std::sync::Arc;

use phigate_plugin::RouteMeta;
use thiserror::Error;

use crate::config::{Config, LimitsConfig};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::request::TargetLimits;
use crate::routing::{Route, Router};
use crate::tls::TlsError;
pub use crate::upstream::Upstream;

/// Everything a request needs, built from config.
#[derive(Debug)]
pub struct Runtime {
    /// Routes.
    pub router: Router,
    /// Route metadata in config order (index = `RouteMeta::index`).
    pub routes: Vec<Arc<RouteMeta>>,
    /// Upstreams in config order.
    pub upstreams: Vec<Arc<Upstream>>,
    /// The stages.
    pub pipeline: Pipeline,
    /// Size limits.
    pub limits: LimitsConfig,
    /// Limits for target normalization.
    pub target_limits: TargetLimits,
    /// Proxies whose `X-Forwarded-For` is kept.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Tracing, when configured.
    pub telemetry: Option<crate::telemetry::Telemetry>,
    /// Bulk export URL sealing, when configured.
    pub bulk: Option<crate::bulk::Bulk>,
    /// Level of response compression for clients that accept it (0: off).
    pub response_compression_level: u32,
}

/// The runtime could not be built from an otherwise valid config.
#[derive(Debug, Error)]
pub enum BuildError {
    /// TLS material failed to load.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// An upstream address does not resolve.
    #[error("upstream {name}: address does not resolve")]
    Resolve {
        /// Upstream name.
        name: String,
    },
    /// A reference between config items is broken (validation should have caught it).
    #[error("{0}")]
    Invalid(String),
    /// A stage's config section is invalid.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigErrors),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The tracing exporter could not be built.
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
}

/// Route metadata for a config, in order (what stage builders index by).
pub fn route_metas(cfg: &Config) -> Vec<Arc<RouteMeta>> {
    cfg.routes
        .iter()
        .enumerate()
        .map(|(index, r)| {
            Arc::new(RouteMeta {
                name: r.name.as_str().into(),
                index,
                prefix: r.path_prefix.as_str().into(),
                fhir: r.fhir,
                upstream: r.upstream.as_str().into(),
            })
        })
        .collect()
}

impl Runtime {
    /// Builds the runtime. Upstream DNS names are resolved here, once, so that no request ever
    /// blocks a worker on name resolution.
    ///
    /// # Errors
    /// When TLS material does not load or an address does not resolve.
    pub fn build(cfg: &Config, dir: &Path, pipeline: Pipeline) -> Result<Runtime, BuildError> {
        let metrics = crate::metrics::metrics()?;
        let upstreams = cfg
            .upstreams
            .iter()
            .map(|u| Upstream::build(u, dir).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        crate::upstream::health::publish(&upstreams, &metrics);
        for u in &upstreams {
            u.publish_pending(metrics.upstream_pending.with_label_values(&[&*u.name]));
        }
        let routes = route_metas(cfg);
        let mut runtime_routes = Vec::with_capacity(routes.len());
        for (meta, r) in routes.iter().zip(&cfg.routes) {
            let upstream = cfg
                .upstreams
                .iter()
                .position(|u| u.name == r.upstream)
                .ok_or_else(|| BuildError::Invalid(format!("route {}: unknown upstream", r.name)))?;
            let cors = r
                .cors
                .as_ref()
                .map(|c| crate::cors::CorsPolicy::build(c).map(Arc::new))
                .transpose()
                .map_err(|e| BuildError::Invalid(format!("route {}: {e}", r.name)))?;
            let tenant = r
                .tenant
                .as_ref()
                .map(|t| {
                    crate::tenant::RouteTenant::build(t)
                        .ok_or_else(|| BuildError::Invalid(format!("route {}: invalid tenant", r.name)))
                })
                .transpose()?;
            runtime_routes.push(
                Route::new(meta.clone(), upstream, &r.path_prefix, r.upstream_path_prefix.as_deref())
                    .with_cors(cors)
                    .with_tenant(tenant),
            );
        }
        let trusted_proxies = cfg
            .trusted_proxies
            .iter()
            .map(|c| {
                c.parse::<ipnet::IpNet>()
                    .map_err(|_| BuildError::Invalid("trusted_proxies: invalid CIDR".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Runtime {
            router: Router::new(runtime_routes),
            routes,
            upstreams,
            pipeline,
            target_limits: TargetLimits {
                max_target_bytes: cfg.limits.max_target_bytes,
                ..TargetLimits::default()
            },
            limits: cfg.limits.clone(),
            trusted_proxies,
            metrics,
            response_compression_level: cfg.server.response_compression_level,
            telemetry: cfg.tracing.as_ref().map(|t| crate::telemetry::Telemetry::new(t, dir)).transpose()?,
            bulk: cfg.bulk_export.as_ref().map(|b| crate::bulk::Bulk::build(b, dir)).transpose().map_err(
                |issues| {
                    BuildError::Invalid(issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
                },
            )?,
        })
    }
}
