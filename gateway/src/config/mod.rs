//! Configuration: YAML → typed model → validation (every error at once, with file, line and key
//! path, never the value) → a generated reference.
//!
//! ```text
//! load(path)          parse errors (unknown key, wrong type, missing key, bad YAML): one error
//! validate(&loaded)   every semantic problem at once (names, addresses, routes, TLS, files)
//! reference_markdown  config/REFERENCE.md, from the `///` docs of the model
//! ```

mod error;
mod files;
mod load;
mod messages;
mod model;
mod reference;
mod spans;
mod upstream;
mod validate;
mod warnings;

pub use error::{ConfigError, ConfigErrors};
pub use load::{load, load_from_str, LoadedConfig};
pub use model::*;
pub use reference::{json_schema, reference_markdown};
pub use spans::KeySpans;
pub use upstream::{
    HealthCheckConfig, UpstreamConfig, UpstreamTlsConfig, MAX_CONNECT_RETRIES, MAX_ENDPOINTS,
};
pub use validate::{load_and_validate, stage_issues, validate, ValidateOptions};
pub use warnings::warnings;

#[cfg(test)]
mod tests;
