//! The `interop-gateway` binary: parse the command line, run, map the outcome
//! to an exit code.

use std::process::ExitCode;

use clap::Parser;
use interop_gateway::cli::{run, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.exit_code)
        }
    }
}
