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

/// Shortest secret key accepted by [`read_secret_key`], in bytes: HMAC-SHA256's output length
/// (RFC 2104 §3 asks for at least that).
pub const MIN_SECRET_KEY_BYTES: usize = 32;

/// Reads a raw secret key file (an HMAC key a stage keys names or nonces with; `path` already
/// resolved against the config directory). A file that cannot be read, or holds fewer than
/// [`MIN_SECRET_KEY_BYTES`] bytes, is pushed to `issues` under `key`, naming neither the path's
/// contents nor any byte of it: a guessable key would let anyone compute what it protects.
pub fn read_secret_key(path: &Path, key: &str, issues: &mut Vec<ConfigIssue>) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(k) if k.len() >= MIN_SECRET_KEY_BYTES => Some(k),
        Ok(_) => {
            issues.push(ConfigIssue::new(key, "key shorter than 32 bytes"));
            None
        }
        Err(e) => {
            issues.push(ConfigIssue::new(key, format!("cannot be read: {}", e.kind())));
            None
        }
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
