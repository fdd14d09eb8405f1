//! Forwarding to registry owners. For each owner's gateway (the
//! `[[registry]]` entries whose `upstream` settings are the same but
//! `timeout_ms`), one HTTP/2 channel over mutual TLS, shared by every call
//! to any of its services, with:
//!
//! - a concurrency limit (tower's `ConcurrencyLimit`): calls past
//!   `max_in_flight` wait for a slot, within the call's budget;
//! - one overall deadline per call (`timeout_ms`), retries included;
//! - retries only when no answer arrived at all (connection refused, failed
//!   handshake, connection reset), drawn from a retry budget (tower's
//!   `TpsBudget`: at most 10% extra load, plus a small floor);
//! - fail-fast while the owner is known to be down, and a prober that
//!   follows the owner's own `grpc.health.v1` status without client traffic,
//!   so the front's health for the service goes NOT_SERVING while the owner
//!   is down and SERVING again within about a second of its return.
//!
//! What to ask the owner (the narrowed read mask) and what to check in its
//! answer belong to the services (`service/`); this module moves one unary
//! call and says how it ended: the owner's answer; the owner's own refusal
//! of the request (NOT_FOUND, INVALID_ARGUMENT, PERMISSION_DENIED,
//! FAILED_PRECONDITION, OUT_OF_RANGE, RESOURCE_EXHAUSTED: passed on with
//! its details); `UPSTREAM_UNAVAILABLE` (no answer in time, or the owner
//! says it is unavailable); `UPSTREAM_REFUSED` (the owner does not accept
//! this gateway's call for the consumer); or INTERNAL for any other status
//! and for an answer that does not decode, with nothing of the owner's text
//! passed on (it may name the owner's internals; the operator's log has it).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::{sync::watch, task::JoinHandle, time::Instant};
use tonic::{
    codegen::http::uri::PathAndQuery,
    metadata::{MetadataMap, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};
use tower::{
    limit::ConcurrencyLimit,
    retry::budget::{Budget, TpsBudget},
};

use crate::{
    config::{Config, RegistryEntry, UpstreamSettings},
    error::RequestError,
};

/// Set by a relay (a front gateway): the consumer agency the call is for.
pub const ON_BEHALF_OF_HEADER: &str = "x-interop-on-behalf-of";
/// Set by an owner's gateway on its answer to a relay: the field paths it
/// disclosed (comma-separated), which the relay records as its own.
pub const DISCLOSED_FIELDS_HEADER: &str = "x-interop-disclosed-fields";

/// Health probes while the owner answers them...
const PROBE_EVERY_UP: Duration = Duration::from_secs(2);
/// ...and while it does not (how soon its return is noticed).
const PROBE_EVERY_DOWN: Duration = Duration::from_millis(500);
/// Longest wait for one probe's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Attempts of one call at most (the first plus retries), budget permitting.
const MAX_ATTEMPTS: u32 = 3;
/// How much later than this gateway's own deadline the owner's expires.
const DEADLINE_SLACK: Duration = Duration::from_millis(200);
/// Pause before a retry, so a refused connection is not hammered.
const RETRY_BACKOFF: Duration = Duration::from_millis(20);

/// An upstream whose files cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("registry {service:?} upstream.{key} ({path}): {message}")]
pub struct UpstreamError {
    pub service: String,
    pub key: &'static str,
    pub path: String,
    pub message: String,
}

/// A file of a client identity toward another gateway that cannot be used.
#[derive(Debug)]
pub(crate) struct EndpointError {
    /// The config key naming the file (`ca`, `cert`, `key`, `address`).
    pub key: &'static str,
    pub path: std::path::PathBuf,
    pub message: String,
}

/// An HTTP/2 endpoint toward another gateway at `address` (`host:port`) over
/// mutual TLS: its server certificate must chain to `ca` and name
/// `server_name`; this gateway presents `cert` and `key`. The files are
/// parsed here, so a wrong one fails the start rather than the first call.
/// Timeouts and keepalive are the caller's to set.
pub(crate) fn mtls_endpoint(
    address: &str,
    server_name: &str,
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Endpoint, EndpointError> {
    let fail = |k: &'static str, path: &std::path::Path, message: String| EndpointError {
        key: k,
        path: path.to_owned(),
        message,
    };
    crate::tls::load_certs("ca", ca).map_err(|e| fail("ca", ca, e.message))?;
    crate::tls::load_certs("cert", cert).map_err(|e| fail("cert", cert, e.message))?;
    crate::tls::load_key("key", key).map_err(|e| fail("key", key, e.message))?;
    let read =
        |k, path: &std::path::Path| std::fs::read(path).map_err(|e| fail(k, path, e.to_string()));
    let (ca_pem, cert_pem, key_pem) = (read("ca", ca)?, read("cert", cert)?, read("key", key)?);
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(cert_pem, key_pem))
        .domain_name(server_name.to_owned());
    Endpoint::from_shared(format!("https://{address}"))
        .map_err(|e| fail("address", std::path::Path::new(address), e.to_string()))?
        .tls_config(tls)
        .map_err(|e| {
            fail(
                "key",
                key,
                format!(
                    "cannot be used with the certificate {} (does the key match the certificate?): {}",
                    cert.display(),
                    crate::client::error_chain(&e)
                ),
            )
        })
}

/// Every forwarded service's owner, by service name.
#[derive(Debug, Default)]
pub struct Upstreams {
    by_service: BTreeMap<&'static str, Arc<Upstream>>,
}

/// Checks every `[[registry]]` upstream's files (`ca`, `cert`, `key`, and
/// that the key is the certificate's) as [`Upstreams::from_config`] does at
/// start, without a runtime and without connecting.
pub fn check(config: &Config) -> Result<(), UpstreamError> {
    for entry in config.registries.values() {
        if let Some(s) = &entry.upstream {
            mtls_endpoint(&s.address, &s.server_name, &s.ca, &s.cert, &s.key).map_err(|e| {
                UpstreamError {
                    service: entry.service.to_owned(),
                    key: e.key,
                    path: e.path.display().to_string(),
                    message: e.message,
                }
            })?;
        }
    }
    Ok(())
}

impl Upstreams {
    /// Builds a (lazily connecting) channel for every `[[registry]]` entry
    /// with an `upstream`. Fails on certificate or key files it cannot use.
    ///
    /// Entries with the same owner gateway (the same `upstream` settings
    /// but `timeout_ms`) share one channel and its `max_in_flight`: one
    /// HTTP/2 connection per owner, however many of its services are
    /// forwarded.
    pub fn from_config(config: &Config) -> Result<Upstreams, UpstreamError> {
        let mut by_service = BTreeMap::new();
        let mut channels: Vec<(&UpstreamSettings, Shared)> = Vec::new();
        for entry in config.registries.values() {
            if let Some(settings) = &entry.upstream {
                let same_owner = |s: &&UpstreamSettings| {
                    (
                        &s.address,
                        &s.server_name,
                        &s.ca,
                        &s.cert,
                        &s.key,
                        s.max_in_flight,
                    ) == (
                        &settings.address,
                        &settings.server_name,
                        &settings.ca,
                        &settings.cert,
                        &settings.key,
                        settings.max_in_flight,
                    )
                };
                let shared = match channels.iter().find(|(s, _)| same_owner(s)) {
                    Some((_, shared)) => shared.clone(),
                    None => {
                        let shared = Shared::new(entry, settings)?;
                        channels.push((settings, shared.clone()));
                        shared
                    }
                };
                by_service.insert(
                    entry.service,
                    Arc::new(Upstream::new(entry, settings, shared)),
                );
            }
        }
        Ok(Upstreams { by_service })
    }

    /// The owner that answers `service`, when it is forwarded.
    pub fn get(&self, service: &str) -> Option<&Arc<Upstream>> {
        self.by_service.get(service)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.by_service.values()
    }

    /// Starts one health prober per owner; abort the handles to stop them.
    pub fn spawn_probers(&self) -> Vec<JoinHandle<()>> {
        self.iter()
            .map(|u| tokio::spawn(Arc::clone(u).probe_loop()))
            .collect()
    }
}

/// One registry owner's gateway.
pub struct Upstream {
    /// Full name of the forwarded service.
    pub service: &'static str,
    /// The owner's agency code (provenance).
    pub owner: String,
    address: String,
    timeout: Duration,
    channel: Channel,
    grpc: tonic::client::Grpc<ConcurrencyLimit<Channel>>,
    budget: TpsBudget,
    /// Whether the owner is believed reachable and serving.
    up: watch::Sender<bool>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("service", &self.service)
            .field("owner", &self.owner)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// One owner gateway's channel and the limit on calls in flight over it.
#[derive(Clone)]
struct Shared {
    channel: Channel,
    limited: ConcurrencyLimit<Channel>,
}

impl Shared {
    fn new(entry: &RegistryEntry, s: &UpstreamSettings) -> Result<Shared, UpstreamError> {
        let fail = |key: &'static str, path: &std::path::Path, message: String| UpstreamError {
            service: entry.service.to_owned(),
            key,
            path: path.display().to_string(),
            message,
        };
        let endpoint = mtls_endpoint(&s.address, &s.server_name, &s.ca, &s.cert, &s.key)
            .map_err(|e| fail(e.key, &e.path, e.message))?
            .connect_timeout(s.timeout.min(Duration::from_secs(5)))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        // Clones share the semaphore: the limit is the owner's.
        let limited = tower::ServiceBuilder::new()
            .concurrency_limit(s.max_in_flight)
            .service(channel.clone());
        Ok(Shared { channel, limited })
    }
}

impl Upstream {
    fn new(entry: &RegistryEntry, s: &UpstreamSettings, shared: Shared) -> Upstream {
        Upstream {
            service: entry.service,
            owner: entry.owner.clone(),
            address: s.address.clone(),
            timeout: s.timeout,
            channel: shared.channel,
            grpc: tonic::client::Grpc::new(shared.limited),
            // Retries within the last 10 s may add 10% to the calls made,
            // plus one a second so a quiet gateway can still retry.
            budget: TpsBudget::new(Duration::from_secs(10), 1, 0.1),
            up: watch::Sender::new(true),
        }
    }

    /// The owner's gateway, `host:port` as configured.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Follows whether the owner is believed up.
    pub fn health(&self) -> watch::Receiver<bool> {
        self.up.subscribe()
    }

    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// Records whether the owner is up; `why` says what failed when it is not.
    fn mark(&self, up: bool, why: &str) {
        let changed = self
            .up
            .send_if_modified(|now| std::mem::replace(now, up) != up);
        if changed {
            if up {
                tracing::info!(target: "interop_gateway::upstream", service = self.service, owner = %self.owner, address = %self.address, "registry owner is back");
            } else {
                tracing::warn!(target: "interop_gateway::upstream", service = self.service, owner = %self.owner, address = %self.address, error = %why, "registry owner is down; calls fail fast until it answers health checks again");
            }
        }
    }

    fn unavailable(&self, what: String) -> RequestError {
        RequestError::UpstreamUnavailable {
            service: self.service,
            owner: self.owner.clone(),
            message: format!(
                "the owner of {} ({}) {what}; no data is disclosed; retry later",
                self.service, self.owner
            ),
        }
    }

    /// Calls `method` (full name, `package.Service/Method`) on the owner with
    /// `request`, on behalf of `consumer`, under this gateway's `request_id`.
    /// Returns the owner's answer and its metadata; the owner's own error
    /// status as [`RequestError::Upstream`]; or `UPSTREAM_UNAVAILABLE` when no
    /// answer came within `timeout_ms`.
    pub async fn unary<Req, Resp>(
        &self,
        method: &str,
        request: Req,
        consumer: &str,
        request_id: &str,
    ) -> Result<(Resp, MetadataMap), RequestError>
    where
        Req: prost::Message + Clone + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        if !self.is_up() {
            return Err(self.unavailable(
                "is down (it fails its health checks), so the call was not sent".into(),
            ));
        }
        let path = PathAndQuery::try_from(format!("/{method}"))
            .map_err(|e| RequestError::Internal(format!("method path {method}: {e}")))?;
        let consumer_code = consumer;
        let consumer = MetadataValue::try_from(consumer)
            .map_err(|e| RequestError::Internal(format!("agency code as metadata: {e}")))?;
        let request_id = crate::service::request_id_value(request_id)
            .map_err(|e| RequestError::Internal(format!("request id as metadata: {e}")))?;
        let deadline = Instant::now() + self.timeout;
        self.budget.deposit();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut req = tonic::Request::new(request.clone());
            req.metadata_mut()
                .insert(ON_BEHALF_OF_HEADER, consumer.clone());
            req.metadata_mut()
                .insert(crate::service::REQUEST_ID_HEADER, request_id.clone());
            // The owner gets the deadline too (so it stops working for
            // nobody), a little later than ours: tonic's client enforces it
            // as CANCELLED, while this gateway's own deadline answers
            // UPSTREAM_UNAVAILABLE.
            req.set_timeout(deadline.saturating_duration_since(Instant::now()) + DEADLINE_SLACK);
            let mut grpc = self.grpc.clone();
            let path = path.clone();
            let sent = tokio::time::timeout_at(deadline, async move {
                grpc.ready()
                    .await
                    .map_err(|e| tonic::Status::from_error(e.into()))?;
                grpc.unary(req, path, tonic_prost::ProstCodec::default())
                    .await
            })
            .await;
            let status = match sent {
                Err(_) => {
                    return Err(self.unavailable(format!(
                        "did not answer within {} ms",
                        self.timeout.as_millis()
                    )))
                }
                Ok(Ok(response)) => {
                    self.mark(true, "");
                    let (metadata, message, _) = response.into_parts();
                    return Ok((message, metadata));
                }
                Ok(Err(status)) => status,
            };
            // A status with a source was made on this side: no answer came.
            if std::error::Error::source(&status).is_none() {
                return Err(self.owner_status(status, consumer_code));
            }
            let why = crate::client::error_chain(&status);
            let time_left = deadline.saturating_duration_since(Instant::now()) > RETRY_BACKOFF;
            if attempts < MAX_ATTEMPTS && time_left && self.budget.withdraw() {
                tracing::info!(target: "interop_gateway::upstream", service = self.service, owner = %self.owner, error = %why, "no answer from the registry owner; retrying");
                tokio::time::sleep(RETRY_BACKOFF).await;
                continue;
            }
            self.mark(false, &why);
            // The detail (address, TLS or socket error) is for this gateway's
            // operator, not for the consumer.
            tracing::warn!(target: "interop_gateway::upstream", service = self.service, owner = %self.owner, address = %self.address, error = %why, "no answer from the registry owner");
            return Err(self.unavailable("cannot be reached".into()));
        }
    }

    /// What the consumer receives for a status that came with the owner's
    /// answer (or for an answer that did not decode: tonic reports it the
    /// same way); see the module docs.
    fn owner_status(&self, status: tonic::Status, consumer: &str) -> RequestError {
        use tonic::Code;
        let owner_reason = owner_reason(&status);
        match status.code() {
            Code::NotFound
            | Code::InvalidArgument
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::ResourceExhausted => RequestError::Upstream(status),
            Code::DeadlineExceeded => self.unavailable(format!(
                "did not answer within {} ms",
                self.timeout.as_millis()
            )),
            Code::Unavailable => {
                tracing::warn!(target: "interop_gateway::upstream", service = self.service, owner = %self.owner, reason = %owner_reason, message = ?status.message(), "the registry owner answered UNAVAILABLE");
                self.unavailable(format!("answered UNAVAILABLE ({owner_reason})"))
            }
            Code::Unauthenticated => {
                tracing::warn!(target: "interop_gateway::upstream", service = self.service, owner = %self.owner, consumer, reason = %owner_reason, message = ?status.message(), "the registry owner refused this gateway's call; the two gateways' configs disagree");
                RequestError::PermissionDenied {
                    reason: crate::error::reason::UPSTREAM_REFUSED,
                    message: format!(
                        "the owner of {} ({}) does not accept this gateway's calls for agency {consumer} \
                         (UNAUTHENTICATED, {owner_reason}): its gateway does not know this gateway \
                         as a relay or does not know agency {consumer}; no data is disclosed; ask \
                         the operators of both gateways",
                        self.service, self.owner
                    ),
                    metadata: vec![
                        ("service".to_owned(), self.service.to_owned()),
                        ("owner".to_owned(), self.owner.clone()),
                        ("owner_reason".to_owned(), owner_reason),
                    ],
                }
            }
            code => {
                tracing::error!(target: "interop_gateway::upstream", service = self.service, owner = %self.owner, code = ?code, reason = %owner_reason, message = ?status.message(), "the registry owner's call failed; nothing of its answer is passed on");
                RequestError::Internal(format!(
                    "the owner of {} ({}) failed to answer ({}); nothing of its answer is disclosed",
                    self.service,
                    self.owner,
                    crate::error::code_name(code)
                ))
            }
        }
    }

    /// Asks the owner's health service about the forwarded service: `Ok`
    /// when it is serving, else what went wrong (for the operator's log).
    async fn probe(&self) -> Result<(), String> {
        let mut client = HealthClient::new(self.channel.clone());
        let request = HealthCheckRequest {
            service: self.service.to_owned(),
        };
        let wait = PROBE_TIMEOUT.min(self.timeout);
        match tokio::time::timeout(wait, client.check(request)).await {
            Ok(Ok(answer)) => match answer.into_inner().status {
                s if s == ServingStatus::Serving as i32 => Ok(()),
                s => Err(format!(
                    "its health check says {}",
                    ServingStatus::try_from(s).map_or("an unknown status", |s| s.as_str_name())
                )),
            },
            Ok(Err(status)) => Err(format!(
                "health check failed: {}",
                crate::client::error_chain(&status)
            )),
            Err(_) => Err(format!(
                "health check unanswered after {} ms",
                wait.as_millis()
            )),
        }
    }

    async fn probe_loop(self: Arc<Self>) {
        loop {
            let probed = self.probe().await;
            self.mark(
                probed.is_ok(),
                probed.as_ref().err().map_or("", String::as_str),
            );
            let up = probed.is_ok();
            tokio::time::sleep(if up { PROBE_EVERY_UP } else { PROBE_EVERY_DOWN }).await;
        }
    }
}

/// The owner's `ErrorInfo.reason`, when it is a reason code; `none`
/// otherwise, so that no text of the owner's reaches the consumer through it.
fn owner_reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .and_then(|info| crate::error::reason_code(&info.reason).map(str::to_owned))
        .unwrap_or_else(|| "none".to_owned())
}
