//! phigate: a zero-trust, PHI-aware API gateway on pingora.

pub mod admin;
pub mod bulk;
pub mod changes;
pub mod config;
pub mod cors;
pub mod error_response;
pub mod events;
pub mod logsink;
pub mod metrics;
pub mod pipeline;
pub mod proxy;
pub mod request;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod stages;
pub mod telemetry;
pub mod tenant;
pub mod tls;
pub mod upstream;

pub use server::{Gateway, GatewayBuilder, Reloader};
pub mod cli;
pub mod demo;
