//! Compiles `proto/` with protox (pure Rust, no system `protoc`), generates the
//! tonic/prost code and the proto3-JSON serde impls (pbjson), and writes the
//! descriptor set that server reflection and field-mask checks read.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "interop/common/v1/common.proto",
    "interop/citizen/v1/citizen.proto",
    "interop/land/v1/land.proto",
    "interop/business/v1/business.proto",
    "interop/audit/v1/access_log.proto",
    "interop/catalog/v1/catalog.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let fds = protox::compile(PROTOS, ["proto"])?;
    let bytes = fds.encode_to_vec();
    fs::write(out.join("interop_descriptor.bin"), &bytes)?;

    tonic_prost_build::configure()
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;
    pbjson_build::Builder::new()
        .register_descriptors(&bytes)?
        .build(&[".interop"])?;
    Ok(())
}
