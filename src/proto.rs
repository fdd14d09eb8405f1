//! Generated protobuf, gRPC and proto3-JSON code for `proto/`, plus the encoded
//! descriptor set (served by reflection, read by the field-mask checks) and
//! the `.proto` sources it was compiled from (written by `proto export`).

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// Encoded `FileDescriptorSet` of every gateway proto and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/interop_descriptor.bin"));

/// The gateway's own `.proto` files as compiled into this binary: path under
/// `proto/` and text. Imports from `google/protobuf/` are not included (every
/// protobuf distribution ships them; their descriptors are in the set above).
pub const PROTO_SOURCES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/proto_sources.rs"));

pub mod common {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/interop.common.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/interop.common.v1.serde.rs"));
    }
}
pub mod citizen {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/interop.citizen.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/interop.citizen.v1.serde.rs"));
    }
}
pub mod land {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/interop.land.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/interop.land.v1.serde.rs"));
    }
}
pub mod business {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/interop.business.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/interop.business.v1.serde.rs"));
    }
}
pub mod audit {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/interop.audit.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/interop.audit.v1.serde.rs"));
    }
}
pub mod catalog {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/interop.catalog.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/interop.catalog.v1.serde.rs"));
    }
}
