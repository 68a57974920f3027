//! Test builders for phigate.
