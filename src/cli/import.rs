//! `interop-gateway import`.

use std::{path::PathBuf, time::Instant};

use super::{load_config, ConfigArg, Failure, EXIT_FAILED};
use crate::registry::{import::import_file, Registry};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Which registry the file holds.
    #[arg(long, value_enum)]
    pub registry: Registry,
    /// The extract: one proto3-JSON record per line.
    pub file: PathBuf,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let config = load_config(&args.config.config)?;
    let started = Instant::now();
    let summary = import_file(&config.store_path(), args.registry, &args.file)
        .map_err(|e| Failure::new(EXIT_FAILED, e))?;
    outln!(
        "imported {} {} records from {} into {} in {:.1} s",
        summary.records,
        args.registry.record_name(),
        args.file.display(),
        config.store_path().display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
