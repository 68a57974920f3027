//! Reading the config file: YAML → [`Config`], with file, line and key path on every error.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::messages::rewrite;
use super::{Config, ConfigError, ConfigErrors, KeySpans};

/// A config file larger than this is refused: a real one is a few kilobytes, and the whole file
/// is held in memory twice while parsing.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// A parsed config file, with what is needed to report later errors against its source.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The typed config. Relative file paths in it are already resolved against `dir`.
    pub config: Config,
    /// The config file, as given (errors name it this way).
    pub path: PathBuf,
    /// The absolute directory of the config file: relative paths in stage sections resolve
    /// against it.
    pub dir: PathBuf,
    /// Source lines of every key, for errors found after parsing.
    pub spans: KeySpans,
}

impl LoadedConfig {
    /// An error about `key_path`, located at the line of that key (or of its closest parent).
    pub fn error_at(&self, key_path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        let key_path = key_path.into();
        let line = self.spans.line(&key_path);
        ConfigError::new(&self.path, line, key_path, message)
    }
}

/// Reads and parses the config file at `path`.
///
/// # Errors
/// The file cannot be read, is not valid YAML, or does not match the config model (unknown key,
/// wrong type, missing required key): one error, naming the file, line and key path, never the
/// value.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigErrors> {
    let source = read_source(path)?;
    load_from_str(&source, path)
}

/// Parses config `source` as if it had been read from `path` (used for error messages and to
/// resolve relative paths; the file itself is not read).
///
/// # Errors
/// As [`load`], except for reading the file.
pub fn load_from_str(source: &str, path: &Path) -> Result<LoadedConfig, ConfigErrors> {
    let spans = KeySpans::parse(source);
    let deserializer = serde_yaml::Deserializer::from_str(source);
    let mut config: Config = serde_path_to_error::deserialize(deserializer)
        .map_err(|err| ConfigErrors::one(parse_error(&err, path, &spans)))?;
    let dir = config_dir(path);
    resolve_paths(&mut config, &dir);
    Ok(LoadedConfig { config, path: path.to_owned(), dir, spans })
}

/// Reads the file, bounded in size, without putting the OS error text (which may quote the path
/// or contents) in the message.
fn read_source(path: &Path) -> Result<String, ConfigErrors> {
    let fail = |message: String| ConfigErrors::one(ConfigError::new(path, None, "", message));
    let file =
        std::fs::File::open(path).map_err(|e| fail(format!("cannot read the config file: {}", e.kind())))?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read the config file: {}", e.kind())))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(fail(format!("the config file is larger than {MAX_CONFIG_BYTES} bytes")));
    }
    String::from_utf8(bytes).map_err(|_| fail("the config file is not valid UTF-8".to_owned()))
}

/// One parse error: the key path from `serde_path_to_error`, the line from serde_yaml's mark (or
/// the key's line), and a message without the value.
fn parse_error(
    err: &serde_path_to_error::Error<serde_yaml::Error>,
    file: &Path,
    spans: &KeySpans,
) -> ConfigError {
    let mut key_path = err.path().to_string();
    if key_path == "." {
        key_path.clear();
    }
    let rewritten = rewrite(&err.inner().to_string());
    // The key's own line first: serde_yaml's mark points at the value, or for a syntax error at
    // where parsing gave up (an unclosed quote is reported at the end of the file).
    // (A path ending in `?`, where the parser lost track of the key, is never an exact match.)
    let mut line = spans.exact(&key_path).or(err.inner().location().map(|l| l.line()));
    while let Some(parent) = key_path.strip_suffix(".?").or(key_path.strip_suffix('?')) {
        key_path = parent.to_owned();
    }
    if let Some(unknown) = rewritten.unknown_key {
        key_path = with_key(key_path, &unknown);
        line = spans.exact(&key_path).or(line);
    }
    if let Some(duplicate) = rewritten.duplicate_key {
        key_path = with_key(key_path, &duplicate);
        line = spans.repeated(&key_path).or(line);
    }
    if line.is_none() && !key_path.is_empty() {
        line = spans.line(&key_path);
    }
    ConfigError::new(file, line, key_path, rewritten.message)
}

/// `key_path` ending with `key` (serde_path_to_error usually includes an unknown key already).
fn with_key(key_path: String, key: &str) -> String {
    if key_path == key || key_path.ends_with(&format!(".{key}")) {
        key_path
    } else if key_path.is_empty() {
        key.to_owned()
    } else {
        format!("{key_path}.{key}")
    }
}

/// The absolute directory holding the config file.
fn config_dir(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    match absolute.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Makes every relative file path in the config relative to the config file's directory, so that
/// `phigate run` behaves the same from any working directory.
fn resolve_paths(config: &mut Config, dir: &Path) {
    let resolve = |p: &mut PathBuf| {
        // An empty path stays empty so that validation can name it (joined, it would be `dir`).
        if p.is_relative() && !p.as_os_str().is_empty() {
            *p = dir.join(&*p);
        }
    };
    for listener in &mut config.listeners {
        resolve(&mut listener.tls.cert_path);
        resolve(&mut listener.tls.key_path);
        if let Some(ca) = &mut listener.tls.client_ca_path {
            resolve(ca);
        }
    }
    for upstream in &mut config.upstreams {
        if let Some(tls) = &mut upstream.tls {
            resolve(&mut tls.ca_path);
            resolve(&mut tls.client_cert_path);
            resolve(&mut tls.client_key_path);
        }
    }
    resolve(&mut config.server.upgrade_sock);
    resolve(&mut config.server.pid_file);
}
