//! `phigate demo`: PLACEHOLDER until the demo pieces land.
#![allow(missing_docs)]
use std::path::PathBuf;
use std::process::ExitCode;

pub fn run_demo(_dir: Option<PathBuf>, _port: Option<u16>) -> ExitCode {
    eprintln!("demo: not built yet");
    ExitCode::FAILURE
}
