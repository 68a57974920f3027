//! What `phigate demo` runs besides the gateway, and what the tests reuse: a dev PKI
//! ([`pki`]), deterministic synthetic FHIR R4 data for two tenants ([`data`]), and a sample
//! FHIR R4 upstream served over mutual TLS ([`upstream`]), and a dev authorization server that
//! vouches for the demo's opaque tokens ([`authz`]).
//!
//! None of this is for production. The PKI is generated on every run; the upstream serves
//! synthetic data only (no real PHI anywhere in the demo), read-only.

pub mod authz;
pub mod data;
pub mod personas;
pub mod pki;
pub mod policies;
pub mod run;
pub mod upstream;
