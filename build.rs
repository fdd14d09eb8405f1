//! Compiles `proto/` with protox (pure Rust, no system `protoc`), generates the
//! tonic/prost code and the proto3-JSON serde impls (pbjson), and writes the
//! descriptor set that server reflection and field-mask checks read, plus the
//! list of `.proto` sources embedded for `interop-gateway proto export`.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "interop/common/v1/common.proto",
    "interop/citizen/v1/citizen.proto",
    "interop/land/v1/land.proto",
    "interop/business/v1/business.proto",
    "interop/audit/v1/access_log.proto",
    "interop/audit/v1/witness.proto",
    "interop/catalog/v1/catalog.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let fds = protox::compile(PROTOS, ["proto"])?;
    let bytes = fds.encode_to_vec();
    fs::write(out.join("interop_descriptor.bin"), &bytes)?;
    fs::write(out.join("proto_sources.rs"), proto_sources()?)?;

    tonic_prost_build::configure()
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;
    pbjson_build::Builder::new()
        .register_descriptors(&bytes)?
        .build(&[".interop"])?;
    Ok(())
}

/// A Rust slice expression of `(path under proto/, file text)` for every
/// compiled proto, each text embedded with `include_str!`.
fn proto_sources() -> Result<String, Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("proto");
    let mut rs = String::from("&[\n");
    for p in PROTOS {
        let abs = root.join(p);
        let abs = abs.to_str().ok_or("non-UTF-8 path to proto/")?;
        rs.push_str(&format!("    ({p:?}, include_str!({abs:?})),\n"));
    }
    rs.push(']');
    Ok(rs)
}
