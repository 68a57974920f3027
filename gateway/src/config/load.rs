//! PLACEHOLDER until the config branch lands (same API, no line numbers).
#![allow(missing_docs, unreachable_pub)]
use std::path::{Path, PathBuf};

use super::Config;

#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    pub path: PathBuf,
    pub dir: PathBuf,
}
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);
impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for e in &self.0 {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}
#[derive(Debug, Clone, Copy)]
pub struct ValidateOptions {
    pub check_files: bool,
}
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigErrors> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigErrors(vec![format!("{}: {e}", path.display())]))?;
    let config: Config =
        serde_yaml::from_str(&text).map_err(|e| ConfigErrors(vec![format!("{}: {e}", path.display())]))?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(LoadedConfig { config, path: path.to_owned(), dir })
}
pub fn validate(_l: &LoadedConfig, _o: ValidateOptions) -> Result<(), ConfigErrors> {
    Ok(())
}
pub fn reference_markdown() -> String {
    String::new()
}
