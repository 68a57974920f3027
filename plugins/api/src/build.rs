//! What a stage's config sees when it is built, and how it reports config problems.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use crate::RouteMeta;

/// Context for building a stage from its config section.
#[derive(Debug, Clone, Copy)]
pub struct StageBuildCtx<'a> {
    /// The configured routes, in order (`RouteMeta::index` is the position here). Stages resolve
    /// per-route settings keyed by route name into a `Vec` indexed by route index.
    pub routes: &'a [Arc<RouteMeta>],
    /// The directory of the config file: relative paths in a stage's config resolve against it.
    pub config_dir: &'a Path,
}

impl StageBuildCtx<'_> {
    /// The index of the route with this name.
    pub fn route_index(&self, name: &str) -> Option<usize> {
        self.routes.iter().position(|r| &*r.name == name)
    }
}

/// One problem in a stage's config section. The gateway prefixes `key_path` with the section
/// name and reports it with the file and line; the message must not echo the configured value
/// (it may be a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Key path inside the stage's section, like `issuers[0].jwks_uri`.
    pub key_path: String,
    /// What is wrong, without the value.
    pub message: String,
}

impl ConfigIssue {
    /// A new issue.
    pub fn new(key_path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigIssue { key_path: key_path.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key_path, self.message)
    }
}

/// A long-running task a stage needs (JWKS refresh, audit writer, policy reload). The gateway runs
/// it on a background runtime for the life of the process.
pub type BackgroundTask = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;
