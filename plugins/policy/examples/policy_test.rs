//! Runs the policy tests of a directory: `cargo run --example policy_test -- DIR`.

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "policies".into());
    let report = phigate_policy::run_policy_tests(std::path::Path::new(&dir));
    println!("{report}");
    std::process::exit(if report.success() { 0 } else { 1 });
}
