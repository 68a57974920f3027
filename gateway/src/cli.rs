//! The command line: `run`, `check`, `demo`, `config schema` (and, as their stages land,
//! `policy test|eval` and `audit verify`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::builder::PossibleValuesParser;
use clap::{Parser, Subcommand};
use phigate_plugin::ShadowOutcome;

use crate::config::{self, ValidateOptions};

/// phigate: a zero-trust, PHI-aware API gateway.
#[derive(Debug, Parser)]
#[command(name = "phigate", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Run {
        /// The gateway config file (YAML).
        #[arg(long, short)]
        config: PathBuf,
        /// Take over the listening sockets of a running phigate (after it got SIGQUIT).
        #[arg(long, short)]
        upgrade: bool,
    },
    /// Validate a config file: exit 0, or print one line per error and exit 2.
    Check {
        /// The gateway config file (YAML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the demo: dev PKI, dev token issuer, a sample FHIR upstream over mTLS, and the gateway.
    Demo {
        /// A demo tool instead of running the demo.
        #[command(subcommand)]
        command: Option<DemoCommand>,
        /// Where to write the demo's files (default: a new temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Gateway port (default: a free port).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Policy tools for security teams.
    Policy {
        /// Policy subcommand.
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Audit trail tools.
    Audit {
        /// Audit subcommand.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Config tools.
    Config {
        /// Config subcommand.
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// `phigate demo` subcommands.
#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// Print a fresh DPoP proof (RFC 9449) for one request by a DPoP persona of a running demo
    /// (for `-H "DPoP: $(phigate demo proof ...)"`; a proof is good for one request).
    Proof {
        /// The demo's directory (its `--dir`).
        #[arg(long)]
        dir: PathBuf,
        /// The persona whose key signs the proof.
        #[arg(long, default_value = "dpop_app")]
        persona: String,
        /// The request method.
        method: String,
        /// The request URL (`https://localhost:PORT/fhir/...`).
        url: String,
    },
}

/// `phigate policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Run every `test_*` rule of every `*_test.rego` in DIR (default `policies`) through the
    /// same engine the gateway uses; PASS/FAIL per rule and coverage. Exit 0 only if all pass.
    Test {
        /// The policy directory.
        #[arg(default_value = "policies")]
        dir: PathBuf,
        /// Only the tests whose full rule path matches this regular expression (like
        /// `opa test --run`): `tenant_test`, `test_break_glass_.*`.
        #[arg(long)]
        run: Option<String>,
        /// Fail (exit 1) when line coverage over the policy files is below this percentage.
        #[arg(long, value_parser = coverage_threshold)]
        threshold: Option<f64>,
        /// Output format: `text`, or `json` (one document: results, coverage, agreement).
        #[arg(long, value_enum, default_value = "text")]
        format: TestFormatArg,
    },
    /// Decide every input of a corpus with two policy directories (each with its `data/`) and
    /// list the inputs decided differently: what a change would do, before it is rolled out.
    /// Exit 0 when every input is decided alike, 1 when some differ, 2 on errors.
    Diff {
        /// The policies in force (before the change).
        #[arg(long)]
        from: PathBuf,
        /// The changed policies.
        #[arg(long)]
        to: PathBuf,
        /// The inputs: a JSON object `{name: input}` (like `probes.json`) or JSON Lines.
        /// Default: `FROM/probes.json`.
        #[arg(long)]
        inputs: Option<PathBuf>,
    },
    /// Print the decision for one input document (JSON, the documented input schema).
    Eval {
        /// The input document.
        #[arg(long)]
        input: PathBuf,
        /// The policy directory.
        #[arg(long, default_value = "policies")]
        dir: PathBuf,
    },
}

/// `phigate audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify an audit directory: every hash chain, segment link and checkpoint signature. Given
    /// a file instead, verify a copy of the trail that `audit.forward` delivered (the lines a
    /// collector received, in order): its segments as the files, lines received twice skipped
    /// once proven identical. Exit 0 intact, 1 tampered, 2 unreadable.
    Verify {
        /// The audit directory, or a file holding a forwarded copy.
        dir: PathBuf,
        /// The Ed25519 public key (PEM or raw) checkpoints must verify with. Without it, the key
        /// recorded in the first segment header is trusted.
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Report accesses from a verified audit directory: who touched which patient, when, and
    /// the outcome (an accounting of disclosures, HIPAA 164.528). Verifies the trail first and
    /// writes nothing unless it is intact. Exit 0 (even with no match), 1 tampered, 2 unreadable.
    Report {
        /// The audit directory.
        dir: PathBuf,
        /// The Ed25519 public key checkpoints must verify with (as for `verify`).
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Only accesses that reached this patient id: named in the request, or in a response the
        /// gateway verified (a search result, an export file).
        #[arg(long)]
        patient: Option<String>,
        /// Only accesses by this subject (token `sub`).
        #[arg(long)]
        subject: Option<String>,
        /// Only accesses in this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Only accesses from this time on (UTC: 2026-11-01T08:00:00Z, or a date).
        #[arg(long, value_parser = phigate_audit::parse_time)]
        since: Option<std::time::SystemTime>,
        /// Only accesses before this time (UTC: 2026-11-01T08:00:00Z, or a date).
        #[arg(long, value_parser = phigate_audit::parse_time)]
        until: Option<std::time::SystemTime>,
        /// Only emergency (break-glass) accesses.
        #[arg(long)]
        break_glass: bool,
        /// Only accesses the gateway refused.
        #[arg(long)]
        denied: bool,
        /// Only accesses that met records restricted by security labels the caller is not
        /// cleared for (search entries left out, reads or writes refused).
        #[arg(long)]
        restricted: bool,
        /// Only accesses a shadow policy compared with this outcome (as the audit record names
        /// it): what a candidate policy would have changed on real traffic.
        #[arg(long, value_parser = PossibleValuesParser::new(ShadowOutcome::ALL.map(ShadowOutcome::as_str)))]
        shadow: Option<String>,
        /// Only bulk export accesses: kick-offs, and the export's status and files reached
        /// through the URLs the gateway issued (who exported, who downloaded which file).
        #[arg(long)]
        bulk: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ReportFormatArg,
    },
}

/// What `phigate policy test` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TestFormatArg {
    /// PASS/FAIL lines, coverage per file, a summary.
    Text,
    /// One JSON document.
    Json,
}

fn coverage_threshold(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err("expected a percentage from 0 to 100".to_owned()),
    }
}

/// What `phigate audit report` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormatArg {
    /// One JSON object per access and line.
    Jsonl,
    /// A FHIR R4 Bundle of AuditEvent resources (IHE BALP shape).
    Fhir,
}

/// `phigate config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the config reference (Markdown), generated from the config types' docs.
    Schema,
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A serving process logs through its own writer thread; a one-shot command writes directly.
    init_logging(matches!(cli.command, Command::Run { .. } | Command::Demo { command: None, .. }));
    let code = dispatch(cli);
    crate::logsink::flush();
    code
}

fn dispatch(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config, upgrade } => run(&config, upgrade),
        Command::Demo { command: None, dir, port } => crate::demo::run::run_demo(dir, port),
        Command::Demo { command: Some(DemoCommand::Proof { dir, persona, method, url }), .. } => {
            match crate::demo::personas::dpop_proof(&dir, &persona, &method, &url) {
                Ok(proof) => {
                    println!("{proof}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("demo proof: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Policy { command: PolicyCommand::Test { dir, run, threshold, format } } => {
            policy_test(&dir, run.as_deref(), threshold, format)
        }
        Command::Policy { command: PolicyCommand::Eval { input, dir } } => policy_eval(&dir, &input),
        Command::Policy { command: PolicyCommand::Diff { from, to, inputs } } => {
            let inputs = inputs.unwrap_or_else(|| from.join("probes.json"));
            policy_diff(&from, &to, &inputs)
        }
        Command::Audit { command: AuditCommand::Verify { dir, public_key } } => {
            let report = if dir.is_file() {
                phigate_audit::verify_stream(&dir, public_key.as_deref())
            } else {
                phigate_audit::verify(&dir, public_key.as_deref())
            };
            println!("{report}");
            ExitCode::from(u8::try_from(report.exit_code()).unwrap_or(2))
        }
        Command::Audit { command: report @ AuditCommand::Report { .. } } => audit_report(report),
        Command::Config { command: ConfigCommand::Schema } => {
            print!("{}", config::reference_markdown());
            ExitCode::SUCCESS
        }
    }
}

/// `phigate policy test`: exit 0 when every selected test passes (and coverage reaches the
/// threshold), 1 otherwise, 2 for a bad `--run` expression.
fn policy_test(dir: &Path, run: Option<&str>, threshold: Option<f64>, format: TestFormatArg) -> ExitCode {
    let filter = match run.map(regex::Regex::new).transpose() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("--run: not a regular expression: {e}");
            return ExitCode::from(2);
        }
    };
    let keep = |rule: &str| filter.as_ref().is_none_or(|f| f.is_match(rule));
    let report = phigate_policy::run_policy_tests_matching(dir, &dir.join("data"), &keep);
    let coverage = report.coverage_percent();
    let covered = threshold.is_none_or(|t| coverage >= t);
    match format {
        TestFormatArg::Text => {
            println!("{report}");
            if report.results.is_empty() && report.load_error.is_none() {
                println!("no test matched");
            }
            if let (Some(t), false) = (threshold, covered) {
                println!("FAIL coverage {coverage:.1}% is below the threshold {t}%");
            }
        }
        TestFormatArg::Json => {
            let mut doc = report.to_json();
            doc["coverage"]["threshold"] = threshold.into();
            doc["success"] = (report.success() && covered).into();
            println!("{doc}");
        }
    }
    if report.success() && covered {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn audit_report(command: AuditCommand) -> ExitCode {
    let AuditCommand::Report {
        dir,
        public_key,
        patient,
        subject,
        tenant,
        since,
        until,
        break_glass,
        denied,
        restricted,
        shadow,
        bulk,
        format,
    } = command
    else {
        return ExitCode::from(2);
    };
    let query = phigate_audit::ReportQuery {
        patient,
        subject,
        tenant,
        since,
        until,
        break_glass_only: break_glass,
        denied_only: denied,
        restricted_only: restricted,
        shadow,
        bulk_only: bulk,
    };
    let format = match format {
        ReportFormatArg::Jsonl => phigate_audit::ReportFormat::Jsonl,
        ReportFormatArg::Fhir => phigate_audit::ReportFormat::Fhir,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match phigate_audit::report(&dir, public_key.as_deref(), &query, format, &mut out) {
        Ok(summary) => {
            eprintln!("audit trail intact; {} of {} accesses reported", summary.reported, summary.accesses);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
        }
    }
}

fn init_logging(serving: bool) {
    let env = env_logger::Env::default().default_filter_or("info");
    let mut builder = env_logger::Builder::from_env(env);
    builder.format_timestamp_micros();
    if serving {
        // Without the thread, lines go to stderr directly as before.
        if let Ok(writer) = crate::logsink::stderr_writer() {
            builder.target(env_logger::Target::Pipe(Box::new(writer)));
        }
    }
    let _ = builder.try_init();
}

/// Loads and validates, printing every error (one per line) and every warning.
fn load_valid(path: &std::path::Path) -> Result<config::LoadedConfig, ExitCode> {
    let loaded = config::load_and_validate(path, ValidateOptions { check_files: true }).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })?;
    for warning in config::warnings(&loaded) {
        log::warn!("{warning}");
    }
    Ok(loaded)
}

/// Validates the file, then builds every stage as `run` would (policies compiled and tested,
/// limits checked against the routes, the alerts file opened) and drops them, so a config that
/// `check` accepts also starts. The audit stage is the exception: its start-up recovery may
/// repair a torn segment tail, which must not happen under a running gateway; `run` checks it.
fn check(path: &std::path::Path) -> ExitCode {
    let mut loaded = match load_valid(path) {
        Ok(l) => l,
        Err(code) => return code,
    };
    loaded.config.audit = None;
    let routes = crate::runtime::route_metas(&loaded.config);
    if let Err(errors) = crate::stages::build_stages(&loaded, &routes) {
        eprintln!("{errors}");
        return ExitCode::from(2);
    }
    println!("{}: ok", path.display());
    ExitCode::SUCCESS
}

fn run(path: &std::path::Path, upgrade: bool) -> ExitCode {
    let loaded = match load_valid(path) {
        Ok(l) => l,
        Err(code) => return code,
    };
    match crate::Gateway::builder(loaded).upgrade(upgrade).build() {
        Ok(gw) => gw.run_forever(),
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            ExitCode::from(2)
        }
    }
}

fn policy_diff(from: &std::path::Path, to: &std::path::Path, inputs: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(inputs) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", inputs.display());
            return ExitCode::from(2);
        }
    };
    match phigate_policy::diff_inputs(from, to, &text) {
        Ok(report) => {
            println!("{report}");
            if report.differences.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn policy_eval(dir: &std::path::Path, input: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(input) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", input.display());
            return ExitCode::from(2);
        }
    };
    match phigate_policy::eval_input(dir, &text) {
        Ok(decision) => {
            println!("{}", serde_json::to_string_pretty(&decision).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
