//! `bench-rate`: open-loop fixed-rate load (see the `rate` module for the latency rules).
//! Prints one JSON object (a `RateReport`) on stdout.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use clap::Parser;
use http::{header::HeaderName, HeaderValue};
use phigate_bench_upstream::{rate, tls};
use rustls::pki_types::ServerName;

/// Sends GET requests at a fixed offered rate and reports latency percentiles and errors.
#[derive(Debug, Parser)]
struct Args {
    /// Target socket address (must be loopback).
    #[arg(long)]
    addr: SocketAddr,
    /// TLS server name (SNI), also used as Host/:authority.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// File with one request path per line (used round-robin).
    #[arg(long)]
    paths_file: PathBuf,
    /// Extra header, `Name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Offered rate, requests per second; 0 = closed loop (maximum throughput).
    #[arg(long)]
    rate: f64,
    /// HTTP/2 streams in flight per connection at most.
    #[arg(long, default_value_t = 512)]
    h2_streams: usize,
    /// Whole run in seconds, warm-up included.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Seconds at the start whose results are discarded.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Use HTTP/2 (else HTTP/1.1 keep-alive).
    #[arg(long)]
    h2: bool,
    /// CA (PEM) for the target's certificate.
    #[arg(long)]
    ca: PathBuf,
    /// Client certificate (PEM) to present (mTLS targets).
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-rate: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // The load tests send traffic only to this machine.
    if !args.addr.ip().is_loopback() {
        return Err("refusing a non-loopback target".into());
    }
    if args.rate.is_nan()
        || args.rate < 0.0
        || args.connections == 0
        || args.warmup_secs >= args.duration_secs
    {
        return Err("need rate >= 0, connections > 0 and warmup < duration".into());
    }
    let paths: Vec<String> = std::fs::read_to_string(&args.paths_file)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if paths.is_empty() {
        return Err("paths file is empty".into());
    }
    let client = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some((tls::load_certs(cert)?, tls::load_key(key)?)),
        _ => None,
    };
    let plan = rate::RatePlan {
        addr: args.addr,
        server_name: ServerName::try_from(args.server_name.clone())?,
        authority: args.server_name.clone(),
        paths: Arc::new(paths),
        headers: parse_headers(&args.headers)?,
        rate_per_sec: args.rate,
        h2_streams: args.h2_streams,
        duration: Duration::from_secs(args.duration_secs),
        warmup: Duration::from_secs(args.warmup_secs),
        connections: args.connections,
        h2: args.h2,
        tls: tls::client_config(&tls::load_certs(&args.ca)?, client, args.h2)?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let report = runtime.block_on(rate::run(plan))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn parse_headers(raw: &[String]) -> Result<Vec<(HeaderName, HeaderValue)>, Box<dyn std::error::Error>> {
    raw.iter()
        .map(|h| {
            let (name, value) = h.split_once(':').ok_or("header must be `Name: value`")?;
            Ok((HeaderName::try_from(name.trim())?, HeaderValue::try_from(value.trim())?))
        })
        .collect()
}
