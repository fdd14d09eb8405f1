//! `interop-gateway load`: a load generator in the spirit of ghz and wrk2,
//! built on the library's client. Argument handling here; the engine is in
//! [`crate::load`].

use std::{path::PathBuf, time::Duration};

use super::{mask_paths, runtime, ConfigArg, Failure, TargetArgs, EXIT_CONFIG, EXIT_FAILED};
use crate::{
    client::AgencyIdentity,
    config::Config,
    domain,
    load::{
        self, parse_duration, plot,
        stats::Summary,
        workload::{Distribution, ExtractFiles, Keys, Mix, Op, Workload},
        Model, Plan, Stop, MAX_IN_FLIGHT,
    },
    proto::common::v1::AccessContext,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyDistribution {
    Uniform,
    Zipf,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  # 30 s of GetCitizen at saturation, 64 callers over 4 connections (dev PKI):
  interop-gateway load --agency 000.00.20.H13 --procedure 1.004227 \\
      --dossier 000.00.20.H13-241205-0001 --concurrency 64 --connections 4 --duration 30s
  # A mix at a constant 2000 req/s, Zipf-skewed keys, JSON summary and a chart:
  interop-gateway load --addr gw.example.vn:443 --ca ca.pem --cert me.pem --key me.key \\
      --extract extract/ --mix GetCitizen=6,GetParcel=3,ListParcelsByHolder=1 \\
      --distribution zipf --rate 2000 --procedure 1.004227 \\
      --dossier 000.00.20.H13-241205-0001 --output json --plot run.svg")]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub target: TargetArgs,

    /// Folder with the extract the keys are drawn from: citizens.jsonl,
    /// parcels.jsonl, enterprises.jsonl as `demo-data` writes them or
    /// `import` reads them (default: the dev demo extract, <data_dir>/demo).
    #[arg(long)]
    pub extract: Option<PathBuf>,
    /// Citizens file, instead of <extract>/citizens.jsonl.
    #[arg(long)]
    pub citizens: Option<PathBuf>,
    /// Parcels file, instead of <extract>/parcels.jsonl.
    #[arg(long)]
    pub parcels: Option<PathBuf>,
    /// Enterprises file, instead of <extract>/enterprises.jsonl.
    #[arg(long)]
    pub enterprises: Option<PathBuf>,

    /// One method: GetCitizen, VerifyCitizen, GetParcel, ListParcelsByHolder,
    /// GetEnterprise (default GetCitizen).
    #[arg(long, conflicts_with = "mix")]
    pub method: Option<String>,
    /// A weighted mix, e.g. GetCitizen=6,GetParcel=3,ListParcelsByHolder=1.
    #[arg(long)]
    pub mix: Option<String>,
    /// How keys are drawn from the extract.
    #[arg(long, value_enum, default_value_t = KeyDistribution::Uniform)]
    pub distribution: KeyDistribution,
    /// Zipf exponent s: key of rank k drawn with probability ~ 1/k^s.
    #[arg(long, default_value_t = 1.0)]
    pub zipf_exponent: f64,

    /// context.procedure_code of every request.
    #[arg(long)]
    pub procedure: String,
    /// context.dossier_id of every request.
    #[arg(long)]
    pub dossier: String,
    /// context.officer_id of every request.
    #[arg(long, default_value = "")]
    pub officer: String,
    /// read_mask of every request: comma-separated field paths
    /// (`full_name,permanent_address.province_code`; lowerCamelCase works too).
    /// It applies to every method of the mix, so it suits one record type.
    #[arg(long)]
    pub read_mask: Option<String>,

    /// Closed model: requests in flight (each sends again when answered).
    #[arg(long, default_value_t = 16, conflicts_with = "rate")]
    pub concurrency: usize,
    /// HTTP/2 connections the requests are spread over.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Open model: constant arrival rate, requests per second. Latency is
    /// measured from each request's intended send time.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Open model: most requests in flight; beyond it, sending waits (and
    /// the wait counts in latency).
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// Length of the measured run (after the warm-up), e.g. 30s, 2m.
    #[arg(long, conflicts_with = "requests")]
    pub duration: Option<String>,
    /// Number of measured requests, instead of --duration.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Load sent before measuring starts, not counted.
    #[arg(long, default_value = "1s")]
    pub warmup: String,
    /// Open a new TLS connection for every request (full handshake, no
    /// session resumption): measures handshake capacity.
    #[arg(long)]
    pub new_connection_per_request: bool,
    /// Deadline of each request.
    #[arg(long, default_value = "10s")]
    pub timeout: String,
    /// Send a request refused with a google.rpc.RetryInfo (RATE_LIMITED,
    /// TOO_MANY_IN_FLIGHT, OVERLOADED) again after the delay it gives, as a
    /// well-behaved client would, while --timeout allows; its latency runs
    /// from its first send.
    #[arg(long)]
    pub respect_retry_info: bool,
    /// Seed of the key and method draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Summary format on stdout.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Name of this run in the summary and charts (default: the address).
    #[arg(long)]
    pub label: Option<String>,
    /// Write a latency-by-percentile chart (SVG) of this run.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Earlier runs (`--output json` files) to draw in the same chart.
    #[arg(long)]
    pub plot_with: Vec<PathBuf>,
    /// Write a chart (SVG) of goodput and refusals against offered load,
    /// one point per run: this one and the --plot-with runs.
    #[arg(long)]
    pub plot_goodput: Option<PathBuf>,
    /// Send nothing: draw the --plot-with runs in the --plot and
    /// --plot-goodput charts, as they were measured.
    #[arg(long, requires = "plot_with")]
    pub plot_only: bool,
    /// No live progress line (it is shown only when stderr is a terminal).
    #[arg(long)]
    pub quiet: bool,
}

fn config_error(e: impl std::fmt::Display) -> Failure {
    Failure::new(EXIT_CONFIG, e)
}

/// Where to connect and as whom, from the flags, falling back on the config
/// (read only when the flags leave something to it).
fn target(args: &Args) -> Result<(String, AgencyIdentity, Option<Config>), Failure> {
    let needs_config = args.target.needs_config()
        || (args.extract.is_none()
            && (args.citizens.is_none() || args.parcels.is_none() || args.enterprises.is_none()));
    let config = if needs_config {
        Some(Config::load(&args.config.config).map_err(|e| {
            config_error(format!(
                "{e}\n(give --addr, --ca, --cert, --key and --extract to run without a gateway config)"
            ))
        })?)
    } else {
        None
    };
    let (addr, identity, _) = args.target.resolve(config.as_ref())?;
    Ok((addr, identity, config))
}

fn read_mask(text: &str) -> Result<pbjson_types::FieldMask, Failure> {
    let paths = mask_paths(text);
    if paths.is_empty() {
        return Err(config_error("--read-mask names no field"));
    }
    Ok(pbjson_types::FieldMask { paths })
}

fn workload(args: &Args, config: Option<&Config>) -> Result<Workload, Failure> {
    let mix = match (&args.mix, &args.method) {
        (Some(m), _) => Mix::parse(m).map_err(|e| config_error(format!("--mix: {e}")))?,
        (None, Some(m)) => {
            Mix::single(Op::parse(m).map_err(|e| config_error(format!("--method: {e}")))?)
        }
        (None, None) => Mix::single(Op::GetCitizen),
    };
    let dir = match (&args.extract, config) {
        (Some(d), _) => d.clone(),
        (None, Some(c)) => c.data_dir.join("demo"),
        (None, None) => PathBuf::from("."),
    };
    let mut files = ExtractFiles::in_dir(&dir);
    if let Some(f) = &args.citizens {
        files.citizens = f.clone();
    }
    if let Some(f) = &args.parcels {
        files.parcels = f.clone();
    }
    if let Some(f) = &args.enterprises {
        files.enterprises = f.clone();
    }
    let keys = Keys::load(&files, &mix).map_err(config_error)?;
    let distribution = match args.distribution {
        KeyDistribution::Uniform => Distribution::Uniform,
        KeyDistribution::Zipf => {
            if !(args.zipf_exponent.is_finite() && args.zipf_exponent > 0.0) {
                return Err(config_error("--zipf-exponent must be a number above 0"));
            }
            Distribution::Zipf(args.zipf_exponent)
        }
    };
    // Refuse a context the gateway would refuse on every call.
    domain::agency::parse_dossier_id(&args.dossier)
        .map_err(|e| config_error(format!("--dossier: {e}")))?;
    if args.procedure.trim().is_empty() {
        return Err(config_error("--procedure must name the procedure code"));
    }
    let context = AccessContext {
        procedure_code: args.procedure.clone(),
        dossier_id: args.dossier.clone(),
        officer_id: args.officer.clone(),
    };
    let mask = args.read_mask.as_deref().map(read_mask).transpose()?;
    Ok(Workload::new(mix, keys, distribution, context, mask))
}

fn plan(args: &Args, target: String) -> Result<Plan, Failure> {
    let duration = |flag: &str, text: &str| {
        parse_duration(text).map_err(|e| config_error(format!("{flag}: {e}")))
    };
    let stop = match (args.requests, &args.duration) {
        (Some(0), _) => return Err(config_error("--requests must be at least 1")),
        (Some(n), _) => Stop::Requests(n),
        (None, Some(d)) => Stop::After(duration("--duration", d)?),
        (None, None) => Stop::After(Duration::from_secs(10)),
    };
    if stop == Stop::After(Duration::ZERO) {
        return Err(config_error("--duration must be above 0"));
    }
    let model = match args.rate {
        Some(r) if !(r.is_finite() && (0.001..=10_000_000.0).contains(&r)) => {
            return Err(config_error(
                "--rate must be 0.001 to 10000000 (requests per second)",
            ))
        }
        Some(_) if !(1..=MAX_IN_FLIGHT).contains(&args.max_in_flight) => {
            return Err(config_error(format!(
                "--max-in-flight must be 1 to {MAX_IN_FLIGHT}"
            )))
        }
        Some(rate) => Model::Open {
            rate,
            max_in_flight: args.max_in_flight,
        },
        None if !(1..=MAX_IN_FLIGHT).contains(&args.concurrency) => {
            return Err(config_error(format!(
                "--concurrency must be 1 to {MAX_IN_FLIGHT}"
            )))
        }
        None => Model::Closed {
            concurrency: args.concurrency,
        },
    };
    if !(1..=10_000).contains(&args.connections) {
        return Err(config_error("--connections must be 1 to 10000"));
    }
    let timeout = duration("--timeout", &args.timeout)?;
    if timeout.is_zero() {
        return Err(config_error("--timeout must be above 0"));
    }
    Ok(Plan {
        label: args.label.clone().unwrap_or_else(|| target.clone()),
        target,
        model,
        stop,
        warmup: duration("--warmup", &args.warmup)?,
        connections: args.connections,
        new_connection_per_request: args.new_connection_per_request,
        timeout,
        seed: args.seed,
        progress: !args.quiet,
        respect_retry_info: args.respect_retry_info,
    })
}

/// Draws `runs` in the charts the flags ask for.
fn draw(args: &Args, runs: &[Summary]) -> Result<(), Failure> {
    let mix = runs.last().map(|r| r.mix.as_str()).unwrap_or_default();
    if let Some(path) = &args.plot {
        let title = format!("Latency by percentile: {mix}");
        write_atomically(path, &plot::svg(&title, runs))
            .map_err(|e| Failure::new(EXIT_FAILED, format!("{}: {e}", path.display())))?;
    }
    if let Some(path) = &args.plot_goodput {
        let title = format!("Goodput by offered load: {mix}");
        write_atomically(path, &plot::goodput_svg(&title, runs))
            .map_err(|e| Failure::new(EXIT_FAILED, format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

/// Writes `contents` to `path` through a temporary file, so a failed write
/// leaves no half chart behind.
fn write_atomically(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("svg.tmp");
    let written = std::fs::write(&tmp, contents).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

pub fn run(args: Args) -> Result<(), Failure> {
    if !args.plot_with.is_empty() && args.plot.is_none() && args.plot_goodput.is_none() {
        return Err(config_error(
            "--plot-with needs --plot or --plot-goodput to draw in",
        ));
    }
    // Read the runs to compare with before spending minutes on a run.
    let mut others = Vec::new();
    for p in &args.plot_with {
        let text = std::fs::read_to_string(p)
            .map_err(|e| config_error(format!("{}: {e}", p.display())))?;
        let s: Summary = serde_json::from_str(&text).map_err(|e| {
            config_error(format!(
                "{}: not a `load --output json` summary: {e}",
                p.display()
            ))
        })?;
        others.push(s);
    }
    if args.plot_only {
        return draw(&args, &others);
    }
    let (addr, identity, config) = target(&args)?;
    let plan = plan(&args, addr)?;
    let workload = workload(&args, config.as_ref())?;
    let rt = runtime()?;
    let summary = rt
        .block_on(load::run(plan, identity, workload))
        .map_err(|e| Failure::new(EXIT_FAILED, e))?;
    if let Some(warning) = summary.behind_warning().filter(|_| !args.quiet) {
        eprintln!("load: {warning}");
    }
    match args.output {
        Output::Text => out!("{}", summary.to_text()),
        Output::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&summary)
                .map_err(|e| Failure::new(EXIT_FAILED, e.to_string()))?
        ),
    }
    let mut runs = others;
    runs.push(summary.clone());
    draw(&args, &runs)?;
    if summary.requests > 0 && summary.status_counts.get("OK").copied().unwrap_or(0) == 0 {
        return Err(Failure::new(
            EXIT_FAILED,
            format!(
                "no request succeeded: {}",
                summary
                    .status_counts
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if summary.requests == 0 {
        return Err(Failure::new(EXIT_FAILED, "no request was measured"));
    }
    Ok(())
}
