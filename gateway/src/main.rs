//! The `phigate` binary: parses the command line and calls the library.

fn main() -> std::process::ExitCode {
    phigate::cli::main()
}
