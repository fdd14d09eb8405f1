//! `interop-gateway check-config`: validates a config and every file it names
//! exactly as a start or a reload would (the gateway's certificate and key,
//! the client CA bundle, each agency's CA, the CRLs, each witness's
//! certificate, key and CA, each registry owner's `upstream` files, and that
//! the registry store exists when a service is served from it), without
//! serving and without creating anything, so an operator can check before
//! sending SIGHUP. Exit 0 when it would be accepted (warnings on stderr), 1
//! when not.

use super::{ConfigArg, Failure, EXIT_FAILED};
use crate::{config::Config, snapshot::Snapshot};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let path = &args.config.config;
    let invalid = |e| Failure::new(EXIT_FAILED, e);
    let config = Config::load(path).map_err(invalid)?;
    config.check_files().map_err(invalid)?;
    crate::witness::check(&config.audit.witnesses)
        .map_err(|e| Failure::new(EXIT_FAILED, format!("{}: {e}", path.display())))?;
    crate::upstream::check(&config)
        .map_err(|e| Failure::new(EXIT_FAILED, format!("{}: {e}", path.display())))?;
    let store = config.store_path();
    if !config.forwards_every_registry() && !store.is_file() {
        let missing = crate::registry::StoreError::Missing { path: store };
        return Err(Failure::new(
            EXIT_FAILED,
            format!("{}: {missing}", path.display()),
        ));
    }
    let snapshot = Snapshot::build(config, 0).map_err(invalid)?;
    for warning in snapshot.warnings() {
        eprintln!("warning: {warning}");
    }
    let c = &snapshot.config;
    outln!(
        "{}: OK ({} agencies, {} grants, {} CRL files)",
        path.display(),
        c.agencies.len(),
        c.policy.grant_count(),
        c.tls.crls.len()
    );
    Ok(())
}
