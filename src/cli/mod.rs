//! The command line: one file per subcommand. `main.rs` only parses and maps
//! the result to an exit code.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// `println!` for command output, through [`Stdout`].
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!($crate::cli::Stdout, $($arg)*);
    }};
}

/// `print!` for command output, through [`Stdout`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!($crate::cli::Stdout, $($arg)*);
    }};
}

pub mod audit;
pub mod call;
pub mod certs;
pub mod check_config;
pub mod demo_data;
pub mod import;
pub mod load;
pub mod proto;
pub mod receipt;
pub mod report;
pub mod serve;

/// interop-gateway: mTLS gRPC gateway for inter-agency registry lookups.
#[derive(Debug, Parser)]
#[command(name = "interop-gateway", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the registry services over mutual TLS until SIGTERM or Ctrl-C.
    Serve(serve::Args),
    /// Import a registry extract (one proto3-JSON record per line), all or nothing.
    Import(import::Args),
    /// Write a deterministic synthetic extract for all three registries.
    DemoData(demo_data::Args),
    /// Create a development PKI (CA, gateway and agency certificates), revoke, issue CRLs.
    Certs(certs::Args),
    /// Validate a config and every file it names, without serving (exit 0 or 1).
    CheckConfig(check_config::Args),
    /// Call a gateway method as an agency and print the answer as JSON.
    Call(call::Args),
    /// Verify or export the access log.
    Audit(audit::Args),
    /// Load-test a gateway: closed or open model, latency percentiles, JSON, charts.
    Load(Box<load::Args>),
    /// Reports from the access log (data re-use per procedure and agency).
    Report(report::Args),
    /// The contract this binary speaks: export its .proto files and descriptor set.
    Proto(proto::Args),
    /// Verify a signed receipt of an answer.
    Receipt(receipt::Args),
}

/// Standard output for what a command prints. A command goes on with its
/// work whatever becomes of its output, and exits with its own status: a
/// closed pipe (`| head`: the reader has what it wanted) is silent, where
/// `println!` would panic; any other write error (a full disk under a
/// redirect) is said once on stderr and turns a success into exit 1
/// ([`output_failed`]). Writers that stop at the first error (an export)
/// see it as an error of kind `BrokenPipe` or other.
pub struct Stdout;

/// Set when standard output failed for a reason other than a closed pipe.
static OUTPUT_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the command's output was lost to a write error (not a closed
/// pipe): `main` then exits 1 where it would have exited 0.
pub fn output_failed() -> bool {
    OUTPUT_FAILED.load(std::sync::atomic::Ordering::Relaxed)
}

impl Stdout {
    fn settle<T>(r: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &r {
            if e.kind() != std::io::ErrorKind::BrokenPipe
                && !OUTPUT_FAILED.swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                eprintln!("error: writing to standard output: {e}");
            }
        }
        r
    }
}

impl std::io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Self::settle(std::io::stdout().lock().write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        Self::settle(std::io::stdout().lock().write_all(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Self::settle(std::io::stdout().lock().flush())
    }
}

/// `lowerCamelCase` -> `snake_case`, for one field-mask path segment.
fn snake_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A read mask as given on the command line (`fullName,permanentAddress.provinceCode`,
/// the canonical proto3-JSON string form, or snake_case paths) as field-mask paths.
pub(crate) fn mask_paths(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.split('.').map(snake_case).collect::<Vec<_>>().join("."))
        .collect()
}

/// `--config`, shared by the subcommands that read the config.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Gateway config file (TOML).
    #[arg(
        long,
        short = 'c',
        default_value = "gateway.toml",
        env = "INTEROP_GATEWAY_CONFIG"
    )]
    pub config: PathBuf,
}

/// Which gateway to call and as which agency: shared by `call` and `load`.
#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    /// Agency to call as; its certificate is read from the dev PKI unless
    /// --cert/--key are given.
    #[arg(long)]
    pub agency: Option<String>,
    /// Gateway address, host:port (default: the config's `listen`).
    #[arg(long)]
    pub addr: Option<String>,
    /// CA certificate that issued the gateway's certificate (default: tls.client_ca).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Client certificate chain, PEM.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client private key, PEM.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
}

impl TargetArgs {
    /// Whether a gateway config is needed to fill in what the flags leave out.
    pub fn needs_config(&self) -> bool {
        self.addr.is_none() || self.ca.is_none() || self.cert.is_none()
    }

    /// The address and the agency's credentials (and the files they came
    /// from), from the flags, falling back on `config` (its `listen`, its
    /// `tls.client_ca`, its dev PKI).
    pub fn resolve(
        &self,
        config: Option<&crate::config::Config>,
    ) -> Result<
        (
            String,
            crate::client::AgencyIdentity,
            crate::client::IdentityFiles,
        ),
        Failure,
    > {
        let usage = |m: &str| Failure::new(EXIT_CONFIG, m);
        let (cert, key) = match (&self.cert, &self.key, &self.agency, config) {
            (Some(c), Some(k), _, _) => (c.clone(), k.clone()),
            (_, _, Some(a), Some(config)) => {
                let layout = crate::pki::Layout::new(config.pki_dir());
                (layout.agency_cert(a), layout.agency_key(a))
            }
            _ => return Err(usage("give --agency CODE (dev PKI) or --cert and --key")),
        };
        let ca = match (&self.ca, config) {
            (Some(ca), _) => ca.clone(),
            (None, Some(c)) => c.tls.client_ca.clone(),
            (None, None) => return Err(usage("give --ca")),
        };
        let identity = crate::client::AgencyIdentity::from_files(&ca, &cert, &key)
            .map_err(|e| Failure::new(EXIT_CONFIG, e))?;
        let addr = match (&self.addr, config) {
            (Some(a), _) => a.clone(),
            (None, Some(c)) if c.listen.ip().is_unspecified() => {
                format!("127.0.0.1:{}", c.listen.port())
            }
            (None, Some(c)) => c.listen.to_string(),
            (None, None) => return Err(usage("give --addr")),
        };
        Ok((
            addr,
            identity,
            crate::client::IdentityFiles { ca, cert, key },
        ))
    }
}

/// A failure to report: message for stderr and the process exit code.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub exit_code: u8,
}

impl Failure {
    pub fn new(exit_code: u8, message: impl std::fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            exit_code,
        }
    }
}

/// Exit code of a config or usage problem.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code of a failure while doing the work.
pub const EXIT_FAILED: u8 = 1;

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::Import(a) => import::run(a),
        Command::DemoData(a) => demo_data::run(a),
        Command::Certs(a) => certs::run(a),
        Command::CheckConfig(a) => check_config::run(a),
        Command::Call(a) => call::run(a),
        Command::Audit(a) => audit::run(a),
        Command::Report(a) => report::run(a),
        Command::Load(a) => load::run(*a),
        Command::Proto(a) => proto::run(a),
        Command::Receipt(a) => receipt::run(a),
    }
}

fn load_config(path: &std::path::Path) -> Result<crate::config::Config, Failure> {
    crate::config::Config::load(path).map_err(|e| Failure::new(EXIT_CONFIG, e))
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(EXIT_FAILED, format!("cannot start the runtime: {e}")))
}

/// Offset of Vietnam time (UTC+7, no daylight saving): days in reports and
/// `--since`/`--from`/`--to` are Vietnam calendar days, as managers count them.
pub const VN_OFFSET_MS: i64 = 7 * 3_600_000;

/// `YYYY-MM-DD` (start of that day, Vietnam time) or milliseconds since the
/// Unix epoch, as milliseconds since the Unix epoch.
pub fn parse_day_start(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let (y, m, d) = parse_date(text).map_err(|e| format!("{e} (or milliseconds since 1970)"))?;
    Ok(crate::domain::calendar::to_days(y, m, d) * 86_400_000 - VN_OFFSET_MS)
}

/// A `YYYY-MM-DD` calendar date.
pub fn parse_date(text: &str) -> Result<(i32, u32, u32), String> {
    let bad = || format!("{text:?} is not a date YYYY-MM-DD");
    let parts: Vec<&str> = text.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(bad());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let (y, m, d): (i32, u32, u32) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    if !crate::domain::calendar::is_real_date(y, m as i32, d as i32) {
        return Err(bad());
    }
    Ok((y, m, d))
}

/// The Vietnam calendar day of a Unix time in milliseconds.
pub fn vn_day(time_unix_ms: i64) -> (i32, u32, u32) {
    crate::domain::calendar::from_days((time_unix_ms + VN_OFFSET_MS).div_euclid(86_400_000))
}

/// `YYYY-MM-DD HH:MM:SS +07:00` for a Unix time in milliseconds.
pub fn format_time(time_unix_ms: i64) -> String {
    let (y, m, d) = vn_day(time_unix_ms);
    let secs = (time_unix_ms + VN_OFFSET_MS)
        .div_euclid(1000)
        .rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} +07:00",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}
