//! interop-gateway: the mTLS gRPC gateway through which agencies read citizen,
//! land and business registry records, purpose-bound and field-minimal.
//!
//! A call arrives over TLS ([`server`], [`tls`], [`connections`]), is given an identity
//! ([`identity`]), is checked against grants ([`policy`], [`fieldmask`]), is
//! answered from a registry ([`registry`]) through a thin service adapter
//! ([`service`]), and is logged ([`audit`]); its answer carries a signed
//! receipt ([`receipt`]); its checkpoints are countersigned by other
//! gateways ([`witness`]). [`catalog`] describes what the gateway serves;
//! [`metrics`] counts calls and [`admin`] serves the counts and readiness.

#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod cache;
pub mod catalog;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod connections;
pub mod demo;
pub mod dev;
pub mod domain;
pub mod error;
pub mod fieldmask;
#[cfg(test)]
mod fuzz;
pub mod health;
pub mod identity;
pub mod limits;
pub mod load;
pub mod logging;
pub mod metrics;
pub mod pki;
pub mod policy;
pub mod proto;
pub mod receipt;
pub mod registry;
pub mod schema;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod tls;
pub mod upstream;
pub mod verify_budget;
pub mod witness;
