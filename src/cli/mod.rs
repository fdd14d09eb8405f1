//! The command line: one file per subcommand. `main.rs` only parses and maps
//! the result to an exit code.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub mod call;
pub mod certs;
pub mod demo_data;
pub mod import;
pub mod serve;

/// interop-gateway: mTLS gRPC gateway for inter-agency registry lookups.
#[derive(Debug, Parser)]
#[command(name = "interop-gateway", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the registry services over mutual TLS until SIGTERM or Ctrl-C.
    Serve(serve::Args),
    /// Import a registry extract (one proto3-JSON record per line), all or nothing.
    Import(import::Args),
    /// Write a deterministic synthetic extract for all three registries.
    DemoData(demo_data::Args),
    /// Create a development PKI (CA, gateway and agency certificates).
    Certs(certs::Args),
    /// Call a gateway method as an agency and print the answer as JSON.
    Call(call::Args),
}

/// `--config`, shared by the subcommands that read the config.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Gateway config file (TOML).
    #[arg(
        long,
        short = 'c',
        default_value = "gateway.toml",
        env = "INTEROP_GATEWAY_CONFIG"
    )]
    pub config: PathBuf,
}

/// A failure to report: message for stderr and the process exit code.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub exit_code: u8,
}

impl Failure {
    pub fn new(exit_code: u8, message: impl std::fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            exit_code,
        }
    }
}

/// Exit code of a config or usage problem.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code of a failure while doing the work.
pub const EXIT_FAILED: u8 = 1;

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::Import(a) => import::run(a),
        Command::DemoData(a) => demo_data::run(a),
        Command::Certs(a) => certs::run(a),
        Command::Call(a) => call::run(a),
    }
}

fn load_config(path: &std::path::Path) -> Result<crate::config::Config, Failure> {
    crate::config::Config::load(path).map_err(|e| Failure::new(EXIT_CONFIG, e))
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(EXIT_FAILED, format!("cannot start the runtime: {e}")))
}
