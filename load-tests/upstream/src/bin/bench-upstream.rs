//! `bench-upstream`: the load tests' FHIR upstream (mTLS, TLS 1.3, canned JSON).

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use clap::Parser;
use phigate_bench_upstream::{fhir::Payloads, server, tls};

/// A fast mTLS FHIR upstream for load tests: GET /fhir/Patient/{id} (~1 KB) and
/// GET /fhir/Observation?patient={id}&_count=50 (~50 KB searchset Bundle).
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on (loopback only for load tests).
    #[arg(long, default_value = "127.0.0.1:18444")]
    listen: String,
    /// Server certificate chain (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Server private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// CA (PEM) that client certificates must chain to; a client without one is refused.
    #[arg(long)]
    client_ca: PathBuf,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Known patient ids (comma-separated); others get 404.
    #[arg(long, default_value = "pat-1,pat-2,pat-3,pat-4,pat-5,pat-6,pat-7,pat-8")]
    patients: String,
    /// Also accept OTLP/HTTP trace exports (plain HTTP) on this address and discard them: the
    /// collector a traced gateway sends its spans to.
    #[arg(long)]
    otlp_sink: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-upstream: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let config = tls::server_config(
        tls::load_certs(&args.cert)?,
        tls::load_key(&args.key)?,
        &tls::load_certs(&args.client_ca)?,
    )?;
    let payloads = Arc::new(Payloads::new(args.patients.split(',')));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.listen).await?;
        println!("bench-upstream listening on {}", listener.local_addr()?);
        if let Some(addr) = &args.otlp_sink {
            let sink = tokio::net::TcpListener::bind(addr).await?;
            println!("bench-upstream OTLP sink on {}", sink.local_addr()?);
            tokio::spawn(server::otlp_sink(sink));
        }
        tokio::select! {
            () = server::serve(listener, config, payloads) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(())
    })
}
