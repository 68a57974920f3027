//! `IdentityConfig` → `IdentityStage`: every problem is reported at once, keyed by config path,
//! without echoing configured values.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use phigate_plugin::{ConfigIssue, StageBuildCtx, TenantId};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::claims::ClaimMap;
use crate::clock::{Clock, SystemClock};
use crate::config::{DpopConfig, IdentityConfig, IssuerConfig, RoutePolicyConfig};
use crate::dpop::Dpop;
use crate::error::{quotable, Challenges};
use crate::fetch::{HttpsSource, JwksSource};
use crate::introspect::Introspector;
use crate::jwks::KeyStore;
use crate::nonce::Nonces;
use crate::presets;
use crate::replay::SharedReplay;
use crate::session::Sessions;
use crate::stage::{ByExpiry, IssuerRt, RouteRt};
use crate::{metrics, IdentityStage};

type Issues = Vec<ConfigIssue>;

impl IdentityConfig {
    /// Builds the stage. Relative file paths resolve against `ctx.config_dir`; per-route settings
    /// are resolved by route name into the route index order.
    ///
    /// # Errors
    /// Every config problem found, each with its key path inside the `identity` section.
    pub fn build(self, ctx: &StageBuildCtx<'_>) -> Result<IdentityStage, Vec<ConfigIssue>> {
        self.build_with_clock(ctx, Arc::new(SystemClock))
    }

    /// [`IdentityConfig::build`] with an injected clock (tests, demos).
    ///
    /// # Errors
    /// As [`IdentityConfig::build`].
    pub fn build_with_clock(
        self,
        ctx: &StageBuildCtx<'_>,
        clock: Arc<dyn Clock>,
    ) -> Result<IdentityStage, Vec<ConfigIssue>> {
        crate::provider::install();
        let mut issues = Issues::new();
        self.check_limits(&mut issues);
        if self.issuers.is_empty() {
            issues.push(ConfigIssue::new("issuers", "at least one issuer is required"));
        }
        let mut issuers = Vec::new();
        let mut by_iss = HashMap::new();
        for (i, ic) in self.issuers.iter().enumerate() {
            if by_iss.insert(ic.issuer.clone(), i).is_some() {
                issues.push(ConfigIssue::new(format!("issuers[{i}].issuer"), "duplicate issuer"));
            }
            if let Some(rt) = build_issuer(ic, i, &self, ctx.config_dir, &clock, &mut issues) {
                issuers.push(rt);
            }
        }
        let opaque = opaque_issuer(&self, &mut issues);
        let nonces = build_nonces(&self.dpop, ctx.config_dir, clock.unix_secs(), &mut issues);
        let shared_replay = self.dpop.shared_replay.as_ref().and_then(|cfg| {
            let ttl = Duration::from_secs(self.dpop.proof_max_age_secs + self.dpop.proof_clock_skew_secs + 1);
            SharedReplay::build(cfg, ttl, ctx.config_dir, &mut issues)
        });
        let default_route = route_rt(&self.defaults, "defaults", &mut issues);
        for name in self.routes.keys() {
            if ctx.route_index(name).is_none() {
                issues.push(ConfigIssue::new(format!("routes.{name}"), "no route with this name"));
            }
        }
        let routes = ctx
            .routes
            .iter()
            .map(|r| match self.routes.get(&*r.name) {
                Some(ov) => route_rt(&ov.apply(&self.defaults), &format!("routes.{}", r.name), &mut issues),
                None => default_route.clone(),
            })
            .collect::<Vec<_>>();
        if !issues.is_empty() {
            return Err(issues);
        }
        let (Some(default_route), Some(routes)) =
            (default_route, routes.into_iter().collect::<Option<Vec<_>>>())
        else {
            return Err(vec![ConfigIssue::new("routes", "invalid route settings")]);
        };
        Ok(IdentityStage {
            issuers,
            by_iss,
            opaque,
            max_token_bytes: self.max_token_bytes,
            cache: Cache::builder().max_capacity(self.token_cache_size).expire_after(ByExpiry).build(),
            sessions: Sessions::new(self.idle_timeout_secs, self.session_cache_size),
            dpop: Dpop::new(&self.dpop, nonces),
            shared_replay,
            routes,
            default_route: Some(default_route),
            clock,
            ok: metrics::validation("ok"),
            hit: metrics::cache("hit"),
            miss: metrics::cache("miss"),
        })
    }

    fn check_limits(&self, issues: &mut Issues) {
        let j = &self.jwks;
        if !(256..=65_536).contains(&self.max_token_bytes) {
            issues.push(ConfigIssue::new("max_token_bytes", "must be between 256 and 65536"));
        }
        if j.min_refresh_secs == 0 || j.min_refresh_secs > j.max_refresh_secs {
            issues.push(ConfigIssue::new(
                "jwks.min_refresh_secs",
                "must be at least 1 and at most jwks.max_refresh_secs",
            ));
        }
        if j.backoff_initial_secs == 0 || j.backoff_initial_secs > j.backoff_max_secs {
            issues.push(ConfigIssue::new(
                "jwks.backoff_initial_secs",
                "must be at least 1 and at most jwks.backoff_max_secs",
            ));
        }
        if j.fetch_timeout_ms == 0 {
            issues.push(ConfigIssue::new("jwks.fetch_timeout_ms", "must be at least 1"));
        }
        let d = &self.dpop;
        if !(1..=300).contains(&d.proof_max_age_secs) {
            issues.push(ConfigIssue::new("dpop.proof_max_age_secs", "must be between 1 and 300"));
        }
        if d.proof_clock_skew_secs > 60 {
            issues.push(ConfigIssue::new("dpop.proof_clock_skew_secs", "must be at most 60"));
        }
        if d.replay_cache_size == 0 {
            issues.push(ConfigIssue::new("dpop.replay_cache_size", "must be at least 1"));
        }
        if !(512..=16_384).contains(&d.max_proof_bytes) {
            issues.push(ConfigIssue::new("dpop.max_proof_bytes", "must be between 512 and 16384"));
        }
        if self.token_cache_size == 0 || self.session_cache_size == 0 {
            issues.push(ConfigIssue::new("token_cache_size", "cache sizes must be at least 1"));
        }
    }
}

/// The issuer opaque tokens are introspected at. An opaque token names no issuer, so only one
/// may take them.
fn opaque_issuer(cfg: &IdentityConfig, issues: &mut Issues) -> Option<usize> {
    let mut takers = cfg
        .issuers
        .iter()
        .enumerate()
        .filter(|(_, ic)| ic.introspection.as_ref().is_some_and(|ix| ix.tokens.opaque()))
        .map(|(i, _)| i);
    let first = takers.next();
    if let Some(second) = takers.next() {
        issues.push(ConfigIssue::new(
            format!("issuers[{second}].introspection.tokens"),
            "only one issuer may introspect opaque tokens (they name no issuer); set tokens: jwt here",
        ));
    }
    first
}

/// RFC 9449 §9 nonces, when configured. The key file is read once, here; a short or unreadable
/// one is a config error (a guessable key would let anyone mint nonces).
fn build_nonces(cfg: &DpopConfig, dir: &Path, now: i64, issues: &mut Issues) -> Option<Nonces> {
    let n = cfg.nonce.as_ref()?;
    if !(10..=3600).contains(&n.rotation_secs) {
        issues.push(ConfigIssue::new("dpop.nonce.rotation_secs", "must be between 10 and 3600"));
    }
    let key = phigate_plugin::read_secret_key(&resolve(dir, &n.key_path), "dpop.nonce.key_path", issues)?;
    Some(Nonces::new(&key, n.rotation_secs, now))
}

/// `p`, relative to the config file's directory unless absolute.
pub(crate) fn resolve(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

fn build_issuer(
    ic: &IssuerConfig,
    i: usize,
    cfg: &IdentityConfig,
    dir: &Path,
    clock: &Arc<dyn Clock>,
    issues: &mut Issues,
) -> Option<IssuerRt> {
    let key = |k: &str| format!("issuers[{i}].{k}");
    let before = issues.len();
    if ic.issuer.is_empty() {
        issues.push(ConfigIssue::new(key("issuer"), "must not be empty"));
    }
    if ic.audiences.is_empty() || ic.audiences.iter().any(String::is_empty) {
        issues.push(ConfigIssue::new(key("audiences"), "at least one non-empty audience is required"));
    }
    if ic.algorithms.is_empty() {
        issues.push(ConfigIssue::new(key("algorithms"), "at least one algorithm is required"));
    }
    if ic.tenant.is_some() && ic.claims.tenant.is_some() {
        issues.push(ConfigIssue::new(key("tenant"), "set either tenant or claims.tenant, not both"));
    }
    let (mut mapping, mut required) = ic.preset.map(presets::preset).unwrap_or_default();
    mapping = presets::overlay(mapping, &ic.claims);
    required.extend(ic.required_claims.clone());
    let label: Arc<str> = Arc::from(ic.issuer.as_str());
    let keys = match (&ic.jwks_uri, &ic.jwks_path, &ic.introspection) {
        (None, None, Some(_)) => {
            if ic.ca_path.is_some() {
                issues.push(ConfigIssue::new(key("ca_path"), "only applies to jwks_uri"));
            }
            None
        }
        _ => key_store(ic, &label, &key, cfg, dir, clock, issues),
    };
    let introspection = ic.introspection.as_ref().and_then(|ix| {
        let k = key("introspection");
        let credentials = ix.check(&k, dir, issues)?;
        let roots = roots(ix.ca_path.as_deref().map(|p| resolve(dir, p)), &format!("{k}.ca_path"), issues)?;
        Introspector::new(Arc::clone(&label), ix, roots, credentials, cfg.token_cache_size, Arc::clone(clock))
            .map_err(|msg| issues.push(ConfigIssue::new(format!("{k}.endpoint"), msg)))
            .ok()
    });
    if issues.len() > before {
        return None;
    }
    Some(IssuerRt {
        iss: label,
        audiences: ic.audiences.clone(),
        algorithms: ic.algorithms.clone(),
        leeway: i64::try_from(ic.leeway_secs).unwrap_or(i64::MAX),
        map: ClaimMap::new(mapping),
        fixed_tenant: ic.tenant.as_deref().map(TenantId::from),
        require_typ: ic.require_at_jwt_typ,
        required_claims: required.into_iter().collect(),
        keys,
        introspection,
    })
}

/// The issuer's JWKS store; a JWKS file is loaded now, so `phigate check` reports a broken one
/// and the issuer is ready from the start.
fn key_store(
    ic: &IssuerConfig,
    label: &Arc<str>,
    key: &dyn Fn(&str) -> String,
    cfg: &IdentityConfig,
    dir: &Path,
    clock: &Arc<dyn Clock>,
    issues: &mut Issues,
) -> Option<Arc<KeyStore>> {
    let source = source(ic, key, dir, issues)?;
    let file = match &source {
        JwksSource::File(p) => Some(p.clone()),
        JwksSource::Https(_) => None,
    };
    let keys = Arc::new(KeyStore::new(Arc::clone(label), source, cfg.jwks.clone(), Arc::clone(clock)));
    if let Some(p) = file {
        let loaded = std::fs::read(&p)
            .map_err(|e| e.to_string())
            .and_then(|b| keys.install(&b, None).map_err(|e| e.to_string()));
        if let Err(e) = loaded {
            issues.push(ConfigIssue::new(key("jwks_path"), format!("cannot load the JWKS: {e}")));
        }
    }
    Some(keys)
}

/// The JWKS source: exactly one of an `https` URI (with its trust roots) or a file.
fn source(
    ic: &IssuerConfig,
    key: &dyn Fn(&str) -> String,
    dir: &Path,
    issues: &mut Issues,
) -> Option<JwksSource> {
    match (&ic.jwks_uri, &ic.jwks_path) {
        (Some(uri), None) => {
            let ca = ic.ca_path.as_deref().map(|p| resolve(dir, p));
            let roots = roots(ca, &key("ca_path"), issues)?;
            match HttpsSource::new(uri, roots) {
                Ok(h) => Some(JwksSource::Https(h)),
                Err(msg) => {
                    issues.push(ConfigIssue::new(key("jwks_uri"), msg));
                    None
                }
            }
        }
        (None, Some(p)) => {
            if ic.ca_path.is_some() {
                issues.push(ConfigIssue::new(key("ca_path"), "only applies to jwks_uri"));
            }
            Some(JwksSource::File(resolve(dir, p)))
        }
        _ => {
            let msg = if ic.introspection.is_some() {
                "set at most one of jwks_uri and jwks_path"
            } else {
                "set exactly one of jwks_uri and jwks_path (or introspection, for opaque tokens)"
            };
            issues.push(ConfigIssue::new(key("jwks_uri"), msg));
            None
        }
    }
}

fn roots(ca: Option<PathBuf>, key: &str, issues: &mut Issues) -> Option<rustls::RootCertStore> {
    let mut store = rustls::RootCertStore::empty();
    let Some(path) = ca else {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Some(store);
    };
    let certs = CertificateDer::pem_file_iter(&path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .unwrap_or_default();
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        issues.push(ConfigIssue::new(key, "no readable CA certificate in the file"));
        return None;
    }
    Some(store)
}

fn route_rt(p: &RoutePolicyConfig, key: &str, issues: &mut Issues) -> Option<RouteRt> {
    if p.require_mfa && p.mfa_amr.is_empty() && p.mfa_acr.is_empty() {
        issues.push(ConfigIssue::new(
            format!("{key}.require_mfa"),
            "MFA is required but no mfa_amr or mfa_acr value can prove it",
        ));
    }
    if !p.mfa_acr.iter().all(|a| quotable(a) && !a.contains(' ')) {
        issues.push(ConfigIssue::new(
            format!("{key}.mfa_acr"),
            "values must be printable ASCII without spaces, quotes or backslashes",
        ));
        return None;
    }
    let challenges = Challenges::for_route(&p.mfa_acr, p.max_auth_age_secs, p.require_dpop)?;
    Some(RouteRt { policy: p.clone(), challenges })
}
