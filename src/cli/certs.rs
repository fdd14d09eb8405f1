//! `interop-gateway certs init` and `certs issue`: the dev PKI, written where
//! the config's `[tls]` section points (agency certificates under
//! `<folder of tls.client_ca>/agencies/`).

use super::{load_config, ConfigArg, Failure, EXIT_CONFIG, EXIT_FAILED};
use crate::{
    dev,
    pki::{self, Layout, Validity},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Create the CA, the gateway certificate and one certificate per configured
    /// agency, keeping whatever already exists.
    Init {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Issue (or re-issue) the client certificate of one agency.
    Issue {
        #[command(flatten)]
        config: ConfigArg,
        /// Agency code, e.g. 000.00.20.H13.
        #[arg(long)]
        agency: String,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
}

pub fn run(args: Args) -> Result<(), Failure> {
    match args.command {
        CertsCommand::Init { config } => {
            let config = load_config(&config.config)?;
            let done = dev::ensure_pki(&config).map_err(|e| Failure::new(EXIT_FAILED, e))?;
            if done.is_empty() {
                println!(
                    "dev PKI already complete under {}",
                    config.pki_dir().display()
                );
            }
            for line in done {
                println!("{line}");
            }
            Ok(())
        }
        CertsCommand::Issue {
            config,
            agency,
            days,
        } => {
            let config = load_config(&config.config)?;
            crate::domain::agency::parse_agency_code(&agency)
                .map_err(|e| Failure::new(EXIT_CONFIG, format!("--agency: {e}")))?;
            if !config.agencies.contains_key(&agency) {
                eprintln!(
                    "note: agency {agency} is not in {}; the gateway will answer UNAUTHENTICATED until an [[agency]] entry is added",
                    config.path.display()
                );
            }
            let layout = Layout::new(config.pki_dir());
            let ca = layout.load_ca().map_err(|e| {
                Failure::new(
                    EXIT_FAILED,
                    format!("{e} (run `interop-gateway certs init` first)"),
                )
            })?;
            let issued = ca
                .issue_agency(&config.trust_domain, &agency, Validity::days_from_now(days))
                .map_err(|e| Failure::new(EXIT_FAILED, e))?;
            pki::write_issued(
                &layout.agency_cert(&agency),
                &layout.agency_key(&agency),
                &issued,
            )
            .map_err(|e| Failure::new(EXIT_FAILED, e))?;
            println!(
                "issued {} and {} (spiffe://{}/agency/{agency})",
                layout.agency_cert(&agency).display(),
                layout.agency_key(&agency).display(),
                config.trust_domain
            );
            Ok(())
        }
    }
}
