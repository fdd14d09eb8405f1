//! The `interop-gateway` binary: parse the command line, run, map the outcome
//! to an exit code.

use std::process::ExitCode;

use clap::Parser;
use interop_gateway::cli::{output_failed, run, Cli};

/// mimalloc instead of glibc's malloc: a call allocates and frees dozens of
/// small buffers across tokio's worker threads, the store readers and the
/// access-log writer, and glibc's arenas spent a tenth of the gateway's
/// instructions on it (see docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) if output_failed() => ExitCode::FAILURE,
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.exit_code)
        }
    }
}
