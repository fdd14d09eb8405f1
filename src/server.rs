//! The listener and the service stack: TCP accept, the rustls handshake (off
//! the accept loop, with a deadline), then tonic serving the registry services,
//! the access log and catalogue services, health and reflection on the same
//! port, behind the receipt layer. The config in force is a snapshot
//! (`snapshot.rs`) every handshake and call reads, swapped whole by
//! [`reload`]. Shutdown is one explicit mechanism, the drain: a watch signal
//! stops the accept loop, turns health NOT_SERVING, refuses calls arriving
//! after it, ends open watches and lets calls in flight finish (up to
//! `drain_timeout_ms`) before the access log is sealed and `serve` returns.
//! With `[admin]`, the admin listener (metrics, readiness) runs beside it
//! until the drain is over.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    audit::{AuditError, AuditLog, AuditOptions, Signer},
    config::{Config, ConfigError, ConnectionLimits},
    connections::{Admission, CountStreams, Guarded, Identify, RefuseWhenDraining},
    limits,
    metrics::{CallMetricsLayer, Metrics},
    policy,
    proto::{
        audit::v1::{
            access_log_service_server::AccessLogServiceServer,
            witness_service_server::WitnessServiceServer,
        },
        business::v1::business_registry_service_server::BusinessRegistryServiceServer,
        catalog::v1::catalog_service_server::CatalogServiceServer,
        citizen::v1::citizen_registry_service_server::CitizenRegistryServiceServer,
        land::v1::land_registry_service_server::LandRegistryServiceServer,
        FILE_DESCRIPTOR_SET,
    },
    registry::{Store, StoreError},
    service::Core,
    snapshot::{Live, ReloadSummary},
    tls::TlsError,
    upstream::Upstreams,
    verify_budget::{BudgetError, VerifyBudget},
};

/// How long a stop waits for the witnesses to take the final checkpoint.
const WITNESS_GRACE: Duration = Duration::from_secs(3);

/// Handshaken connections waiting for tonic to pick them up.
const ACCEPT_BACKLOG: usize = 256;

/// Why the gateway could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("listen: cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Transport(String),
    #[error("reflection: {0}")]
    Reflection(String),
    #[error("audit log: {0}")]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Upstream(#[from] crate::upstream::UpstreamError),
    #[error(transparent)]
    Witness(#[from] crate::witness::WitnessConfigError),
    #[error(transparent)]
    Budget(#[from] BudgetError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// What a program embedding the gateway may set beyond the config (which
/// cannot reach these).
#[derive(Clone, Debug)]
pub struct StartOptions {
    /// The clock the verification budget reads; tests move it by hand.
    pub clock: Arc<dyn crate::clock::Clock>,
}

impl Default for StartOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(crate::clock::SystemClock),
        }
    }
}

/// A started gateway.
pub struct Running {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    /// The admin listener's address actually bound, when `[admin]` is set.
    pub admin_addr: Option<SocketAddr>,
    metrics: Option<Arc<Metrics>>,
    shutdown: watch::Sender<bool>,
    handle: JoinHandle<Result<(), ServeError>>,
    live: Arc<Live>,
}

impl Running {
    /// Stops accepting, waits for in-flight calls to finish, and returns.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    /// Waits until the server stops (after a shutdown signal).
    pub async fn wait(self) -> Result<(), ServeError> {
        self.handle
            .await
            .map_err(|e| ServeError::Transport(e.to_string()))?
    }

    /// A handle that can trigger shutdown from elsewhere. Sending `true`
    /// starts the drain: it is the one stop signal (health and `/readyz`
    /// follow it at once, the listener stops, connections get GOAWAY; the
    /// admin listener keeps answering until calls in flight have finished).
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }

    /// The config in force.
    pub fn live(&self) -> Arc<Live> {
        Arc::clone(&self.live)
    }

    /// Reloads the config ([`Live::reload`]) and logs the outcome: what
    /// SIGHUP does, and the one place a reload's outcome is known.
    pub fn reload(&self) -> Result<ReloadSummary, ConfigError> {
        reload(&self.live, self.metrics.as_deref())
    }

    /// The gateway's metrics; `None` without `[admin]`, where nothing is
    /// counted.
    pub fn metrics(&self) -> Option<Arc<Metrics>> {
        self.metrics.clone()
    }
}

/// [`Running::reload`], for a signal handler holding only the [`Live`].
pub fn reload(live: &Live, metrics: Option<&Metrics>) -> Result<ReloadSummary, ConfigError> {
    let outcome = live.reload();
    if let Some(m) = metrics {
        m.config_reload(outcome.is_ok());
        if outcome.is_ok() {
            // A rotated certificate or CA: its expiry is the new one's.
            let snapshot = live.snapshot();
            m.watch_certificates(crate::metrics::watched_certificates(&snapshot.config));
        }
    }
    match &outcome {
        Ok(summary) => {
            tracing::info!(
                generation = summary.generation,
                agencies = summary.agencies,
                grants = summary.grants,
                crl_files = summary.crl_files,
                "config reloaded; the next call on every connection uses it"
            );
            for key in &summary.restart_needed {
                tracing::warn!(
                    key,
                    "config reload: this key differs from the config the gateway started with and only takes effect at the next start"
                );
            }
            for warning in &summary.warnings {
                tracing::warn!("config: {warning}");
            }
        }
        Err(e) => {
            tracing::error!(file = %e.file, error = %e.message, "config reload refused; the previous config stays in force");
        }
    }
    outcome
}

/// Binds the configured address and starts serving in the background.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    start_with(config, StartOptions::default()).await
}

/// [`start`], with options the config does not hold.
pub async fn start_with(config: Config, options: StartOptions) -> Result<Running, ServeError> {
    let live = Live::new(config)?;
    let snapshot = live.snapshot();
    let config = &snapshot.config;
    for warning in snapshot.warnings() {
        tracing::warn!("config: {warning}");
    }
    // A gateway that forwards every registry service holds no registry.
    let store = if config.forwards_every_registry() {
        Store::detached(&config.store_path())
    } else {
        Store::open(&config.store_path())?
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    let admin_listener = match &config.admin {
        Some(admin) => {
            Some(
                crate::admin::bind(admin.listen)
                    .await
                    .map_err(|source| ServeError::Bind {
                        addr: admin.listen,
                        source,
                    })?,
            )
        }
        None => None,
    };
    let admin_addr = admin_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()
        .map_err(|source| ServeError::Bind { addr, source })?;
    // Counted only where they can be read: without `[admin]`, no metrics.
    let metrics = admin_listener.as_ref().map(|_| {
        let metrics = Arc::new(Metrics::new());
        metrics.watch_certificates(crate::metrics::watched_certificates(config));
        metrics
    });
    let upstreams = Arc::new(Upstreams::from_config(config)?);
    for upstream in upstreams.iter() {
        tracing::info!(service = upstream.service, owner = %upstream.owner, address = upstream.address(), "forwarding the service to its owner's gateway");
    }
    let signer = Signer::load_or_create(&config.audit.signing_key)?;
    let audit_options = AuditOptions {
        checkpoint_every_records: config.audit.checkpoint_every_records,
        checkpoint_every: config.audit.checkpoint_every,
        files: config.audit.files.clone(),
        clock: Arc::clone(&options.clock),
        ..AuditOptions::default()
    };
    let audit = Arc::new(match &config.audit.database {
        None => AuditLog::open(&config.audit.dir, signer, audit_options).await?,
        Some(db) => {
            let store = crate::audit::pg::PgStore::connect(
                &db.url,
                db.pool_size,
                &config.audit.instance,
                &signer,
            )
            .await?;
            tracing::info!(
                database = %crate::audit::pg::redacted(&db.url),
                instance = %config.audit.instance,
                "access log in PostgreSQL"
            );
            AuditLog::open_store(Box::new(store), signer, audit_options).await?
        }
    });
    // Page tokens: sealed with the key the instances share when the log's
    // store keeps one, else with a key of this process.
    let page_keys = match audit.reader().page_token_secret()? {
        Some(secret) => crate::service::page_token::Keys::from_secret(&secret),
        None => crate::service::page_token::Keys::random(),
    };
    // Receipts are signed with the access log's key (which opening the log
    // created if it was missing).
    let receipts = match config.audit.receipts {
        true => Some(crate::receipt::ReceiptLayer::new(Arc::new(
            crate::receipt::ReceiptSigner::new(Signer::load_or_create(&config.audit.signing_key)?),
        ))),
        false => None,
    };
    let verify_budget = Arc::new(VerifyBudget::open(
        &config.verify_budget_path(),
        &config.limits,
        Arc::clone(&options.clock),
    )?);
    // Countersigning other gateways' checkpoints, with the access log's key;
    // and sending this log's checkpoints to its own witnesses.
    let log_signer = Signer::load_or_create(&config.audit.signing_key)?;
    let witnessing = crate::witness::spawn(
        &config.audit.witnesses,
        crate::witness::LogSide {
            key: log_signer.public_key(),
            instance: match config.audit.database {
                Some(_) => config.audit.instance.clone(),
                None => String::new(),
            },
            reader: audit.reader(),
            receipts: crate::witness::LogSide::receipts_dir(config),
            metrics: metrics.clone(),
            every: config.audit.checkpoint_every,
        },
        audit.checkpoints(),
    )?;
    let witness = crate::service::witness::Witness {
        live: Arc::clone(&live),
        store: Arc::new(crate::audit::witness::WitnessStore::new(
            &config.data_dir.join(crate::audit::witness::WITNESS_DIR),
            log_signer,
        )),
        clock: Arc::clone(&options.clock),
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let core = Core {
        stopping: shutdown_rx.clone(),
        live: Arc::clone(&live),
        receipts: config.audit.receipts,
        store,
        verify_budget,
        audit: Arc::clone(&audit),
        page_keys: Arc::new(page_keys),
        upstreams: Arc::clone(&upstreams),
        agency_limits: Arc::default(),
        metrics: metrics.clone(),
    };
    let admin = admin_listener
        .zip(metrics.clone())
        .map(|(listener, metrics)| {
            crate::admin::serve(
                listener,
                Arc::new(crate::admin::Admin {
                    metrics,
                    readiness: crate::admin::Readiness::new(shutdown_rx.clone(), audit.health()),
                }),
            )
        });
    let admission = admission(&live, config, metrics.clone());
    drop(snapshot);
    let settings = {
        let (live, agencies) = (Arc::clone(&live), Arc::clone(&live));
        limits::layers::Settings::new(move || live.snapshot().config.limits.clone()).with_agencies(
            move |code| {
                let snapshot = agencies.snapshot();
                let agency = snapshot.config.agencies.get(code)?;
                agency.limits.max_in_flight
            },
        )
    };

    let (health_reporter, _) = tonic_health::server::health_reporter();
    // Its watches end at a drain (see `health`), so a probe following
    // health does not hold the stop for the whole drain timeout.
    let health = tonic_health::pb::health_server::HealthServer::new(
        crate::health::DrainingHealth::new(health_reporter.clone(), shutdown_rx.clone()),
    );
    set_health(&health_reporter, tonic_health::ServingStatus::Serving).await;
    // Data services are only as healthy as the access log (without it no
    // answer may leave) and, when forwarded, as their owner.
    let owners_health = upstreams.iter().map(|u| (u.service, u.health())).collect();
    let follower = tokio::spawn(follow_health(
        audit.health(),
        owners_health,
        health_reporter.clone(),
    ));
    let probers = upstreams.spawn_probers();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    let incoming = tls_incoming(
        listener,
        Arc::clone(&live),
        Arc::clone(&admission),
        shutdown_rx.clone(),
    );

    // Every call, top to bottom, outermost first (per-agency limits are in `Core::call`,
    // where whom a call is for is known and its refusal is recorded; only calls still
    // awaiting their request message are bounded per agency here).
    let stack = tower::ServiceBuilder::new()
        // A connection with a call in progress is not idle.
        .layer(CountStreams(admission.clone()))
        // Counted in the metrics (refusals below included).
        .option_layer(metrics.clone().map(CallMetricsLayer))
        // OK answers' trailers carry a signed receipt.
        .option_layer(receipts)
        // Draining: new calls are UNAVAILABLE SHUTTING_DOWN before anything is read.
        .layer(RefuseWhenDraining(shutdown_rx.clone()))
        // An agency's `max_in_flight` calls already awaiting their request's end:
        // RESOURCE_EXHAUSTED TOO_MANY_IN_FLIGHT at once, before taking a place.
        .layer(limits::layers::AwaitingBodyLayer::new(settings.clone()))
        // More than `max_in_flight` calls: UNAVAILABLE OVERLOADED at once.
        .layer(limits::layers::ShedLayer::new(settings.clone()))
        // A body that is not the method's message: INVALID_ARGUMENT.
        .layer(limits::layers::MalformedLayer)
        // The caller's grpc-timeout, at most `max_call_ms`.
        .layer(limits::layers::DeadlineLayer::new(settings.clone()))
        // Request bodies beyond `max_request_bytes`: RESOURCE_EXHAUSTED.
        .layer(limits::layers::RequestBytesLayer::new(settings));
    let router = http2_limits(tonic::transport::Server::builder(), admission.limits())
        .layer(stack)
        .add_service(CitizenRegistryServiceServer::new(core.clone()))
        .add_service(LandRegistryServiceServer::new(core.clone()))
        .add_service(BusinessRegistryServiceServer::new(core.clone()))
        .add_service(CatalogServiceServer::new(core.clone()))
        .add_service(AccessLogServiceServer::new(core))
        .add_service(WitnessServiceServer::new(witness))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let mut stop = shutdown_rx;
    let drain_live = Arc::clone(&live);
    let handle = tokio::spawn(async move {
        let mut serving_stop = stop.clone();
        let serve = router.serve_with_incoming_shutdown(incoming, async move {
            let _ = serving_stop.wait_for(|s| *s).await;
        });
        tokio::pin!(serve);
        // The drain begins: the stop signal has already ended the accept
        // loop and told tonic to send GOAWAY on every connection; health
        // says NOT_SERVING at once, and calls in flight get until the drain
        // timeout to finish.
        let begin_drain = || async {
            follower.abort();
            set_health(&health_reporter, tonic_health::ServingStatus::NotServing).await;
            let timeout = drain_live.snapshot().config.connections.drain_timeout;
            tracing::info!(
                timeout_ms = timeout.as_millis() as u64,
                "draining: no new connections or calls; finishing calls in flight"
            );
            timeout
        };
        let served = tokio::select! {
            // The stop signal first: once it is sent, the drain below runs
            // even when serving has already wound down.
            biased;
            _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => {
                let timeout = begin_drain().await;
                match tokio::time::timeout(timeout, &mut serve).await {
                    Ok(served) => served,
                    Err(_) => {
                        tracing::warn!(timeout_ms = timeout.as_millis() as u64, "drain timeout (limits.drain_timeout_ms) reached; closing the remaining connections (their calls fail closed: the access log is sealed)");
                        Ok(())
                    }
                }
            }
            served = &mut serve => {
                // The stop signal's value can be seen (serving ends on it)
                // before its waiters are woken: the same drain, with no
                // call left to wait for.
                if *stop.borrow() {
                    begin_drain().await;
                }
                served
            }
        };
        served.map_err(|e| ServeError::Transport(e.to_string()))?;
        for task in probers {
            task.abort();
        }
        follower.abort();
        // Answered until every call has finished: `/readyz` says 503 while
        // the gateway drains.
        if let Some(admin) = admin {
            admin.abort();
        }
        // Every call has finished and dropped its handle: seal the log. A
        // call cut off by the drain timeout may still hold it; it is sealed
        // all the same, and that call's append fails closed.
        match Arc::try_unwrap(audit) {
            Ok(log) => log.shutdown().await?,
            Err(log) => log.close().await,
        }
        // The witnesses get the final checkpoint, within a bound: a witness
        // that does not answer does not hold up the stop.
        let deadline = tokio::time::Instant::now() + WITNESS_GRACE;
        for mut task in witnessing {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
        Ok(())
    });
    Ok(Running {
        addr,
        admin_addr,
        metrics,
        shutdown: shutdown_tx,
        handle,
        live,
    })
}

/// Connection admission for the gateway: its limits, and agencies resolved
/// from certificates by the snapshot in force, as calls resolve them.
fn admission(live: &Arc<Live>, config: &Config, metrics: Option<Arc<Metrics>>) -> Arc<Admission> {
    let identify = Identify {
        live: Arc::clone(live),
    };
    let admission = Admission::with_metrics(config.connections.clone(), Some(identify), metrics);
    tracing::debug!(max_connections = admission.cap(), "connection limits");
    admission
}

/// Streams a connection may make the gateway reset (by protocol errors on
/// them) before it is closed with GOAWAY ENHANCE_YOUR_CALM: h2's own default,
/// against MadeYouReset (CVE-2025-8671). tonic passes `None` to hyper unless
/// told, which turns that protection off.
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// tonic's HTTP/2 settings from `[limits]`: keepalive pings, streams per
/// connection, header size, pending resets (rapid reset, CVE-2023-44487) and
/// resets the client provokes (MadeYouReset). CONTINUATION floods are bounded
/// by h2 itself: a header block may span only as many frames as
/// `max_header_list_bytes` needs.
pub fn http2_limits(
    server: tonic::transport::Server,
    limits: &ConnectionLimits,
) -> tonic::transport::Server {
    server
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_header_list_size(limits.max_header_list_bytes)
        .http2_max_pending_accept_reset_streams(Some(limits.max_pending_reset_streams))
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
}

/// Where each handshake finds the TLS server config to use.
pub trait TlsSource: Send + Sync + 'static {
    /// The config for the next handshake.
    fn current(&self) -> Arc<rustls::ServerConfig>;
}

/// A fixed config.
impl TlsSource for Arc<rustls::ServerConfig> {
    fn current(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(self)
    }
}

/// The snapshot in force: a reload's certificate, key, CAs and CRLs are
/// what the next handshake uses.
impl TlsSource for Arc<Live> {
    fn current(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.snapshot().tls)
    }
}

/// Accepts TCP connections on `listener` and yields those that complete the
/// mutual-TLS handshake of `tls` (read again for every handshake) and that
/// `admission` admits, until `shutdown` turns true. For
/// `serve_with_incoming*`: tonic then sees the peer certificates.
pub fn tls_incoming(
    listener: TcpListener,
    tls: impl TlsSource,
    admission: Arc<Admission>,
    shutdown: watch::Receiver<bool>,
) -> ReceiverStream<Result<Guarded, std::io::Error>> {
    let (conn_tx, conn_rx) = mpsc::channel(ACCEPT_BACKLOG);
    tokio::spawn(accept_loop(listener, tls, admission, conn_tx, shutdown));
    ReceiverStream::new(conn_rx)
}

async fn accept_loop(
    listener: TcpListener,
    tls: impl TlsSource,
    admission: Arc<Admission>,
    conns: mpsc::Sender<Result<Guarded, std::io::Error>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            // Once stopping, never one more connection.
            biased;
            _ = shutdown.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Usually EMFILE: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over a limit, the connection is closed at once: it then costs
        // nothing, and the descriptor reserve stays free.
        let Some(permit) = admission.connection() else {
            admission.connection_closed(crate::metrics::connection_closed_reason::CONNECTION_LIMIT);
            tracing::info!(target: "interop_gateway::handshake", %peer, cap = admission.cap(), "connection limit reached; connection closed");
            continue;
        };
        let Some(slot) = admission.handshake(peer.ip()) else {
            admission.connection_closed(
                crate::metrics::connection_closed_reason::HANDSHAKES_PER_ADDRESS,
            );
            tracing::info!(target: "interop_gateway::handshake", %peer, "too many handshakes in progress from this address; connection closed");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let handshake_timeout = admission.current_limits().handshake_timeout;
        let acceptor = TlsAcceptor::from(tls.current());
        let conns = conns.clone();
        let admission = Arc::clone(&admission);
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await;
            drop(slot);
            match handshake {
                Ok(Ok(tls)) => match admission.admit(tls, permit) {
                    Ok(conn) => {
                        let _ = conns.send(Ok(conn)).await;
                    }
                    Err((why, mut tls)) => {
                        tracing::info!(target: "interop_gateway::handshake", %peer, reason = %why, "connection closed after the handshake");
                        // A clean TLS close, bounded: the peer may not read.
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            tokio::io::AsyncWriteExt::shutdown(&mut *tls),
                        )
                        .await;
                    }
                },
                Ok(Err(e)) => {
                    admission.handshake_failed(crate::metrics::handshake_failure_reason(&e));
                    tracing::info!(target: "interop_gateway::handshake", %peer, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    admission.handshake_failed(crate::metrics::handshake_reason::TIMEOUT);
                    tracing::info!(target: "interop_gateway::handshake", %peer, "TLS handshake timed out");
                }
            }
        });
    }
}

/// Sets the gRPC health of the server ("") and of every service it serves.
async fn set_health(
    reporter: &tonic_health::server::HealthReporter,
    status: tonic_health::ServingStatus,
) {
    let services = std::iter::once("")
        .chain(policy::REGISTRY_SERVICES.iter().copied())
        .chain([
            policy::ACCESS_LOG_SERVICE,
            <CatalogServiceServer<Core> as tonic::server::NamedService>::NAME,
            <WitnessServiceServer<crate::service::witness::Witness> as tonic::server::NamedService>::NAME,
        ]);
    for service in services {
        reporter.set_service_status(service, status).await;
    }
}

/// Keeps the gRPC health of every service true to what answers it: the
/// access log for all of them, and the owner for a forwarded service.
async fn follow_health(
    audit: watch::Receiver<bool>,
    owners: Vec<(&'static str, watch::Receiver<bool>)>,
    reporter: tonic_health::server::HealthReporter,
) {
    use tokio_stream::{wrappers::WatchStream, StreamExt, StreamMap};
    // Every receiver as a stream of its values (the current one first): one
    // item from any of them means "look again".
    let mut changes = StreamMap::new();
    changes.insert(None, WatchStream::new(audit.clone()));
    for (service, rx) in &owners {
        changes.insert(Some(*service), WatchStream::new(rx.clone()));
    }
    let services: Vec<&str> = std::iter::once("")
        .chain(policy::REGISTRY_SERVICES.iter().copied())
        .chain([policy::ACCESS_LOG_SERVICE])
        .collect();
    while changes.next().await.is_some() {
        let log_ok = *audit.borrow();
        for service in &services {
            let owner_ok = owners
                .iter()
                .find(|(s, _)| s == service)
                .is_none_or(|(_, rx)| *rx.borrow());
            let status = if log_ok && owner_ok {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            reporter.set_service_status(*service, status).await;
        }
    }
}

/// Registers for SIGTERM and Ctrl-C now (so a signal arriving right after
/// start-up is not lost to the default action) and returns a future that
/// resolves when either arrives.
pub fn termination_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = int.recv() => {},
                    }
                }
                (Ok(mut term), Err(_)) => {
                    term.recv().await;
                }
                (Err(_), Ok(mut int)) => {
                    int.recv().await;
                }
                (Err(_), Err(_)) => std::future::pending::<()>().await,
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
