//! The demo.
pub mod run;
