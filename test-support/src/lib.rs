//! Test builders for phigate: an in-process gateway (and, with the demo pieces, PKI, sample
//! upstreams and TLS clients).

pub mod gateway;

pub use gateway::{free_port, wait_listening, TestGateway};
