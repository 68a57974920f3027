//! Building the built-in stages from their config sections, in the fixed pipeline order, with
//! their config problems reported like every other config error (file, line, key path).

use std::sync::Arc;

use phigate_plugin::{ConfigIssue, RouteMeta, Stage, StageBuildCtx};

use crate::config::{stage_issues, ConfigErrors, LoadedConfig};

/// The built-in stages, split around where custom stages go.
#[derive(Default)]
pub struct BuiltStages {
    /// Identity, rate limit, policy, pagination, exfiltration watch, identity assertion (those
    /// configured).
    pub decide: Vec<Arc<dyn Stage>>,
    /// Audit: always last, so its record describes the request exactly as forwarded.
    pub record: Vec<Arc<dyn Stage>>,
    /// The exfiltration watch (also in `decide`), for the admin actions that lift its blocks.
    pub exfil: Option<Arc<phigate_exfil::ExfilStage>>,
    /// The audit trail (also in `record`), where those actions are recorded.
    pub audit: Option<Arc<phigate_audit::AuditStage>>,
    /// The identity assertion stage (also in `decide`, last), whose JWKS the admin port serves.
    pub assertion: Option<Arc<phigate_assertion::AssertionStage>>,
}

/// Builds every configured stage.
///
/// # Errors
/// Every stage config problem, located in the file.
pub fn build_stages(loaded: &LoadedConfig, routes: &[Arc<RouteMeta>]) -> Result<BuiltStages, ConfigErrors> {
    let ctx = StageBuildCtx { routes, config_dir: &loaded.dir };
    let cfg = &loaded.config;
    let mut errors = Vec::new();
    let identity = typed("identity", cfg.identity.clone().map(|c| c.build(&ctx)), loaded, &mut errors);
    let rate_limits =
        typed("rate_limits", cfg.rate_limits.clone().map(|c| c.build(&ctx)), loaded, &mut errors);
    let policy = typed("policy", cfg.policy.clone().map(|c| c.build(&ctx)), loaded, &mut errors);
    let exfil = typed("exfil", cfg.exfil.clone().map(|c| c.build(&ctx)), loaded, &mut errors);
    let assertion = typed("assertion", cfg.assertion.clone().map(|c| c.build(&ctx)), loaded, &mut errors);
    let audit = typed("audit", cfg.audit.clone().map(|c| c.build(&ctx)), loaded, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    // In pipeline order; audit is the recording stage, always last.
    let decide = [
        identity.map(|s| s as Arc<dyn Stage>),
        rate_limits.map(|s| s as Arc<dyn Stage>),
        policy.map(|s| s as Arc<dyn Stage>),
        exfil.clone().map(|s| s as Arc<dyn Stage>),
        assertion.clone().map(|s| s as Arc<dyn Stage>),
    ];
    Ok(BuiltStages {
        decide: decide.into_iter().flatten().collect(),
        record: audit.clone().map(|s| s as Arc<dyn Stage>).into_iter().collect(),
        exfil,
        audit,
        assertion,
    })
}

/// The stage of a configured section, or its problems added to `errors`.
fn typed<S>(
    section: &str,
    built: Option<Result<S, Vec<ConfigIssue>>>,
    loaded: &LoadedConfig,
    errors: &mut Vec<crate::config::ConfigError>,
) -> Option<Arc<S>> {
    match built? {
        Ok(stage) => Some(Arc::new(stage)),
        Err(issues) => {
            errors.extend(stage_issues(section, issues, loaded));
            None
        }
    }
}
