//! Building the built-in stages from their config sections, in the fixed pipeline order, with
//! their config problems reported like every other config error (file, line, key path).

use std::sync::Arc;

use phigate_plugin::{ConfigIssue, RouteMeta, Stage, StageBuildCtx};

use crate::config::{stage_issues, ConfigErrors, LoadedConfig};

/// The built-in stages, split around where custom stages go.
#[derive(Default)]
pub struct BuiltStages {
    /// Identity, rate limit, policy, pagination, exfiltration watch (those configured).
    pub decide: Vec<Arc<dyn Stage>>,
    /// Audit: always last, so its record describes the request exactly as forwarded.
    pub record: Vec<Arc<dyn Stage>>,
    /// The exfiltration watch (also in `decide`), for the admin actions that lift its blocks.
    pub exfil: Option<Arc<phigate_exfil::ExfilStage>>,
}

/// Builds every configured stage.
///
/// # Errors
/// Every stage config problem, located in the file.
pub fn build_stages(loaded: &LoadedConfig, routes: &[Arc<RouteMeta>]) -> Result<BuiltStages, ConfigErrors> {
    let ctx = StageBuildCtx { routes, config_dir: &loaded.dir };
    let cfg = &loaded.config;
    // In pipeline order; audit is the recording stage, always last.
    let decide = vec![
        ("identity", cfg.identity.clone().map(|c| boxed(c.build(&ctx)))),
        ("rate_limits", cfg.rate_limits.clone().map(|c| boxed(c.build(&ctx)))),
        ("policy", cfg.policy.clone().map(|c| boxed(c.build(&ctx)))),
    ];
    let exfil = cfg.exfil.clone().map(|c| c.build(&ctx).map(Arc::new));
    let record = vec![("audit", cfg.audit.clone().map(|c| boxed(c.build(&ctx))))];
    let mut errors = Vec::new();
    let mut built = BuiltStages::default();
    for (into, sections) in [(&mut built.decide, decide), (&mut built.record, record)] {
        for (section, stage) in sections {
            match stage {
                Some(Ok(stage)) => into.push(stage),
                Some(Err(issues)) => errors.extend(stage_issues(section, issues, loaded)),
                None => {}
            }
        }
    }
    // Last of `decide`, kept typed as well.
    match exfil {
        Some(Ok(stage)) => {
            built.decide.push(stage.clone());
            built.exfil = Some(stage);
        }
        Some(Err(issues)) => errors.extend(stage_issues("exfil", issues, loaded)),
        None => {}
    }
    if errors.is_empty() {
        Ok(built)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn boxed<S: Stage>(built: Result<S, Vec<ConfigIssue>>) -> Result<Arc<dyn Stage>, Vec<ConfigIssue>> {
    built.map(|stage| Arc::new(stage) as Arc<dyn Stage>)
}
