//! The TOML config: parse, validate, resolve paths. A [`Config`] only exists
//! validated: every error names the file, the key and what to change. Relative
//! paths resolve from the config file's folder; unknown keys are errors.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{
    domain,
    fieldmask::PathSet,
    policy::{self, Grant, Policy},
    schema::Schema,
};

/// A config that cannot be used, with a message naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: String,
    trust_domain: String,
    data_dir: PathBuf,
    #[serde(default)]
    dev: bool,
    #[serde(default)]
    log_format: LogFormat,
    tls: RawTls,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    agency: Vec<RawAgency>,
    #[serde(default)]
    grant: Vec<RawGrant>,
    #[serde(default)]
    registry: Vec<RawRegistry>,
    admin: Option<RawAdmin>,
}

/// `[admin]`: the plain-HTTP admin listener (metrics, readiness, liveness).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: toml::Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
    #[serde(default)]
    crls: Vec<PathBuf>,
    #[serde(default = "yes")]
    require_client_auth_eku: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    dir: Option<PathBuf>,
    signing_key: Option<PathBuf>,
    checkpoint_every_records: Option<u64>,
    checkpoint_every_seconds: Option<u64>,
    receipts: Option<bool>,
    database_url: Option<String>,
    database_pool_size: Option<u64>,
    instance: Option<String>,
    segment_bytes: Option<u64>,
    segment_max_age_hours: Option<u64>,
    retain_days: Option<u64>,
    archive_dir: Option<PathBuf>,
    #[serde(default)]
    witnesses: Vec<RawWitness>,
}

/// One entry of `[audit] witnesses`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWitness {
    address: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// `[limits]`: every key optional, each with its default in [`Limits`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    verify_failures_per_subject: Option<u32>,
    verify_window_hours: Option<u32>,
    verify_failures_per_agency_hour: Option<u32>,
    // Connections: see [`ConnectionLimits`].
    max_connections: Option<u64>,
    max_connections_per_agency: Option<u64>,
    max_handshakes_per_address: Option<u64>,
    handshake_timeout_ms: Option<u64>,
    preface_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    keepalive_interval_ms: Option<u64>,
    keepalive_timeout_ms: Option<u64>,
    max_concurrent_streams: Option<u64>,
    max_header_list_bytes: Option<u64>,
    max_pending_reset_streams: Option<u64>,
    fd_reserve: Option<u64>,
    drain_timeout_ms: Option<u64>,
    // Calls: see [`Limits`].
    max_in_flight: Option<u64>,
    max_request_bytes: Option<u64>,
    max_call_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgency {
    code: String,
    name: String,
    #[serde(default)]
    relay: bool,
    ca: Option<PathBuf>,
    rate_per_second: Option<f64>,
    burst: Option<u64>,
    max_in_flight: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    service: String,
    owner: String,
    upstream: Option<RawUpstream>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    address: String,
    server_name: Option<String>,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    timeout_ms: Option<u64>,
    max_in_flight: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    agency: String,
    method: String,
    procedures: Vec<String>,
    #[serde(default)]
    fields: Vec<String>,
}

/// How `serve` writes its log lines.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable `key=value` lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Files of the gateway's TLS identity and of the agencies' trust anchors.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    pub crls: Vec<PathBuf>,
    /// Agency certificates must list `clientAuth` in their extended key
    /// usage (default). `false` also accepts certificates without the
    /// extension, for a legacy CA; a certificate whose extension lacks
    /// `clientAuth` (a server certificate) is refused either way.
    pub require_client_auth_eku: bool,
}

/// Where and how the access log is kept.
#[derive(Clone, Debug)]
pub struct AuditSettings {
    /// Folder of `segments/`, `index.sqlite`, `audit.head`, `audit.pub`.
    pub dir: PathBuf,
    /// The Ed25519 signing key (PKCS#8), created on first start.
    pub signing_key: PathBuf,
    /// A signed checkpoint at least every this many records...
    pub checkpoint_every_records: std::num::NonZeroU64,
    /// ...and at least this often while records are written.
    pub checkpoint_every: std::time::Duration,
    /// Answered data calls carry a signed receipt (trailer
    /// `x-interop-receipt`); off unless turned on, while a receipt costs a
    /// signature per call.
    pub receipts: bool,
    /// `database_url`: keep the log in PostgreSQL instead of `dir`.
    pub database: Option<AuditDatabase>,
    /// `instance`: the name of this gateway's hash chain in a shared
    /// database (default: the host name).
    pub instance: String,
    /// Segment sealing, retention and the archive (`segment_bytes`,
    /// `segment_max_age_hours`, `retain_days`, `archive_dir`).
    pub files: crate::audit::FileOptions,
    /// `witnesses`: gateways every checkpoint is sent to for countersigning.
    pub witnesses: Vec<WitnessSettings>,
}

/// How to reach a witness (another gateway's `WitnessService`) over mutual
/// TLS: one entry of `[audit] witnesses`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessSettings {
    /// `host:port` (an `https://` prefix, if written, is dropped).
    pub address: String,
    /// The host of `address`: the name verified on the witness's server
    /// certificate.
    pub server_name: String,
    /// Roots for the witness's server certificate.
    pub ca: PathBuf,
    /// This gateway's client certificate and key toward the witness.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The PostgreSQL access log, from `[audit] database_url`.
#[derive(Clone)]
pub struct AuditDatabase {
    /// `postgresql://user[:password]@host[:port]/database`, with libpq's
    /// TLS parameters (their files resolved from the config's folder).
    pub url: String,
    /// Connections the gateway holds open at most (`database_pool_size`,
    /// default 8), besides the one holding the instance's lock.
    pub pool_size: usize,
}

impl std::fmt::Debug for AuditDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("AuditDatabase")
            .field("url", &crate::audit::pg::redacted(&self.url))
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// Default `[audit] database_pool_size`.
pub const DEFAULT_DATABASE_POOL_SIZE: u64 = 8;

/// The host name, the default `[audit] instance`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| check_instance(h).is_ok())
        .unwrap_or_else(|| "gateway".to_owned())
}

/// An instance name: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn check_instance(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "{name:?} is not an instance name: 1 to 64 letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(())
}

/// Bounds on connections, from `[limits]`: what a slow, idle or hostile
/// client can hold of the gateway's sockets, tasks and file descriptors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once, handshakes included (further capped by the
    /// open-file limit minus `fd_reserve`). Default 4096.
    pub max_connections: usize,
    /// Connections one agency may hold open (all its certificates). Default 64.
    pub max_connections_per_agency: usize,
    /// TLS handshakes in progress from one IP address. Default 32.
    pub max_handshakes_per_address: usize,
    /// A handshake not finished by then is dropped. Default 10 s.
    pub handshake_timeout: Duration,
    /// After the handshake, the HTTP/2 preface must arrive within this. Default 5 s.
    pub preface_timeout: Duration,
    /// A connection with no call in progress for this long is closed. Default 5 min.
    pub idle_timeout: Duration,
    /// HTTP/2 PING sent after this long without frames from the client. Default 60 s.
    pub keepalive_interval: Duration,
    /// ...and the connection closed if the PING is not answered within this. Default 20 s.
    pub keepalive_timeout: Duration,
    /// Calls in progress at once on one connection. Default 100.
    pub max_concurrent_streams: u32,
    /// Largest header block a call may send, bytes. Default 16384.
    pub max_header_list_bytes: u32,
    /// Streams reset by the client and not yet processed, per connection,
    /// before the connection is closed (rapid-reset defence). Default 20.
    pub max_pending_reset_streams: usize,
    /// File descriptors kept free for the store, the access log and
    /// checkpoints, whatever clients do. Default 64.
    pub fd_reserve: u64,
    /// On SIGTERM, calls in flight may finish for this long before the
    /// remaining connections are closed. Default 10 s.
    pub drain_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 4096,
            max_connections_per_agency: 64,
            max_handshakes_per_address: 32,
            handshake_timeout: Duration::from_secs(10),
            preface_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            max_concurrent_streams: 100,
            max_header_list_bytes: 16 * 1024,
            max_pending_reset_streams: 20,
            fd_reserve: 64,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl RawLimits {
    fn connection_limits(&self) -> Result<ConnectionLimits, String> {
        let d = ConnectionLimits::default();
        let count = |key: &str, v: Option<u64>, default: usize, max: u64| match v {
            None => Ok(default),
            Some(n) if (1..=max).contains(&n) => Ok(n as usize),
            Some(n) => Err(format!("limits.{key}: must be 1 to {max}, got {n}")),
        };
        let millis = |key: &str, v: Option<u64>, default: Duration| match v {
            None => Ok(default),
            Some(n) if (1..=86_400_000).contains(&n) => Ok(Duration::from_millis(n)),
            Some(n) => Err(format!(
                "limits.{key}: must be 1 to 86400000 (milliseconds), got {n}"
            )),
        };
        let limits = ConnectionLimits {
            max_connections: count(
                "max_connections",
                self.max_connections,
                d.max_connections,
                1 << 20,
            )?,
            max_connections_per_agency: count(
                "max_connections_per_agency",
                self.max_connections_per_agency,
                d.max_connections_per_agency,
                1 << 20,
            )?,
            max_handshakes_per_address: count(
                "max_handshakes_per_address",
                self.max_handshakes_per_address,
                d.max_handshakes_per_address,
                1 << 20,
            )?,
            handshake_timeout: millis(
                "handshake_timeout_ms",
                self.handshake_timeout_ms,
                d.handshake_timeout,
            )?,
            preface_timeout: millis(
                "preface_timeout_ms",
                self.preface_timeout_ms,
                d.preface_timeout,
            )?,
            idle_timeout: millis("idle_timeout_ms", self.idle_timeout_ms, d.idle_timeout)?,
            keepalive_interval: millis(
                "keepalive_interval_ms",
                self.keepalive_interval_ms,
                d.keepalive_interval,
            )?,
            keepalive_timeout: millis(
                "keepalive_timeout_ms",
                self.keepalive_timeout_ms,
                d.keepalive_timeout,
            )?,
            max_concurrent_streams: count(
                "max_concurrent_streams",
                self.max_concurrent_streams,
                d.max_concurrent_streams as usize,
                10_000,
            )? as u32,
            max_header_list_bytes: count(
                "max_header_list_bytes",
                self.max_header_list_bytes,
                d.max_header_list_bytes as usize,
                1 << 24,
            )? as u32,
            max_pending_reset_streams: count(
                "max_pending_reset_streams",
                self.max_pending_reset_streams,
                d.max_pending_reset_streams,
                10_000,
            )?,
            fd_reserve: match self.fd_reserve {
                None => d.fd_reserve,
                Some(n) if (16..=65_536).contains(&n) => n,
                Some(n) => return Err(format!("limits.fd_reserve: must be 16 to 65536, got {n}")),
            },
            drain_timeout: millis("drain_timeout_ms", self.drain_timeout_ms, d.drain_timeout)?,
        };
        Ok(limits)
    }
}

/// `[limits]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Failed `VerifyCitizen` calls one agency may make about one personal
    /// id within `verify_window` before further calls about it are refused.
    pub verify_failures_per_subject: std::num::NonZeroU32,
    /// The sliding window of `verify_failures_per_subject`.
    pub verify_window: std::time::Duration,
    /// Failed `VerifyCitizen` calls one agency may make within any hour,
    /// over all subjects.
    pub verify_failures_per_agency_hour: std::num::NonZeroU32,
    /// Calls being served at once, gateway-wide; more are shed at once
    /// (UNAVAILABLE `OVERLOADED`). Default [`Limits::default_max_in_flight`].
    pub max_in_flight: usize,
    /// Largest request body a call may send, bytes (its one message);
    /// larger is RESOURCE_EXHAUSTED `REQUEST_TOO_LARGE`. Default 64 KiB.
    pub max_request_bytes: usize,
    /// Longest a call may run, whatever its `grpc-timeout` asks. Default 30 s.
    pub max_call: std::time::Duration,
}

impl Limits {
    /// Longest `verify_window_hours` accepted: 30 days.
    pub const MAX_VERIFY_WINDOW_HOURS: u32 = 720;
    /// Largest `max_request_bytes` accepted: tonic's own decoding limit.
    pub const MAX_REQUEST_BYTES: u64 = 4 * 1024 * 1024;

    /// Default gateway-wide `max_in_flight`: 64 calls per core. A call holds
    /// a core for well under a millisecond and waits for the access log's
    /// group commit for a few: 64 per core keeps every core and the commit
    /// batches full, while a queue any longer only adds latency to calls
    /// that would then time out.
    pub fn default_max_in_flight() -> usize {
        64 * std::thread::available_parallelism().map_or(2, |n| n.get())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            verify_failures_per_subject: std::num::NonZeroU32::MIN.saturating_add(4),
            verify_window: std::time::Duration::from_secs(24 * 3600),
            // An honest office mistypes a few declarations an hour; 100 is far
            // above that, yet caps a sweep over many subjects at 2,400 failed
            // guesses a day.
            verify_failures_per_agency_hour: std::num::NonZeroU32::MIN.saturating_add(99),
            max_in_flight: Self::default_max_in_flight(),
            max_request_bytes: 64 * 1024,
            max_call: std::time::Duration::from_secs(30),
        }
    }
}

impl RawLimits {
    fn validate(&self) -> Result<Limits, String> {
        let defaults = Limits::default();
        let positive = |key: &str, v: Option<u32>, default: std::num::NonZeroU32| match v {
            None => Ok(default),
            Some(n) => std::num::NonZeroU32::new(n)
                .ok_or_else(|| format!("limits.{key}: must be at least 1, got 0")),
        };
        let hours = self
            .verify_window_hours
            .unwrap_or((defaults.verify_window.as_secs() / 3600) as u32);
        if hours == 0 || hours > Limits::MAX_VERIFY_WINDOW_HOURS {
            return Err(format!(
                "limits.verify_window_hours: must be 1 to {}, got {hours}",
                Limits::MAX_VERIFY_WINDOW_HOURS
            ));
        }
        Ok(Limits {
            verify_failures_per_subject: positive(
                "verify_failures_per_subject",
                self.verify_failures_per_subject,
                defaults.verify_failures_per_subject,
            )?,
            verify_window: std::time::Duration::from_secs(u64::from(hours) * 3600),
            verify_failures_per_agency_hour: positive(
                "verify_failures_per_agency_hour",
                self.verify_failures_per_agency_hour,
                defaults.verify_failures_per_agency_hour,
            )?,
            max_in_flight: match self.max_in_flight {
                None => defaults.max_in_flight,
                Some(n) if (1..=1_000_000).contains(&n) => n as usize,
                Some(n) => {
                    return Err(format!(
                        "limits.max_in_flight: must be 1 to 1000000, got {n}"
                    ))
                }
            },
            max_request_bytes: match self.max_request_bytes {
                None => defaults.max_request_bytes,
                Some(n) if (64..=Limits::MAX_REQUEST_BYTES).contains(&n) => n as usize,
                Some(n) => {
                    return Err(format!(
                        "limits.max_request_bytes: must be 64 to {}, got {n}",
                        Limits::MAX_REQUEST_BYTES
                    ))
                }
            },
            max_call: match self.max_call_ms {
                None => defaults.max_call,
                Some(n) if (1..=86_400_000).contains(&n) => std::time::Duration::from_millis(n),
                Some(n) => {
                    return Err(format!(
                        "limits.max_call_ms: must be 1 to 86400000 (milliseconds), got {n}"
                    ))
                }
            },
        })
    }
}

/// A configured agency.
#[derive(Clone, Debug)]
pub struct Agency {
    pub code: String,
    pub name: String,
    /// May call on behalf of other configured agencies (header
    /// `x-interop-on-behalf-of`): another gateway that forwards its
    /// consumers' calls to this one.
    pub relay: bool,
    /// `[[agency]] ca`: the only CA (PEM, one or more certificates) that may
    /// issue this agency's certificates. `None`: any CA of `tls.client_ca`.
    pub ca: Option<PathBuf>,
    /// How fast and how much at once it may call.
    pub limits: AgencyLimits,
}

/// An agency's share of the gateway: `rate_per_second`, `burst` and
/// `max_in_flight` of its `[[agency]]` entry. Unset: unlimited.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgencyLimits {
    /// Sustained calls per second and the token bucket's size (`burst`,
    /// default the rate rounded up).
    pub rate: Option<Rate>,
    /// Calls of this agency being served at once.
    pub max_in_flight: Option<usize>,
}

/// A token bucket's refill rate and size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

/// Largest `rate_per_second` accepted.
const MAX_RATE_PER_SECOND: f64 = 1_000_000.0;
/// Smallest `rate_per_second` accepted: one call in about 11.6 days. Below
/// it a refusal's RetryInfo could not be stated as a duration.
const MIN_RATE_PER_SECOND: f64 = 0.000_001;

fn agency_limits(i: usize, a: &RawAgency) -> Result<AgencyLimits, String> {
    let rate = match (a.rate_per_second, a.burst) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(format!(
                "agency[{i}].burst: set rate_per_second too (burst is the size of its bucket)"
            ))
        }
        (Some(r), burst) => {
            if !(r.is_finite() && (MIN_RATE_PER_SECOND..=MAX_RATE_PER_SECOND).contains(&r)) {
                return Err(format!(
                    "agency[{i}].rate_per_second: must be above 0, from {MIN_RATE_PER_SECOND} (one call in about 11.6 days) to {MAX_RATE_PER_SECOND}, got {r}"
                ));
            }
            let burst = match burst {
                None => r.ceil() as u32,
                Some(b) if (1..=u64::from(u32::MAX)).contains(&b) => b as u32,
                Some(b) => {
                    return Err(format!(
                        "agency[{i}].burst: must be 1 to {}, got {b}",
                        u32::MAX
                    ))
                }
            };
            Some(Rate {
                per_second: r,
                burst,
            })
        }
    };
    let max_in_flight = match a.max_in_flight {
        None => None,
        Some(n) if (1..=1_000_000).contains(&n) => Some(n as usize),
        Some(n) => {
            return Err(format!(
                "agency[{i}].max_in_flight: must be 1 to 1000000, got {n}"
            ))
        }
    };
    Ok(AgencyLimits {
        rate,
        max_in_flight,
    })
}

/// Who owns a registry service and where it is answered from.
#[derive(Clone, Debug)]
pub struct RegistryEntry {
    /// Full service name, `interop.citizen.v1.CitizenRegistryService`.
    pub service: &'static str,
    /// Agency code of the data owner, reported as provenance.
    pub owner: String,
    /// The owner's own gateway; `None`: the embedded store answers.
    pub upstream: Option<UpstreamSettings>,
}

/// How to reach a registry owner's gateway over mutual TLS.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    /// `host:port`, as configured.
    pub address: String,
    /// Name verified on the owner's server certificate.
    pub server_name: String,
    /// Roots for the owner's server certificate.
    pub ca: PathBuf,
    /// This gateway's client certificate and key toward the owner.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Budget of one forwarded call, retries included.
    pub timeout: std::time::Duration,
    /// Calls to this owner in flight at once; more wait for a slot (within
    /// `timeout`).
    pub max_in_flight: usize,
}

/// Default `upstream.timeout_ms`.
pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 2000;
/// Default `upstream.max_in_flight`.
pub const DEFAULT_UPSTREAM_MAX_IN_FLIGHT: usize = 256;

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub listen: SocketAddr,
    pub trust_domain: String,
    pub data_dir: PathBuf,
    /// The config marks itself as a development config: `serve` may create a
    /// missing dev PKI and demo store.
    pub dev: bool,
    pub log_format: LogFormat,
    pub tls: TlsFiles,
    pub audit: AuditSettings,
    pub limits: Limits,
    /// `[limits]` on connections.
    pub connections: ConnectionLimits,
    pub agencies: BTreeMap<String, Agency>,
    pub policy: Policy,
    /// `[[registry]]` entries by service name; a registry service without
    /// one is served from the embedded store with no declared owner.
    pub registries: BTreeMap<&'static str, RegistryEntry>,
    /// `[admin]`: where the admin listener (`/metrics`, `/readyz`,
    /// `/livez`) binds; no listener when absent.
    pub admin: Option<AdminSettings>,
}

/// The admin listener's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminSettings {
    /// Plain HTTP: bind it to loopback or a management network.
    pub listen: SocketAddr,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            message: format!("cannot read config: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Validates config text as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            file: path.display().to_string(),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let mut msg = e.message().to_owned();
            if let Some(span) = e.span() {
                let start = span.start.min(text.len());
                let line = text[..start].matches('\n').count() + 1;
                // Unknown keys name themselves; type errors and duplicates
                // are told the key here.
                let named = |key: &str| {
                    let last = key.rsplit('.').next().unwrap_or(key);
                    msg.contains(&format!("`{last}`"))
                };
                msg = match key_at(text, span) {
                    Some(key) if !named(&key) => format!("line {line}: {key}: {msg}"),
                    _ => format!("line {line}: {msg}"),
                };
            }
            err(msg)
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };

        let listen: SocketAddr = raw.listen.parse().map_err(|e| {
            err(format!(
                "listen: {:?} is not an address with a port, like \"127.0.0.1:50051\" ({e})",
                raw.listen
            ))
        })?;
        let td = &raw.trust_domain;
        let td_ok = !td.is_empty()
            && td.len() <= 255
            && td.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'_'
            });
        if !td_ok {
            return Err(err(format!(
                "trust_domain: {td:?} is not a SPIFFE trust domain (lowercase letters, digits, '.', '-', '_')"
            )));
        }

        let mut agencies = BTreeMap::new();
        for (i, a) in raw.agency.iter().enumerate() {
            domain::agency::parse_agency_code(&a.code)
                .map_err(|e| err(format!("agency[{i}].code: {e}")))?;
            if a.name.trim().is_empty() {
                return Err(err(format!("agency[{i}].name: must not be empty")));
            }
            if agencies
                .insert(
                    a.code.clone(),
                    Agency {
                        code: a.code.clone(),
                        name: a.name.clone(),
                        relay: a.relay,
                        ca: a.ca.as_deref().map(&resolve),
                        limits: agency_limits(i, a).map_err(err)?,
                    },
                )
                .is_some()
            {
                return Err(err(format!(
                    "agency[{i}].code: {:?} is configured twice",
                    a.code
                )));
            }
        }

        let schema = Schema::gateway();
        let mut grants = Vec::new();
        for (i, g) in raw.grant.iter().enumerate() {
            if !agencies.contains_key(&g.agency) {
                return Err(err(format!(
                    "grant[{i}].agency: {:?} is not a configured agency (add an [[agency]] with this code)",
                    g.agency
                )));
            }
            let Some(method) = policy::method(&g.method) else {
                let known: Vec<&str> = policy::METHODS.iter().map(|m| m.name).collect();
                return Err(err(format!(
                    "grant[{i}].method: {:?} is not a method of this gateway; one of: {}",
                    g.method,
                    known.join(", ")
                )));
            };
            if g.procedures.is_empty() {
                return Err(err(format!(
                    "grant[{i}].procedures: must name at least one procedure code"
                )));
            }
            for (j, p) in g.procedures.iter().enumerate() {
                domain::agency::parse_procedure_code(p)
                    .map_err(|e| err(format!("grant[{i}].procedures[{j}]: {e}")))?;
            }
            match method.record {
                Some(record) if g.fields.is_empty() => {
                    return Err(err(format!(
                        "grant[{i}].fields: {} returns {record} records; name the fields this grant may read",
                        method.name
                    )));
                }
                Some(record) => {
                    for (j, f) in g.fields.iter().enumerate() {
                        schema
                            .resolve(record, f)
                            .map_err(|e| err(format!("grant[{i}].fields[{j}]: {e}")))?;
                    }
                }
                None if !g.fields.is_empty() => {
                    return Err(err(format!(
                        "grant[{i}].fields: {} returns no registry record; remove `fields`",
                        method.name
                    )));
                }
                None => {}
            }
            grants.push(Grant {
                agency: g.agency.clone(),
                method,
                procedures: g.procedures.clone(),
                fields: PathSet::new(&g.fields),
            });
        }

        let mut registries = BTreeMap::new();
        for (i, r) in raw.registry.iter().enumerate() {
            let entry = registry_entry(i, r, &resolve).map_err(err)?;
            if registries.insert(entry.service, entry).is_some() {
                return Err(err(format!(
                    "registry[{i}].service: {:?} is configured twice; one [[registry]] per service",
                    r.service
                )));
            }
        }

        let every_records = raw.audit.checkpoint_every_records.unwrap_or(1000);
        let checkpoint_every_records = std::num::NonZeroU64::new(every_records)
            .ok_or_else(|| err("audit.checkpoint_every_records: must be at least 1".into()))?;
        let every_seconds = raw.audit.checkpoint_every_seconds.unwrap_or(10);
        if every_seconds == 0 || every_seconds > 86_400 {
            return Err(err(format!(
                "audit.checkpoint_every_seconds: must be 1 to 86400, got {every_seconds}"
            )));
        }
        let data_dir = resolve(&raw.data_dir);
        let audit_dir = raw
            .audit
            .dir
            .as_deref()
            .map(resolve)
            .unwrap_or_else(|| data_dir.join("audit"));
        let signing_key = raw
            .audit
            .signing_key
            .as_deref()
            .map(resolve)
            .unwrap_or_else(|| data_dir.join("audit-signing.key"));
        let segment_bytes = raw.audit.segment_bytes.unwrap_or(64 << 20);
        if !(4096..=(1 << 40)).contains(&segment_bytes) {
            return Err(err(format!(
                "audit.segment_bytes: must be 4096 to 1099511627776 (1 TiB), got {segment_bytes}"
            )));
        }
        let hours = |key: &str, value: Option<u64>, per: u64, max: u64| match value {
            None => Ok(None),
            Some(v) if (1..=max).contains(&v) => Ok(Some(std::time::Duration::from_secs(v * per))),
            Some(v) => Err(err(format!("audit.{key}: must be 1 to {max}, got {v}"))),
        };
        let segment_max_age = hours(
            "segment_max_age_hours",
            raw.audit.segment_max_age_hours,
            3600,
            24 * 366,
        )?;
        let retain = hours("retain_days", raw.audit.retain_days, 86_400, 36_600)?;
        let archive_dir = raw.audit.archive_dir.as_deref().map(resolve);
        if let Some(archive) = &archive_dir {
            if archive == &audit_dir || archive.starts_with(&audit_dir) {
                return Err(err(format!(
                    "audit.archive_dir: {} is inside the audit folder {}; give it a folder of its own (another disk is best)",
                    archive.display(),
                    audit_dir.display()
                )));
            }
            if retain.is_none() {
                return Err(err(
                    "audit.archive_dir: set audit.retain_days too: segments move to the archive once older than that"
                        .into(),
                ));
            }
        }
        let files = crate::audit::FileOptions {
            segment_bytes,
            segment_max_age,
            retain,
            archive_dir,
            ..Default::default()
        };
        if raw.audit.database_url.is_some() {
            for (key, set) in [
                ("segment_bytes", raw.audit.segment_bytes.is_some()),
                (
                    "segment_max_age_hours",
                    raw.audit.segment_max_age_hours.is_some(),
                ),
                ("retain_days", raw.audit.retain_days.is_some()),
                ("archive_dir", raw.audit.archive_dir.is_some()),
            ] {
                if set {
                    return Err(err(format!(
                        "audit.{key}: applies to the log in files, not with audit.database_url"
                    )));
                }
            }
        }
        let database = match &raw.audit.database_url {
            None => None,
            Some(url) => {
                if raw.audit.dir.is_some() {
                    return Err(err(
                        "audit.dir and audit.database_url: the log is kept in one place; remove one"
                            .into(),
                    ));
                }
                if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
                    return Err(err(
                        "audit.database_url: expected postgresql://user[:password]@host[:port]/database"
                            .into(),
                    ));
                }
                // Certificate files in the URL resolve from the config's
                // folder, as every other path here, and are read now.
                let url = crate::audit::pg_tls::resolve_paths(url, |p| resolve(Path::new(p)))
                    .and_then(|url| crate::audit::pg_tls::target(&url).map(|_| url))
                    .map_err(|e| {
                        err(format!(
                            "audit.database_url: {e}; expected postgresql://user[:password]@host[:port]/database[?sslmode=verify-full&sslrootcert=ca.pem]"
                        ))
                    })?;
                let pool_size = raw
                    .audit
                    .database_pool_size
                    .unwrap_or(DEFAULT_DATABASE_POOL_SIZE);
                if !(1..=256).contains(&pool_size) {
                    return Err(err(format!(
                        "audit.database_pool_size: must be 1 to 256, got {pool_size}"
                    )));
                }
                Some(AuditDatabase {
                    url,
                    pool_size: pool_size as usize,
                })
            }
        };
        if database.is_none() && raw.audit.database_pool_size.is_some() {
            return Err(err(
                "audit.database_pool_size: only with audit.database_url".into(),
            ));
        }
        let instance = match &raw.audit.instance {
            Some(name) => {
                check_instance(name).map_err(|e| err(format!("audit.instance: {e}")))?;
                name.clone()
            }
            None => host_name(),
        };
        let witnesses = raw
            .audit
            .witnesses
            .iter()
            .enumerate()
            .map(|(i, w)| witness_settings(i, w, &resolve))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        let audit = AuditSettings {
            witnesses,
            database,
            instance,
            files,
            dir: audit_dir,
            signing_key,
            checkpoint_every_records,
            checkpoint_every: std::time::Duration::from_secs(every_seconds),
            receipts: raw.audit.receipts.unwrap_or(false),
        };

        let limits = raw.limits.validate().map_err(err)?;
        let connections = raw.limits.connection_limits().map_err(err)?;
        let admin = raw
            .admin
            .as_ref()
            .map(|a| admin_settings(a, listen, text))
            .transpose()
            .map_err(err)?;

        Ok(Config {
            path: path.to_owned(),
            limits,
            connections,
            listen,
            trust_domain: raw.trust_domain.clone(),
            data_dir,
            audit,
            dev: raw.dev,
            log_format: raw.log_format,
            tls: TlsFiles {
                cert: resolve(&raw.tls.cert),
                key: resolve(&raw.tls.key),
                client_ca: resolve(&raw.tls.client_ca),
                crls: raw.tls.crls.iter().map(|p| resolve(p)).collect(),
                require_client_auth_eku: raw.tls.require_client_auth_eku,
            },
            agencies,
            policy: Policy::new(grants),
            registries,
            admin,
        })
    }

    /// Whether every registry service is forwarded to its owner, so this
    /// gateway holds no registry data and needs no store.
    pub fn forwards_every_registry(&self) -> bool {
        policy::REGISTRY_SERVICES
            .iter()
            .all(|s| self.registry(s).is_some_and(|r| r.upstream.is_some()))
    }

    /// The `[[registry]]` entry of a service, if any.
    pub fn registry(&self, service: &str) -> Option<&RegistryEntry> {
        self.registries.get(service)
    }

    /// The embedded store's file.
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("registry.sqlite")
    }

    /// The verification budget's file: failed `VerifyCitizen` calls.
    pub fn verify_budget_path(&self) -> PathBuf {
        self.data_dir.join("verify-budget.sqlite")
    }

    /// Folder of the dev PKI: the folder of `tls.client_ca`.
    pub fn pki_dir(&self) -> PathBuf {
        self.tls
            .client_ca
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// Checks that every TLS file exists, naming the key of the first missing one.
    /// In a dev config, says which command makes a missing dev file (a
    /// start would create the dev PKI; check-config and reloads create
    /// nothing).
    pub fn check_files(&self) -> Result<(), ConfigError> {
        const PKI: &str = "a dev config: `interop-gateway certs init` creates the dev PKI";
        const CRL: &str =
            "a dev config: `interop-gateway certs crl` (or `certs revoke`) writes the dev CA's CRL";
        let mut files = vec![
            ("tls.cert".to_owned(), &self.tls.cert, Some(PKI)),
            ("tls.key".to_owned(), &self.tls.key, Some(PKI)),
            ("tls.client_ca".to_owned(), &self.tls.client_ca, Some(PKI)),
        ];
        for crl in &self.tls.crls {
            files.push(("tls.crls".to_owned(), crl, Some(CRL)));
        }
        for (code, agency) in &self.agencies {
            if let Some(ca) = &agency.ca {
                files.push((format!("agency {code:?}: ca"), ca, None));
            }
        }
        for (key, file, hint) in files {
            if !file.is_file() {
                let hint = match hint {
                    Some(hint) if self.dev => format!(" ({hint})"),
                    _ => String::new(),
                };
                return Err(ConfigError {
                    file: self.path.display().to_string(),
                    message: format!("{key}: file {} does not exist{hint}", file.display()),
                });
            }
        }
        Ok(())
    }
}

/// The dotted key (`audit.receipts`, `agency.burst`) whose value or name
/// is at `span` of the TOML `text`: the key before the nearest `=` on the
/// line (inline tables included), else the text of the span itself, under
/// the table header above it.
fn key_at(text: &str, span: std::ops::Range<usize>) -> Option<String> {
    let start = span.start.min(text.len());
    let end = span.end.clamp(start, text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let before = text.get(line_start..start)?;
    let bare = |t: &str| {
        let t = t.trim().trim_matches(['"', '\'']);
        (!t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        .then(|| t.to_owned())
    };
    // The span is a key (a duplicate) or a value (a type error).
    let key = if text[end..].trim_start().starts_with('=') {
        bare(&text[start..end])?
    } else {
        let eq = before.rfind('=')?;
        bare(
            before[..eq]
                .rsplit(['{', ',', ' ', '\t'])
                .find(|t| !t.trim().is_empty())?,
        )?
    };
    // Inside an inline table: `upstream = { ..., key = ... }`.
    let key = match before.find('{') {
        Some(brace) => match before[..brace].find('=').and_then(|eq| bare(&before[..eq])) {
            Some(outer) if outer != key => format!("{outer}.{key}"),
            _ => key,
        },
        None => key,
    };
    let table = text[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        l.starts_with('[').then(|| {
            l.trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
    });
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key,
    })
}

/// Validates one `[[registry]]` entry (index `i`); errors name the key.
fn registry_entry(
    i: usize,
    r: &RawRegistry,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<RegistryEntry, String> {
    let Some(service) = policy::REGISTRY_SERVICES
        .iter()
        .copied()
        .find(|s| *s == r.service)
    else {
        if r.service == policy::ACCESS_LOG_SERVICE {
            return Err(format!(
                "registry[{i}].service: {} is never forwarded: it reports this gateway's own access log",
                r.service
            ));
        }
        return Err(format!(
            "registry[{i}].service: {:?} is not a registry service of proto/; one of: {}",
            r.service,
            policy::REGISTRY_SERVICES.join(", ")
        ));
    };
    domain::agency::parse_agency_code(&r.owner).map_err(|e| format!("registry[{i}].owner: {e}"))?;
    let upstream = match &r.upstream {
        None => None,
        Some(u) => {
            let (host, _port) = split_host_port(&u.address).ok_or_else(|| {
                format!(
                    "registry[{i}].upstream.address: {:?} is not host:port (for example \"registry.example.gov.vn:50051\" or \"127.0.0.1:50061\")",
                    u.address
                )
            })?;
            let server_name = u.server_name.clone().unwrap_or_else(|| host.to_owned());
            if server_name.is_empty() {
                return Err(format!(
                    "registry[{i}].upstream.server_name: must not be empty"
                ));
            }
            let readable = |key: &str, path: &Path| {
                readable(&format!("registry[{i}].upstream.{key}"), resolve(path))
            };
            let (ca, cert, key) = (
                readable("ca", &u.ca)?,
                readable("cert", &u.cert)?,
                readable("key", &u.key)?,
            );
            let timeout_ms = u.timeout_ms.unwrap_or(DEFAULT_UPSTREAM_TIMEOUT_MS);
            if !(1..=600_000).contains(&timeout_ms) {
                return Err(format!(
                    "registry[{i}].upstream.timeout_ms: must be 1 to 600000, got {timeout_ms}"
                ));
            }
            let max_in_flight = u.max_in_flight.unwrap_or(DEFAULT_UPSTREAM_MAX_IN_FLIGHT);
            if !(1..=100_000).contains(&max_in_flight) {
                return Err(format!(
                    "registry[{i}].upstream.max_in_flight: must be 1 to 100000, got {max_in_flight}"
                ));
            }
            Some(UpstreamSettings {
                address: u.address.clone(),
                server_name,
                ca,
                cert,
                key,
                timeout: std::time::Duration::from_millis(timeout_ms),
                max_in_flight,
            })
        }
    };
    Ok(RegistryEntry {
        service,
        owner: r.owner.clone(),
        upstream,
    })
}

/// `path` when it can be opened for reading; else an error naming `key`.
fn readable(key: &str, path: PathBuf) -> Result<PathBuf, String> {
    match std::fs::File::open(&path) {
        Ok(_) => Ok(path),
        Err(e) => Err(format!("{key}: cannot read {}: {e}", path.display())),
    }
}

/// Validates one `[audit] witnesses` entry (index `i`); errors name the key.
fn witness_settings(
    i: usize,
    w: &RawWitness,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<WitnessSettings, String> {
    let address = w.address.strip_prefix("https://").unwrap_or(&w.address);
    let (host, _port) = split_host_port(address).ok_or_else(|| {
        format!(
            "audit.witnesses[{i}].address: {:?} is not host:port (for example \"witness.example.gov.vn:50051\" or \"127.0.0.1:50061\")",
            w.address
        )
    })?;
    let readable =
        |key: &str, path: &Path| readable(&format!("audit.witnesses[{i}].{key}"), resolve(path));
    Ok(WitnessSettings {
        address: address.to_owned(),
        server_name: host.to_owned(),
        ca: readable("ca", &w.ca)?,
        cert: readable("cert", &w.cert)?,
        key: readable("key", &w.key)?,
    })
}

/// `host:port` or `[v6]:port` into host (without brackets) and port.
/// `[admin] listen`: an address with a port, other than the gRPC port.
/// Errors name the line of the value.
fn admin_settings(raw: &RawAdmin, grpc: SocketAddr, text: &str) -> Result<AdminSettings, String> {
    let line = text[..raw.listen.span().start.min(text.len())]
        .matches('\n')
        .count()
        + 1;
    let value = raw.listen.get_ref();
    let listen: SocketAddr = value.parse().map_err(|e| {
        format!(
            "line {line}: admin.listen: {value:?} is not an address with a port, like \"127.0.0.1:9464\" ({e})"
        )
    })?;
    let overlaps =
        listen.ip() == grpc.ip() || listen.ip().is_unspecified() || grpc.ip().is_unspecified();
    if listen.port() != 0 && listen.port() == grpc.port() && overlaps {
        return Err(format!(
            "line {line}: admin.listen: {listen} is the gRPC port (listen = {grpc}); the admin listener is plain HTTP and needs a port of its own, like 9464"
        ));
    }
    Ok(AdminSettings { listen })
}

fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return None;
    }
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
listen = "127.0.0.1:0"
trust_domain = "interop.example.vn"
data_dir = "data"
[tls]
cert = "c.pem"
key = "k.pem"
client_ca = "ca.pem"
"#;

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!("{BASE}{extra}"), Path::new("/etc/gw/gateway.toml"))
    }

    /// A value of the wrong type, or a key given twice, is reported with
    /// its line and its dotted key.
    #[test]
    fn type_errors_and_duplicates_name_the_key() {
        let base_lines = BASE.matches('\n').count();
        for (text, expected) in [
            (
                "[audit]\nreceipts = \"yes\"\n",
                format!("line {}: audit.receipts: invalid type", base_lines + 2),
            ),
            (
                "[limits]\ndrain_timeout_ms = 5\ndrain_timeout_ms = 6\n",
                format!("line {}: limits.drain_timeout_ms: duplicate key", base_lines + 3),
            ),
            (
                "[[registry]]\nservice = \"interop.business.v1.BusinessRegistryService\"\nowner = \"000.00.12.H13\"\nupstream = { address = \"a:1\", ca = \"c\", cert = \"c\", key = \"k\", timeout_ms = \"x\" }\n",
                format!("line {}: registry.upstream.timeout_ms: invalid type", base_lines + 4),
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.message.starts_with(&expected), "{e} / {expected}");
        }
    }

    #[test]
    fn audit_witnesses_are_checked_and_name_their_keys() {
        assert!(parse("").unwrap().audit.witnesses.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.pem");
        std::fs::write(&file, "x").unwrap();
        let f = file.display();
        let witness = |address: &str, more: &str| {
            format!(
                "[audit]\nwitnesses = [\n  {{ address = \"{address}\", ca = \"{f}\", cert = \"{f}\", key = \"{f}\"{more} }},\n]\n"
            )
        };
        for address in ["w.example.vn:50051", "https://w.example.vn:50051"] {
            let c = parse(&witness(address, "")).unwrap();
            let w = &c.audit.witnesses[0];
            assert_eq!(w.address, "w.example.vn:50051");
            assert_eq!(w.server_name, "w.example.vn");
            assert_eq!(w.ca, file);
        }
        let base_lines = BASE.matches('\n').count();
        for (text, expected) in [
            (
                witness("w.example.vn:50051", ", timeout_ms = 5"),
                format!("line {}: unknown field `timeout_ms`", base_lines + 3),
            ),
            (
                witness("w.example.vn", ""),
                "audit.witnesses[0].address: \"w.example.vn\" is not host:port".into(),
            ),
            (
                witness("w.example.vn:50051", "")
                    .replace(&format!("key = \"{f}\""), "key = \"/nonexistent/k.pem\""),
                "audit.witnesses[0].key: cannot read /nonexistent/k.pem".into(),
            ),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.message.contains(&expected), "{text}: {}", e.message);
        }
    }

    #[test]
    fn limits_default_when_the_table_is_absent() {
        let c = parse("").unwrap();
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.limits.verify_failures_per_subject.get(), 5);
        assert_eq!(c.limits.verify_window.as_secs(), 24 * 3600);
        assert_eq!(c.limits.verify_failures_per_agency_hour.get(), 100);
    }

    #[test]
    fn limits_are_read_from_the_table() {
        let c = parse(
            "[limits]\nverify_failures_per_subject = 3\nverify_window_hours = 48\nverify_failures_per_agency_hour = 20\n",
        )
        .unwrap();
        assert_eq!(c.limits.verify_failures_per_subject.get(), 3);
        assert_eq!(c.limits.verify_window.as_secs(), 48 * 3600);
        assert_eq!(c.limits.verify_failures_per_agency_hour.get(), 20);
    }

    #[test]
    fn bad_limits_name_their_key() {
        for (text, key) in [
            (
                "verify_failures_per_subject = 0",
                "limits.verify_failures_per_subject",
            ),
            ("verify_window_hours = 0", "limits.verify_window_hours"),
            ("verify_window_hours = 721", "limits.verify_window_hours"),
            (
                "verify_failures_per_agency_hour = 0",
                "limits.verify_failures_per_agency_hour",
            ),
            ("verify_failures_per_subject = -1", "line 10"),
            ("verify_failures = 5", "unknown field `verify_failures`"),
        ] {
            let e = parse(&format!("[limits]\n{text}\n")).unwrap_err();
            assert!(e.message.contains(key), "{text}: {}", e.message);
        }
    }

    #[test]
    fn connection_limits_default_and_can_be_set() {
        let c = parse("").unwrap();
        assert_eq!(c.connections, ConnectionLimits::default());
        assert!(c.tls.require_client_auth_eku);
        let c = parse("require_client_auth_eku = false\n\n[limits]\nmax_connections = 10\nidle_timeout_ms = 1500\n").unwrap();
        assert!(!c.tls.require_client_auth_eku);
        assert_eq!(c.connections.max_connections, 10);
        assert_eq!(c.connections.idle_timeout, Duration::from_millis(1500));
        assert_eq!(c.connections.preface_timeout, Duration::from_secs(5));
    }

    #[test]
    fn bad_connection_limits_name_the_key() {
        let e = parse("\n[limits]\nmax_connections = 0\n").unwrap_err();
        assert!(
            e.message.contains("limits.max_connections: must be 1 to"),
            "{e}"
        );
        let e = parse("\n[limits]\nfd_reserve = 2\n").unwrap_err();
        assert!(e.message.contains("limits.fd_reserve"), "{e}");
        let e = parse("\n[limits]\nmax_conections = 5\n").unwrap_err();
        assert!(
            e.message.starts_with("line 11:") && e.message.contains("max_conections"),
            "{e}"
        );
    }

    #[test]
    fn call_limits_default_and_can_be_set() {
        let c = parse("").unwrap();
        assert_eq!(c.limits.max_request_bytes, 64 * 1024);
        assert_eq!(c.limits.max_call, Duration::from_secs(30));
        assert_eq!(c.limits.max_in_flight, Limits::default_max_in_flight());
        let c =
            parse("[limits]\nmax_in_flight = 10\nmax_request_bytes = 2048\nmax_call_ms = 250\n")
                .unwrap();
        assert_eq!(c.limits.max_in_flight, 10);
        assert_eq!(c.limits.max_request_bytes, 2048);
        assert_eq!(c.limits.max_call, Duration::from_millis(250));
        for (text, key) in [
            ("max_in_flight = 0", "limits.max_in_flight: must be 1 to"),
            (
                "max_request_bytes = 10",
                "limits.max_request_bytes: must be 64 to",
            ),
            ("max_request_bytes = 99999999", "limits.max_request_bytes"),
            ("max_call_ms = 0", "limits.max_call_ms"),
        ] {
            let e = parse(&format!("[limits]\n{text}\n")).unwrap_err();
            assert!(e.message.contains(key), "{text}: {}", e.message);
        }
    }

    const AGENCY: &str = "[[agency]]\ncode = \"000.00.20.H13\"\nname = \"A\"\n";

    #[test]
    fn agency_limits_are_read_with_their_defaults() {
        let c = parse(AGENCY).unwrap();
        assert_eq!(c.agencies["000.00.20.H13"].limits, AgencyLimits::default());
        let c = parse(&format!(
            "{AGENCY}rate_per_second = 200\nmax_in_flight = 64\n"
        ))
        .unwrap();
        let l = &c.agencies["000.00.20.H13"].limits;
        assert_eq!(
            l.rate,
            Some(Rate {
                per_second: 200.0,
                burst: 200
            })
        );
        assert_eq!(l.max_in_flight, Some(64));
        let c = parse(&format!("{AGENCY}rate_per_second = 0.5\nburst = 400\n")).unwrap();
        let l = &c.agencies["000.00.20.H13"].limits;
        assert_eq!(
            l.rate,
            Some(Rate {
                per_second: 0.5,
                burst: 400
            })
        );
    }

    #[test]
    fn the_admin_listener_is_off_unless_configured() {
        assert_eq!(parse("").unwrap().admin, None);
        let c = parse("\n[admin]\nlisten = \"127.0.0.1:9464\"\n").unwrap();
        assert_eq!(
            c.admin.map(|a| a.listen.to_string()).as_deref(),
            Some("127.0.0.1:9464")
        );
    }

    #[test]
    fn bad_agency_limits_name_their_key() {
        for (text, key) in [
            (
                "rate_per_second = 0",
                "agency[0].rate_per_second: must be above 0",
            ),
            ("rate_per_second = -3", "agency[0].rate_per_second"),
            ("rate_per_second = nan", "agency[0].rate_per_second"),
            ("rate_per_second = 1e-300", "agency[0].rate_per_second"),
            ("burst = 10", "agency[0].burst: set rate_per_second too"),
            (
                "rate_per_second = 5\nburst = 0",
                "agency[0].burst: must be 1 to",
            ),
            ("max_in_flight = 0", "agency[0].max_in_flight: must be 1 to"),
            ("rate = 5", "line 12: unknown field `rate`"),
        ] {
            let e = parse(&format!("{AGENCY}{text}\n")).unwrap_err();
            assert!(e.message.contains(key), "{text}: {}", e.message);
        }
    }

    #[test]
    fn audit_database_is_off_by_default_and_names_its_keys() {
        let c = parse("").unwrap();
        assert!(c.audit.database.is_none());
        assert!(check_instance(&c.audit.instance).is_ok());
        let c = parse(
            "[audit]\ndatabase_url = \"postgresql://gw:secret@db.example.vn:5433/audit\"\n\
             instance = \"gw-1\"\ndatabase_pool_size = 4\n",
        )
        .unwrap();
        let db = c.audit.database.as_ref().unwrap();
        assert_eq!(db.pool_size, 4);
        assert_eq!(c.audit.instance, "gw-1");
        // The password stays out of debug output.
        assert!(!format!("{c:?}").contains("secret"));
        for (text, key) in [
            (
                "database_url = \"mysql://x\"",
                "audit.database_url: expected",
            ),
            (
                "database_url = \"postgresql://h/db?sslmode=nope\"",
                "audit.database_url",
            ),
            ("instance = \"a:b\"", "audit.instance"),
            ("instance = \"\"", "audit.instance"),
            ("database_pool_size = 4", "only with audit.database_url"),
            (
                "database_url = \"postgresql://h/db\"\ndatabase_pool_size = 0",
                "audit.database_pool_size",
            ),
            (
                "database_url = \"postgresql://h/db\"\ndir = \"a\"",
                "audit.dir and audit.database_url",
            ),
            (
                "database = \"postgresql://h/db\"",
                "unknown field `database`",
            ),
        ] {
            let e = parse(&format!("[audit]\n{text}\n")).unwrap_err();
            assert!(e.message.contains(key), "{text}: {}", e.message);
        }
    }

    #[test]
    fn bad_admin_settings_name_the_line_and_key() {
        let e = parse("\n[admin]\nlisten = \"localhost\"\n").unwrap_err();
        assert!(
            e.message
                .starts_with("line 11: admin.listen: \"localhost\" is not an address"),
            "{e}"
        );
        // The gRPC port (the base config listens on 127.0.0.1:0, so use a
        // config of its own).
        let e = parse("\n[admin]\nlisten = \"0.0.0.0:0\"\n").map(|_| ());
        assert!(e.is_ok(), "port 0 is always a port of its own");
        let e = parse("\n[admin]\nlisten = \"127.0.0.1:9464\"\nport = 1\n").unwrap_err();
        assert!(
            e.message.starts_with("line 12:") && e.message.contains("port"),
            "{e}"
        );
        let e = parse("\n[admin]\n").unwrap_err();
        assert!(e.message.contains("listen"), "{e}");
    }

    #[test]
    fn the_admin_listener_cannot_share_the_grpc_port() {
        let raw = RawAdmin {
            listen: toml::Spanned::new(0..1, "0.0.0.0:50051".to_owned()),
        };
        let grpc: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        let e = admin_settings(&raw, grpc, "x").unwrap_err();
        assert!(e.contains("is the gRPC port"), "{e}");
        let other: SocketAddr = "127.0.0.1:50052".parse().unwrap();
        assert!(admin_settings(&raw, other, "x").is_ok());
    }

    #[test]
    fn segments_and_retention_default_and_can_be_set() {
        let c = parse("").unwrap();
        assert_eq!(c.audit.files.segment_bytes, 64 << 20);
        assert_eq!(
            (c.audit.files.segment_max_age, c.audit.files.retain),
            (None, None)
        );
        assert!(c.audit.files.archive_dir.is_none());
        let c = parse(
            "[audit]\nsegment_bytes = 1048576\nsegment_max_age_hours = 24\nretain_days = 365\narchive_dir = \"/srv/archive\"\n",
        )
        .unwrap();
        assert_eq!(c.audit.files.segment_bytes, 1 << 20);
        assert_eq!(
            c.audit.files.segment_max_age,
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(
            c.audit.files.retain,
            Some(Duration::from_secs(365 * 86_400))
        );
        assert_eq!(
            c.audit.files.archive_dir.as_deref(),
            Some(Path::new("/srv/archive"))
        );
    }

    #[test]
    fn bad_segment_and_retention_keys_say_what_to_change() {
        for (text, expected) in [
            (
                "segment_bytes = 100",
                "audit.segment_bytes: must be 4096 to",
            ),
            (
                "segment_max_age_hours = 0",
                "audit.segment_max_age_hours: must be 1 to",
            ),
            ("retain_days = 0", "audit.retain_days: must be 1 to"),
            (
                "archive_dir = \"/srv/archive\"",
                "audit.archive_dir: set audit.retain_days too",
            ),
            (
                "retain_days = 30\narchive_dir = \"data/audit/old\"",
                "is inside the audit folder",
            ),
            ("retention_days = 30", "unknown field `retention_days`"),
        ] {
            let e = parse(&format!("[audit]\n{text}\n")).unwrap_err();
            assert!(e.message.contains(expected), "{text}: {}", e.message);
        }
    }
}
