//! `interop-gateway demo-data`.

use std::path::PathBuf;

use super::{Failure, EXIT_FAILED};
use crate::demo;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder to write citizens.jsonl, parcels.jsonl and enterprises.jsonl into.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of citizens; parcels and enterprises scale with it.
    #[arg(long, default_value_t = 10_000)]
    pub citizens: usize,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let s = demo::write_extract(&args.out, args.citizens)
        .map_err(|e| Failure::new(EXIT_FAILED, format!("{}: {e}", args.out.display())))?;
    outln!(
        "wrote {} citizens, {} parcels, {} enterprises to {}",
        s.citizens,
        s.parcels,
        s.enterprises,
        args.out.display()
    );
    Ok(())
}
