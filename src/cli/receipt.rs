//! `interop-gateway receipt verify`: checks a signed receipt (the
//! `x-interop-receipt` trailer of an answer) offline, with the access log's
//! public key and, when given, the response message bytes it names.

use std::path::PathBuf;

use super::{Failure, EXIT_CONFIG, EXIT_FAILED};
use crate::{audit, receipt};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: ReceiptCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ReceiptCommand {
    /// Check a receipt's signature (and the response's hash, with
    /// --response-file); print what it asserts as JSON. Exits 1 when it does
    /// not verify.
    Verify {
        /// The gateway's access-log public key (`audit.pub`, PEM).
        #[arg(long)]
        public_key: PathBuf,
        /// The receipt: the compact JWS itself, or a file holding it.
        #[arg(long)]
        receipt: String,
        /// The response message bytes as received (the gRPC message payload,
        /// protobuf-encoded, without the 5-byte message prefix).
        #[arg(long)]
        response_file: Option<PathBuf>,
    },
}

pub fn run(args: Args) -> Result<(), Failure> {
    match args.command {
        ReceiptCommand::Verify {
            public_key,
            receipt: given,
            response_file,
        } => {
            let text = std::fs::read_to_string(&public_key).map_err(|e| {
                Failure::new(
                    EXIT_CONFIG,
                    format!("--public-key {}: {e}", public_key.display()),
                )
            })?;
            let key = audit::parse_public_key_pem(&text).map_err(|e| {
                Failure::new(
                    EXIT_CONFIG,
                    format!("--public-key {}: {e}", public_key.display()),
                )
            })?;
            // A path to an existing file is read; anything else is the JWS.
            let path = std::path::Path::new(&given);
            let jws = if path.is_file() {
                std::fs::read_to_string(path)
                    .map_err(|e| Failure::new(EXIT_CONFIG, format!("--receipt {given}: {e}")))?
            } else if given.starts_with("eyJ") // a JSON header, base64url
                && given.split('.').count() == 3
                && given.split('.').all(|part| {
                    !part.is_empty()
                        && part
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
            {
                given.clone()
            } else {
                return Err(Failure::new(
                    EXIT_CONFIG,
                    format!("--receipt {given}: no such file, nor a compact JWS (header.payload.signature)"),
                ));
            };
            let response = match &response_file {
                Some(p) => Some(std::fs::read(p).map_err(|e| {
                    Failure::new(EXIT_CONFIG, format!("--response-file {}: {e}", p.display()))
                })?),
                None => None,
            };
            let claims = receipt::verify(&key, &jws, response.as_deref())
                .map_err(|e| Failure::new(EXIT_FAILED, e))?;
            outln!(
                "{}",
                serde_json::to_string_pretty(&claims).unwrap_or_default()
            );
            if response.is_none() {
                eprintln!("signature valid; response not checked (no --response-file)");
            }
            Ok(())
        }
    }
}
