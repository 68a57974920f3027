//! Building the built-in stages from their config sections, in the fixed pipeline order, with
//! their config problems reported like every other config error (file, line, key path).

use std::sync::Arc;

use phigate_plugin::{RouteMeta, Stage, StageBuildCtx};

use crate::config::{stage_issues, ConfigErrors, LoadedConfig};

/// The built-in stages, split around where custom stages go.
#[derive(Default)]
pub struct BuiltStages {
    /// Identity, rate limit, policy, pagination, exfiltration watch (those configured).
    pub decide: Vec<Arc<dyn Stage>>,
    /// Audit: always last, so its record describes the request exactly as forwarded.
    pub record: Vec<Arc<dyn Stage>>,
}

/// Builds every configured stage.
///
/// # Errors
/// Every stage config problem, located in the file.
pub fn build_stages(loaded: &LoadedConfig, routes: &[Arc<RouteMeta>]) -> Result<BuiltStages, ConfigErrors> {
    let ctx = StageBuildCtx { routes, config_dir: &loaded.dir };
    let mut errors = Vec::new();
    let mut built = BuiltStages::default();
    if let Some(identity) = loaded.config.identity.clone() {
        match identity.build(&ctx) {
            Ok(stage) => built.decide.push(Arc::new(stage)),
            Err(issues) => errors.extend(stage_issues("identity", issues, loaded)),
        }
    }
    if let Some(limits) = loaded.config.rate_limits.clone() {
        match limits.build(&ctx) {
            Ok(stage) => built.decide.push(Arc::new(stage)),
            Err(issues) => errors.extend(stage_issues("rate_limits", issues, loaded)),
        }
    }
    if let Some(policy) = loaded.config.policy.clone() {
        match policy.build(&ctx) {
            Ok(stage) => built.decide.push(Arc::new(stage)),
            Err(issues) => errors.extend(stage_issues("policy", issues, loaded)),
        }
    }
    if let Some(exfil) = loaded.config.exfil.clone() {
        match exfil.build(&ctx) {
            Ok(stage) => built.decide.push(Arc::new(stage)),
            Err(issues) => errors.extend(stage_issues("exfil", issues, loaded)),
        }
    }
    if let Some(audit) = loaded.config.audit.clone() {
        match audit.build(&ctx) {
            Ok(stage) => built.record.push(Arc::new(stage)),
            Err(issues) => errors.extend(stage_issues("audit", issues, loaded)),
        }
    }
    if errors.is_empty() {
        Ok(built)
    } else {
        Err(ConfigErrors(errors))
    }
}
