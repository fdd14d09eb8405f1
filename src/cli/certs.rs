//! `interop-gateway certs init`, `certs issue`, `certs revoke` and `certs crl`:
//! the dev PKI, written where the config's `[tls]` section points (agency
//! certificates under `<folder of tls.client_ca>/agencies/`, the CRL as
//! `crl.pem` beside the CA), so that rotation and revocation can be
//! rehearsed end to end. Production CRLs come from the agencies' CAs.

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
        /// Validity in days (1 to 3650).
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(i64).range(1..=3650))]
        days: i64,
    },
    /// Revoke a certificate of the dev CA and write a new CRL (crl.pem beside
    /// the CA) listing it and every one revoked before.
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        /// Serial number, hexadecimal (as `openssl x509 -noout -serial` prints it).
        #[arg(long, conflicts_with = "cert", required_unless_present = "cert")]
        serial: Option<String>,
        /// The certificate (PEM) to revoke.
        #[arg(long)]
        cert: Option<std::path::PathBuf>,
    },
    /// Issue a fresh CRL from the dev CA listing every certificate revoked so
    /// far (a CRL is valid for a week: issue one before the last expires).
    Crl {
        #[command(flatten)]
        config: ConfigArg,
    },
}

pub fn run(args: Args) -> Result<(), Failure> {
    match args.command {
        CertsCommand::Revoke {
            config,
            serial,
            cert,
        } => {
            let config = load_config(&config.config)?;
            let layout = Layout::new(config.pki_dir());
            let ca = load_ca(&layout)?;
            let usage = |m: String| Failure::new(EXIT_CONFIG, m);
            let serial = match (serial, cert) {
                (Some(s), _) => {
                    pki::parse_serial(&s).map_err(|e| usage(format!("--serial: {e}")))?
                }
                (None, Some(path)) => {
                    let pem = std::fs::read_to_string(&path)
                        .map_err(|e| usage(format!("--cert {}: {e}", path.display())))?;
                    if !ca.issued(&pem) {
                        return Err(usage(format!(
                            "--cert {}: not issued by the dev CA {}; revoke it with the CA that issued it",
                            path.display(),
                            layout.ca_cert().display()
                        )));
                    }
                    pki::serial_of(&pem)
                        .map_err(|e| usage(format!("--cert {}: {e}", path.display())))?
                }
                (None, None) => return Err(usage("give --serial or --cert".into())),
            };
            let mut revoked = read_revoked(&layout)?;
            let hex = pki::serial_hex(&serial);
            if revoked.contains(&serial) {
                outln!("serial {hex} was already revoked");
            } else {
                revoked.push(serial);
                let text: String = revoked.iter().map(|s| pki::serial_hex(s) + "\n").collect();
                pki::write_file(&layout.revoked(), &text, false)
                    .map_err(|e| Failure::new(EXIT_FAILED, e))?;
                outln!("revoked serial {hex}");
            }
            write_crl(&config, &layout, &ca, &revoked)
        }
        CertsCommand::Crl { config } => {
            let config = load_config(&config.config)?;
            let layout = Layout::new(config.pki_dir());
            let ca = load_ca(&layout)?;
            let revoked = read_revoked(&layout)?;
            write_crl(&config, &layout, &ca, &revoked)
        }
        CertsCommand::Init { config } => {
            let config = load_config(&config.config)?;
            let done = dev::ensure_pki(&config).map_err(|e| Failure::new(EXIT_FAILED, e))?;
            if done.is_empty() {
                outln!(
                    "dev PKI already complete under {}",
                    config.pki_dir().display()
                );
            }
            for line in done {
                outln!("{line}");
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
                    "note: agency {agency} is not in {}; the gateway closes its connections right after the TLS handshake (UNKNOWN_AGENCY in its log) until an [[agency]] entry is added",
                    config.path.display()
                );
            }
            let layout = Layout::new(config.pki_dir());
            let ca = load_ca(&layout)?;
            let issued = ca
                .issue_agency(&config.trust_domain, &agency, Validity::days_from_now(days))
                .map_err(|e| Failure::new(EXIT_FAILED, e))?;
            pki::write_issued(
                &layout.agency_cert(&agency),
                &layout.agency_key(&agency),
                &issued,
            )
            .map_err(|e| Failure::new(EXIT_FAILED, e))?;
            outln!(
                "issued {} and {} (spiffe://{}/agency/{agency})",
                layout.agency_cert(&agency).display(),
                layout.agency_key(&agency).display(),
                config.trust_domain
            );
            Ok(())
        }
    }
}

fn load_ca(layout: &Layout) -> Result<pki::Ca, Failure> {
    layout.load_ca().map_err(|e| {
        Failure::new(
            EXIT_FAILED,
            format!("{e} (run `interop-gateway certs init` first)"),
        )
    })
}

/// The serial numbers revoked so far (none when the file does not exist).
fn read_revoked(layout: &Layout) -> Result<Vec<Vec<u8>>, Failure> {
    let path = layout.revoked();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Failure::new(
                EXIT_FAILED,
                format!("{}: {e}", path.display()),
            ))
        }
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            pki::parse_serial(l).map_err(|e| {
                Failure::new(EXIT_FAILED, format!("{}:{}: {e}", path.display(), i + 1))
            })
        })
        .collect()
}

/// Writes the CRL listing `revoked` and says how the gateway takes it.
fn write_crl(
    config: &crate::config::Config,
    layout: &Layout,
    ca: &pki::Ca,
    revoked: &[Vec<u8>],
) -> Result<(), Failure> {
    let pem = ca
        .crl_pem_revoking(revoked)
        .map_err(|e| Failure::new(EXIT_FAILED, e))?;
    let path = layout.crl();
    pki::write_file(&path, &pem, false).map_err(|e| Failure::new(EXIT_FAILED, e))?;
    outln!(
        "wrote {} ({} revoked, valid {} days)",
        path.display(),
        revoked.len(),
        pki::CRL_VALID_DAYS
    );
    if config.tls.crls.contains(&path) {
        outln!("send SIGHUP to the gateway to apply it (`interop-gateway check-config` first)");
    } else {
        outln!(
            "add it to [tls] crls in {} and send SIGHUP to the gateway to apply it (`interop-gateway check-config` first)",
            config.path.display()
        );
    }
    Ok(())
}
