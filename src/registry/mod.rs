//! The registries behind the gateway: the embedded store, record validation,
//! and the atomic import of registry extracts.

pub mod import;
pub mod store;
pub mod validate;

pub use store::{ParcelKey, Store, StoreError, Stored};

/// Which registry a file or a call is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Registry {
    Citizen,
    Land,
    Business,
}

impl Registry {
    pub fn record_name(self) -> &'static str {
        match self {
            Registry::Citizen => "Citizen",
            Registry::Land => "Parcel",
            Registry::Business => "Enterprise",
        }
    }
}
