//! Configuration: YAML → typed model → validation (every error at once, with file, line and key
//! path, never the value).

mod load;
mod model;

pub use load::*;
pub use model::*;
