//! What the gateway counts, and nothing else: the Prometheus metrics
//! ([`Metrics`], one registry per running gateway, encoded by
//! `prometheus-client` in the Prometheus text format) and the tower layer that
//! counts every call ([`CallMetricsLayer`]). The admin listener that serves
//! them is [`crate::admin`].
//!
//! Label values never come from a request as sent: an agency label is the
//! configured agency the connection was admitted as ([`ConnectionAgency`]),
//! else [`UNKNOWN`]; a method label is a full method name this gateway serves
//! (from the descriptor sets compiled in), else [`UNKNOWN`]; a code is a gRPC
//! code name; a reason is one of the gateway's fixed `ErrorInfo` reasons or
//! handshake reasons. A caller cannot create series.

use std::{
    collections::HashMap,
    future::Future,
    path::Path,
    pin::Pin,
    sync::{atomic::AtomicU64, Arc, Mutex, OnceLock},
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

use crate::{config::Config, error::reason};

/// The label value of a caller or method that is not configured or not
/// served: requests cannot name series.
pub const UNKNOWN: &str = "unknown";

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The configured agency a connection was admitted as, with its in-flight
/// gauge resolved once for the connection; put in each request's extensions
/// by [`crate::connections::CountStreams`].
#[derive(Clone, Debug)]
pub struct ConnectionAgency {
    pub code: Arc<str>,
    in_flight: Option<Gauge>,
}

impl ConnectionAgency {
    pub fn new(code: &str, metrics: Option<&Metrics>) -> ConnectionAgency {
        let code: Arc<str> = Arc::from(code);
        let in_flight = metrics.map(|m| m.in_flight_of(&code));
        ConnectionAgency { code, in_flight }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    agency: Arc<str>,
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgencyLabels {
    agency: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    certificate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ForwardedLabels {
    owner: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OwnerLabels {
    owner: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WitnessLabels {
    witness: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WitnessResultLabels {
    witness: String,
    result: &'static str,
}

/// How sending a checkpoint to a witness ended: the `result` label of
/// `interop_gateway_witness_countersign_total`.
pub mod witness_result {
    /// Countersigned, verified and kept.
    pub const OK: &str = "ok";
    /// The witness countersigned a later checkpoint than this log has, or
    /// this log no longer has the record the witness countersigned.
    pub const LOG_ROLLED_BACK: &str = "log_rolled_back";
    /// The log disagrees with the chain the witness countersigned.
    pub const LOG_FORKED: &str = "log_forked";
    /// The record the witness countersigned last was deleted under
    /// retention (no archive): the log cannot show it that it goes on.
    pub const WITNESSED_RECORD_RETIRED: &str = "witnessed_record_retired";
    /// Not reached: connection refused, handshake failed, timed out.
    pub const UNAVAILABLE: &str = "unavailable";
    /// Any other refusal by the witness.
    pub const REFUSED: &str = "refused";
    /// The witness answered with a countersignature that does not verify.
    pub const BAD_COUNTERSIGNATURE: &str = "bad_countersignature";
    /// This gateway could not read its chain or keep the receipt.
    pub const ERROR: &str = "error";
}

/// Why the gateway closed a connection on the gRPC port for a limit of its
/// own: the `reason` label of `interop_gateway_connections_closed_total`.
pub mod connection_closed_reason {
    /// `limits.max_connections` (lowered to the open-file limit) reached.
    pub const CONNECTION_LIMIT: &str = "CONNECTION_LIMIT";
    /// `limits.max_handshakes_per_address` handshakes already in progress
    /// from the same address.
    pub const HANDSHAKES_PER_ADDRESS: &str = "HANDSHAKES_PER_ADDRESS";
    /// The agency already holds `limits.max_connections_per_agency`.
    pub const AGENCY_CONNECTIONS: &str = "AGENCY_CONNECTIONS";
    /// No HTTP/2 preface within `limits.preface_timeout_ms`.
    pub const NO_PREFACE: &str = "NO_PREFACE";
    /// No call in progress for `limits.idle_timeout_ms`.
    pub const IDLE: &str = "IDLE";
}

/// Why a TLS handshake on the gRPC port failed: the `reason` label of
/// `interop_gateway_handshake_failures_total`.
pub mod handshake_reason {
    pub const NO_CLIENT_CERTIFICATE: &str = "NO_CLIENT_CERTIFICATE";
    pub const UNKNOWN_ISSUER: &str = "UNKNOWN_ISSUER";
    pub const CERTIFICATE_EXPIRED: &str = "CERTIFICATE_EXPIRED";
    pub const CERTIFICATE_NOT_YET_VALID: &str = "CERTIFICATE_NOT_YET_VALID";
    pub const CERTIFICATE_REVOKED: &str = "CERTIFICATE_REVOKED";
    /// The certificate's extended key usage lacks `clientAuth`.
    pub const WRONG_KEY_USAGE: &str = "WRONG_KEY_USAGE";
    /// Any other certificate the verifier refused (bad signature, bad encoding).
    pub const BAD_CERTIFICATE: &str = "BAD_CERTIFICATE";
    /// No protocol version, cipher suite or ALPN protocol in common.
    pub const INCOMPATIBLE: &str = "INCOMPATIBLE";
    /// The client ended the handshake with an alert (it refused this
    /// gateway's certificate, for instance).
    pub const ALERT_RECEIVED: &str = "ALERT_RECEIVED";
    /// The connection closed before the handshake finished.
    pub const CONNECTION_CLOSED: &str = "CONNECTION_CLOSED";
    /// Not finished within `limits.handshake_timeout_ms`.
    pub const TIMEOUT: &str = "TIMEOUT";
    /// Anything else (malformed messages and the like).
    pub const OTHER: &str = "OTHER";
}

/// The `reason` label of a failed handshake, from the error the TLS acceptor
/// returned.
pub fn handshake_failure_reason(e: &std::io::Error) -> &'static str {
    use handshake_reason::*;
    use rustls::{CertificateError as C, Error as E};
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<E>()) else {
        return CONNECTION_CLOSED;
    };
    match tls {
        E::NoCertificatesPresented => NO_CLIENT_CERTIFICATE,
        E::InvalidCertificate(c) => match c {
            C::UnknownIssuer => UNKNOWN_ISSUER,
            C::Expired | C::ExpiredContext { .. } => CERTIFICATE_EXPIRED,
            C::NotValidYet | C::NotValidYetContext { .. } => CERTIFICATE_NOT_YET_VALID,
            C::Revoked => CERTIFICATE_REVOKED,
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => WRONG_KEY_USAGE,
            _ => BAD_CERTIFICATE,
        },
        E::PeerIncompatible(_) | E::NoApplicationProtocol => INCOMPATIBLE,
        E::AlertReceived(_) => ALERT_RECEIVED,
        _ => OTHER,
    }
}

/// The `ErrorInfo` reasons an UNAUTHENTICATED answer or refused connection
/// is counted under; any other is [`UNKNOWN`].
const UNAUTHENTICATED_REASONS: &[&str] = &[
    reason::NO_AGENCY_IDENTITY,
    reason::WRONG_TRUST_DOMAIN,
    reason::UNKNOWN_AGENCY,
    reason::CERTIFICATE_REVOKED,
    reason::WRONG_ISSUER,
    reason::CERTIFICATE_INVALID,
];

fn known_reason(text: &str) -> &'static str {
    UNAUTHENTICATED_REASONS
        .iter()
        .find(|r| **r == text)
        .copied()
        .unwrap_or(UNKNOWN)
}

/// Every full method name this gateway serves (`package.Service/Method`):
/// the registry, catalogue and access log services, health and reflection.
/// Each with its index, for per-method handles.
fn served_methods() -> &'static HashMap<String, usize> {
    static METHODS: OnceLock<HashMap<String, usize>> = OnceLock::new();
    METHODS.get_or_init(|| {
        use prost::Message;
        let sets = [
            crate::proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut names = HashMap::new();
        for bytes in sets {
            // Compiled in: a set that does not decode names no methods (and
            // the method label reads `unknown`) rather than stopping calls.
            let set = prost_types::FileDescriptorSet::decode(bytes).unwrap_or_default();
            for file in &set.file {
                for service in &file.service {
                    for method in &service.method {
                        let next = names.len();
                        names
                            .entry(format!(
                                "{}.{}/{}",
                                file.package(),
                                service.name(),
                                method.name()
                            ))
                            .or_insert(next);
                    }
                }
            }
        }
        names
    })
}

/// The method label of a request path (`/package.Service/Method`).
pub fn method_label(path: &str) -> &'static str {
    method_of(path).0
}

/// [`method_label`], with the method's index among the served methods.
fn method_of(path: &str) -> (&'static str, Option<usize>) {
    path.strip_prefix('/')
        .and_then(|name| served_methods().get_key_value(name))
        .map_or((UNKNOWN, None), |(name, i)| (name.as_str(), Some(*i)))
}

/// A certificate whose expiry is exported: its label and its `notAfter`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchedCertificate {
    pub label: String,
    pub not_after_unix: i64,
}

/// The certificates of `config` whose expiry matters to this gateway: its
/// own (`tls.cert`), each CA of `tls.client_ca` (`tls.client_ca[i]`), and
/// per forwarded registry owner its client certificate and CAs
/// (`upstream.<owner>.cert`, `upstream.<owner>.ca[i]`). Files that cannot be
/// read are left out (the server would not have started with them).
pub fn watched_certificates(config: &Config) -> Vec<WatchedCertificate> {
    let mut out = Vec::new();
    // A leaf: the first certificate of the file, under `label`. A bundle:
    // each certificate, under `label[i]`.
    let mut add = |label: String, path: &Path, bundle: bool| {
        let Ok(certs) = crate::tls::load_certs("certificate", path) else {
            return;
        };
        let take = if bundle { certs.len() } else { 1 };
        for (i, der) in certs.iter().take(take).enumerate() {
            if let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) {
                out.push(WatchedCertificate {
                    label: if bundle {
                        format!("{label}[{i}]")
                    } else {
                        label.clone()
                    },
                    not_after_unix: cert.validity().not_after.timestamp(),
                });
            }
        }
    };
    add("tls.cert".into(), &config.tls.cert, false);
    add("tls.client_ca".into(), &config.tls.client_ca, true);
    for entry in config.registries.values() {
        if let Some(up) = &entry.upstream {
            add(format!("upstream.{}.cert", entry.owner), &up.cert, false);
            add(format!("upstream.{}.ca", entry.owner), &up.ca, true);
        }
    }
    out
}

/// The gateway's metrics. Handles are cheap to clone internally; share one
/// `Arc<Metrics>` per running gateway.
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    call_duration: Family<MethodLabels, Histogram, fn() -> Histogram>,
    /// Each served method's duration histogram (the last: `unknown`),
    /// resolved at its first call so later calls need no lookup.
    durations: Vec<OnceLock<Histogram>>,
    handshake_failures: Family<ReasonLabels, Counter>,
    connections_closed: Family<ReasonLabels, Counter>,
    unauthenticated: Family<ReasonLabels, Counter>,
    audit_append: Histogram,
    audit_healthy: Gauge,
    in_flight: Family<AgencyLabels, Gauge>,
    config_reloads: Family<ResultLabels, Counter>,
    certificate_expiry: Family<CertificateLabels, Gauge<f64, AtomicU64>>,
    /// Replaced whole when the configured certificates change.
    certificates: Mutex<Vec<WatchedCertificate>>,
    forwarded_calls: Family<ForwardedLabels, Counter>,
    forwarded_failures: Family<OwnerLabels, Counter>,
    witness_countersign: Family<WitnessResultLabels, Counter>,
    witness_last_seq: Family<WitnessLabels, Gauge>,
    watches: Family<AgencyLabels, Gauge>,
    watch_events: Family<AgencyLabels, Counter>,
    watch_ended: Family<ReasonLabels, Counter>,
}

/// One open `WatchAccessRecords` stream, counted in [`Metrics`].
pub struct WatchMeter {
    open: Gauge,
    events: Counter,
    ended: Family<ReasonLabels, Counter>,
}

impl WatchMeter {
    /// One record sent.
    pub fn event(&self) {
        self.events.inc();
    }

    /// The stream ended, for `reason` (`left`: the watcher went away).
    pub fn ended(&self, reason: &'static str) {
        self.ended.get_or_create(&ReasonLabels { reason }).inc();
    }
}

impl Drop for WatchMeter {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn duration_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            calls: Family::default(),
            call_duration: Family::new_with_constructor(duration_histogram),
            durations: (0..=served_methods().len())
                .map(|_| OnceLock::new())
                .collect(),
            handshake_failures: Family::default(),
            connections_closed: Family::default(),
            unauthenticated: Family::default(),
            audit_append: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            audit_healthy: Gauge::default(),
            in_flight: Family::default(),
            config_reloads: Family::default(),
            certificate_expiry: Family::default(),
            certificates: Mutex::default(),
            forwarded_calls: Family::default(),
            forwarded_failures: Family::default(),
            witness_countersign: Family::default(),
            witness_last_seq: Family::default(),
            watches: Family::default(),
            watch_events: Family::default(),
            watch_ended: Family::default(),
        };
        // Both results exist from the start, so `increase()` sees the first.
        for result in ["ok", "error"] {
            drop(m.config_reloads.get_or_create(&ResultLabels { result }));
        }
        let mut registry = Registry::default();
        // Counters are registered without `_total`: the encoder adds it.
        registry.register(
            "interop_gateway_calls",
            "Calls answered, by calling agency, full method name and gRPC status code",
            m.calls.clone(),
        );
        registry.register(
            "interop_gateway_call_duration_seconds",
            "Time from a call's request headers to its status, by full method name",
            m.call_duration.clone(),
        );
        registry.register(
            "interop_gateway_handshake_failures",
            "TLS handshakes on the gRPC port that failed, by reason",
            m.handshake_failures.clone(),
        );
        registry.register(
            "interop_gateway_connections_closed",
            "Connections on the gRPC port the gateway closed for a limit of its own (not a client's close, not a failed handshake), by reason",
            m.connections_closed.clone(),
        );
        registry.register(
            "interop_gateway_unauthenticated",
            "Connections closed and calls answered UNAUTHENTICATED because no configured agency was identified, by ErrorInfo reason",
            m.unauthenticated.clone(),
        );
        registry.register(
            "interop_gateway_audit_append_duration_seconds",
            "Time for a call's access record to be written and fsynced",
            m.audit_append.clone(),
        );
        registry.register(
            "interop_gateway_audit_healthy",
            "1 while the access log can be written, 0 while it cannot (calls then fail closed)",
            m.audit_healthy.clone(),
        );
        registry.register(
            "interop_gateway_in_flight",
            "Calls in progress, by calling agency",
            m.in_flight.clone(),
        );
        registry.register(
            "interop_gateway_config_reloads",
            "Configuration reloads, by result (ok, error)",
            m.config_reloads.clone(),
        );
        registry.register(
            "interop_gateway_certificate_expiry_seconds",
            "Seconds until a configured certificate expires (negative once expired)",
            m.certificate_expiry.clone(),
        );
        registry.register(
            "interop_gateway_forwarded_calls",
            "Calls forwarded to a registry owner's gateway, by owner and the status they ended with",
            m.forwarded_calls.clone(),
        );
        registry.register(
            "interop_gateway_forwarded_failures",
            "Forwarded calls that got no answer from the owner (unreachable, handshake failed, timed out, or the owner known down)",
            m.forwarded_failures.clone(),
        );
        registry.register(
            "interop_gateway_witness_countersign",
            "Checkpoints sent to a witness (configured address), by result (ok, log_rolled_back, log_forked, witnessed_record_retired, unavailable, refused, bad_countersignature, error)",
            m.witness_countersign.clone(),
        );
        registry.register(
            "interop_gateway_witness_last_seq",
            "Seq of the latest checkpoint a witness (configured address) countersigned",
            m.witness_last_seq.clone(),
        );
        registry.register(
            "interop_gateway_watches",
            "WatchAccessRecords streams open now, by agency",
            m.watches.clone(),
        );
        registry.register(
            "interop_gateway_watch_events",
            "Access records sent on WatchAccessRecords streams, by agency",
            m.watch_events.clone(),
        );
        registry.register(
            "interop_gateway_watch_ended",
            "WatchAccessRecords streams ended, by reason (left, overflow, shutdown, denied, unavailable)",
            m.watch_ended.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts a `WatchAccessRecords` stream of `agency` as open until the
    /// returned meter is dropped; the meter counts its events and its end.
    pub fn watch(&self, agency: &str) -> WatchMeter {
        let labels = AgencyLabels {
            agency: Arc::from(agency),
        };
        let open = self.watches.get_or_create_owned(&labels);
        open.inc();
        WatchMeter {
            open,
            events: self.watch_events.get_or_create_owned(&labels),
            ended: self.watch_ended.clone(),
        }
    }

    /// Counts one checkpoint sent to the witness at `witness` (its configured
    /// address) by how it ended ([`witness_result`]).
    pub fn witness_countersign(&self, witness: &str, result: &'static str) {
        self.witness_countersign
            .get_or_create(&WitnessResultLabels {
                witness: witness.to_owned(),
                result,
            })
            .inc();
    }

    /// The seq of the latest checkpoint `witness` countersigned.
    pub fn witness_last_seq(&self, witness: &str, seq: u64) {
        self.witness_last_seq
            .get_or_create(&WitnessLabels {
                witness: witness.to_owned(),
            })
            .set(i64::try_from(seq).unwrap_or(i64::MAX));
    }

    /// Counts a configuration reload; `ok` false when the new config was
    /// refused and the old one kept.
    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.config_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts a connection closed for a limit (see
    /// [`connection_closed_reason`]).
    pub fn connection_closed(&self, reason: &'static str) {
        self.connections_closed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts a failed TLS handshake on the gRPC port.
    pub fn handshake_failed(&self, reason: &'static str) {
        self.handshake_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts a connection or call refused because its certificate names no
    /// configured agency, under its `ErrorInfo` reason.
    pub fn unauthenticated(&self, reason: &str) {
        let reason = known_reason(reason);
        self.unauthenticated
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Records how long one access record took to become durable.
    pub fn audit_append(&self, took: Duration) {
        self.audit_append.observe(took.as_secs_f64());
    }

    /// Counts one call forwarded to `owner` (a configured agency code):
    /// `code` is how it ended, `answered` false when no answer came from
    /// the owner at all.
    pub fn forwarded(&self, owner: &str, code: tonic::Code, answered: bool) {
        let owner = owner.to_owned();
        if !answered {
            self.forwarded_failures
                .get_or_create(&OwnerLabels {
                    owner: owner.clone(),
                })
                .inc();
        }
        self.forwarded_calls
            .get_or_create(&ForwardedLabels {
                owner,
                code: crate::error::code_name(code),
            })
            .inc();
    }

    /// Sets the certificates whose expiry is exported (replacing any before).
    pub fn watch_certificates(&self, certificates: Vec<WatchedCertificate>) {
        let mut now = self.certificates.lock().unwrap_or_else(|e| e.into_inner());
        *now = certificates;
        self.certificate_expiry.clear();
    }

    /// The metrics in the Prometheus text format (version 0.0.4), with the
    /// gauges read at scrape time set first.
    pub fn render(&self, audit_healthy: bool) -> String {
        self.audit_healthy.set(i64::from(audit_healthy));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        {
            let certs = self.certificates.lock().unwrap_or_else(|e| e.into_inner());
            for c in certs.iter() {
                self.certificate_expiry
                    .get_or_create(&CertificateLabels {
                        certificate: c.label.clone(),
                    })
                    .set((c.not_after_unix - now) as f64);
            }
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// The in-flight gauge of `agency`.
    fn in_flight_of(&self, agency: &Arc<str>) -> Gauge {
        self.in_flight.get_or_create_owned(&AgencyLabels {
            agency: Arc::clone(agency),
        })
    }

    fn finish(&self, call: &Pending, code: tonic::Code) {
        let code_name = crate::error::code_name(code);
        self.calls
            .get_or_create(&CallLabels {
                agency: Arc::clone(&call.agency),
                method: call.method,
                code: code_name,
            })
            .inc();
        let took = call.started.elapsed().as_secs_f64();
        let slot = call.method_index.unwrap_or(self.durations.len() - 1);
        let method = MethodLabels {
            method: call.method,
        };
        match self.durations.get(slot) {
            Some(h) => h
                .get_or_init(|| self.call_duration.get_or_create_owned(&method))
                .observe(took),
            None => self.call_duration.get_or_create(&method).observe(took),
        }
        call.in_flight.dec();
    }
}

/// The tower layer that counts every call on the gRPC port: calls by agency,
/// method and code, their duration, calls in flight, and UNAUTHENTICATED
/// answers by reason. It sees the status where it leaves (response headers
/// of a trailers-only answer, else the trailers); a call whose response is
/// dropped before its status is counted as `CANCELLED`.
#[derive(Clone)]
pub struct CallMetricsLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for CallMetricsLayer {
    type Service = CallMetrics<S>;
    fn layer(&self, inner: S) -> CallMetrics<S> {
        CallMetrics {
            inner,
            metrics: Arc::clone(&self.0),
        }
    }
}

/// See [`CallMetricsLayer`].
#[derive(Clone)]
pub struct CallMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// One call being counted; counted as finished when dropped.
struct Pending {
    metrics: Arc<Metrics>,
    agency: Arc<str>,
    method: &'static str,
    method_index: Option<usize>,
    in_flight: Gauge,
    started: Instant,
    code: Option<tonic::Code>,
}

impl Pending {
    /// Counts a call in flight, for the connection's agency when it has one.
    fn start(
        metrics: Arc<Metrics>,
        agency: Option<&ConnectionAgency>,
        (method, method_index): (&'static str, Option<usize>),
    ) -> Pending {
        let (agency, in_flight) = match agency {
            Some(ConnectionAgency {
                code,
                in_flight: Some(gauge),
            }) => (Arc::clone(code), gauge.clone()),
            other => {
                let code = other.map_or_else(|| Arc::from(UNKNOWN), |a| Arc::clone(&a.code));
                let gauge = metrics.in_flight_of(&code);
                (code, gauge)
            }
        };
        in_flight.inc();
        Pending {
            metrics,
            agency,
            method,
            method_index,
            in_flight,
            started: Instant::now(),
            code: None,
        }
    }

    /// Takes the status from `headers` (response headers or trailers) if
    /// they carry one.
    fn seen(&mut self, headers: &http::HeaderMap) {
        let Some(code) = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map(tonic::Code::from_i32)
        else {
            return;
        };
        if code == tonic::Code::Unauthenticated {
            use tonic_types::StatusExt;
            let reason = tonic::Status::from_header_map(headers)
                .and_then(|s| s.get_error_details().error_info().map(|i| i.reason.clone()))
                .unwrap_or_default();
            self.metrics.unauthenticated(&reason);
        }
        self.code = Some(code);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(tonic::Code::Cancelled);
        self.metrics.finish(self, code);
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for CallMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: http_body::Body<Data = tonic::codegen::Bytes> + Unpin + Send + 'static,
    R::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // tonic's body, as the services' own: with or without this layer the
    // stack has one response type (`[admin]` absent, it is not composed).
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let mut pending = Pending::start(
            Arc::clone(&self.metrics),
            req.extensions().get::<ConnectionAgency>(),
            method_of(req.uri().path()),
        );
        let call = self.inner.call(req);
        Box::pin(async move {
            match call.await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    pending.seen(&parts.headers);
                    Ok(http::Response::from_parts(
                        parts,
                        tonic::body::Body::new(MeteredBody {
                            body,
                            pending: Some(pending),
                        }),
                    ))
                }
                Err(e) => {
                    // Counted as it drops here.
                    pending.code = Some(tonic::Code::Unknown);
                    drop(pending);
                    Err(e)
                }
            }
        })
    }
}

/// A response body that finishes its call's count at the status.
pub struct MeteredBody<B> {
    body: B,
    pending: Option<Pending>,
}

impl<B: http_body::Body + Unpin> http_body::Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    if let Some(mut pending) = this.pending.take() {
                        pending.seen(trailers);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut pending) = this.pending.take() {
                    pending.code = Some(tonic::Code::Unknown);
                }
            }
            Poll::Ready(None) => {
                this.pending.take();
            }
            Poll::Pending => {}
        }
        polled
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn config_reloads_render_as_zero_at_start_and_count() {
        let m = Metrics::new();
        let text = m.render(true);
        assert_eq!(
            value(
                &text,
                r#"interop_gateway_config_reloads_total{result="ok"}"#
            ),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                r#"interop_gateway_config_reloads_total{result="error"}"#
            ),
            Some(0.0)
        );
        m.config_reload(true);
        m.config_reload(false);
        m.config_reload(true);
        let text = m.render(false);
        assert_eq!(
            value(
                &text,
                r#"interop_gateway_config_reloads_total{result="ok"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                r#"interop_gateway_config_reloads_total{result="error"}"#
            ),
            Some(1.0)
        );
        assert_eq!(value(&text, "interop_gateway_audit_healthy"), Some(0.0));
    }

    #[test]
    fn method_labels_are_only_served_methods() {
        assert_eq!(
            method_label("/interop.citizen.v1.CitizenRegistryService/GetCitizen"),
            "interop.citizen.v1.CitizenRegistryService/GetCitizen"
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        for path in [
            "/interop.citizen.v1.CitizenRegistryService/GetCitizenX",
            "interop.citizen.v1.CitizenRegistryService/GetCitizen",
            "/",
            "/a\"b",
        ] {
            assert_eq!(method_label(path), UNKNOWN, "{path}");
        }
    }

    #[test]
    fn unauthenticated_reasons_are_the_fixed_ones() {
        assert_eq!(known_reason("UNKNOWN_AGENCY"), "UNKNOWN_AGENCY");
        assert_eq!(known_reason("made-up"), UNKNOWN);
        assert_eq!(known_reason(""), UNKNOWN);
    }

    #[test]
    fn handshake_reasons_come_from_the_tls_error() {
        use std::io::{Error, ErrorKind};
        let tls = |e: rustls::Error| Error::new(ErrorKind::InvalidData, e);
        assert_eq!(
            handshake_failure_reason(&tls(rustls::Error::NoCertificatesPresented)),
            handshake_reason::NO_CLIENT_CERTIFICATE
        );
        assert_eq!(
            handshake_failure_reason(&tls(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))),
            handshake_reason::UNKNOWN_ISSUER
        );
        assert_eq!(
            handshake_failure_reason(&Error::from(ErrorKind::UnexpectedEof)),
            handshake_reason::CONNECTION_CLOSED
        );
    }
}
