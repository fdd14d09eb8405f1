//! `interop-gateway proto export`: the contract as this binary speaks it.
//!
//! Writes the `.proto` files the binary was compiled from, byte for byte, and
//! the encoded `FileDescriptorSet` it serves through reflection, so an agency
//! generates its client from what the gateway it calls actually implements
//! rather than from a checkout that may be older or newer.

use std::{
    fs,
    path::{Path, PathBuf},
};

use prost::Message;

use super::{Failure, EXIT_CONFIG, EXIT_FAILED};
use crate::{
    audit::files::replace_file,
    proto::{FILE_DESCRIPTOR_SET, PROTO_SOURCES},
};

/// File name of the descriptor set written beside the `.proto` files.
pub const DESCRIPTOR_SET_FILE: &str = "interop.binpb";

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write the .proto files this binary was built from (a tree like the
    /// repository's proto/) and their FileDescriptorSet, `interop.binpb`.
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Folder to write into (created if missing). Files already there with
    /// the same names are replaced, each through a temporary file and a
    /// rename; nothing else in it is touched.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> Result<(), Failure> {
    match args.command {
        Command::Export(a) => export(&a.out),
    }
}

fn export(out: &Path) -> Result<(), Failure> {
    if out.exists() && !out.is_dir() {
        return Err(Failure::new(
            EXIT_CONFIG,
            format!("--out {}: exists and is not a folder", out.display()),
        ));
    }
    let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).map_err(|e| {
        Failure::new(
            EXIT_FAILED,
            format!("the embedded descriptor set does not decode: {e}"),
        )
    })?;
    let mut files: Vec<(PathBuf, &[u8])> = PROTO_SOURCES
        .iter()
        .map(|(path, text)| (out.join(path), text.as_bytes()))
        .collect();
    files.push((out.join(DESCRIPTOR_SET_FILE), FILE_DESCRIPTOR_SET));
    for (path, bytes) in &files {
        path.parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| replace_file(path, bytes, false))
            .map_err(|e| Failure::new(EXIT_FAILED, format!("{}: {e}", path.display())))?;
    }
    for (path, _) in PROTO_SOURCES {
        outln!("{}", out.join(path).display());
    }
    outln!("{}", out.join(DESCRIPTOR_SET_FILE).display());
    let services: Vec<String> = set
        .file
        .iter()
        .flat_map(|f| {
            f.service
                .iter()
                .map(move |s| format!("{}.{}", f.package(), s.name()))
        })
        .collect();
    outln!(
        "interop-gateway {}: {} proto files, services: {}",
        env!("CARGO_PKG_VERSION"),
        PROTO_SOURCES.len(),
        services.join(", ")
    );
    Ok(())
}
