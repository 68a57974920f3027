//! phigate: a zero-trust, PHI-aware API gateway on pingora.

pub mod request;
