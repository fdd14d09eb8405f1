//! The listener and the service stack: TCP accept, the rustls handshake (off
//! the accept loop, with a deadline), then tonic serving the registry services,
//! the access log and catalogue services, health and reflection on the same
//! port, behind the receipt layer. Shutdown is one explicit mechanism: a watch
//! signal stops the accept loop, ends open watches and tells tonic to drain
//! in-flight calls before `serve` returns.

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
    config::{Config, ConnectionLimits},
    connections::{Admission, CountStreams, Guarded, Identify},
    policy,
    proto::{
        audit::v1::access_log_service_server::AccessLogServiceServer,
        business::v1::business_registry_service_server::BusinessRegistryServiceServer,
        catalog::v1::catalog_service_server::CatalogServiceServer,
        citizen::v1::citizen_registry_service_server::CitizenRegistryServiceServer,
        land::v1::land_registry_service_server::LandRegistryServiceServer, FILE_DESCRIPTOR_SET,
    },
    registry::{Store, StoreError},
    service::Core,
    tls::{self, TlsError},
    upstream::Upstreams,
    verify_budget::{BudgetError, VerifyBudget},
};

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
    Budget(#[from] BudgetError),
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
    shutdown: watch::Sender<bool>,
    handle: JoinHandle<Result<(), ServeError>>,
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

    /// A handle that can trigger shutdown from elsewhere.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Binds the configured address and starts serving in the background.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    start_with(config, StartOptions::default()).await
}

/// [`start`], with options the config does not hold.
pub async fn start_with(config: Config, options: StartOptions) -> Result<Running, ServeError> {
    let tls_config = tls::server_config(&config.tls)?;
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
    let upstreams = Arc::new(Upstreams::from_config(&config)?);
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
        options.clock,
    )?);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let core = Core {
        stopping: shutdown_rx.clone(),
        config: Arc::new(config),
        store,
        verify_budget,
        audit: Arc::clone(&audit),
        identities: Arc::default(),
        disclosures: Arc::default(),
        page_keys: Arc::new(page_keys),
        upstreams: Arc::clone(&upstreams),
    };
    let admission = admission(&core);

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<CitizenRegistryServiceServer<Core>>()
        .await;
    health_reporter
        .set_serving::<LandRegistryServiceServer<Core>>()
        .await;
    health_reporter
        .set_serving::<BusinessRegistryServiceServer<Core>>()
        .await;
    health_reporter
        .set_serving::<AccessLogServiceServer<Core>>()
        .await;
    health_reporter
        .set_serving::<CatalogServiceServer<Core>>()
        .await;
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
        tls_config,
        Arc::clone(&admission),
        shutdown_rx.clone(),
    );

    let router = http2_limits(tonic::transport::Server::builder(), admission.limits())
        .layer(CountStreams(admission))
        .layer(tower::util::option_layer(receipts))
        .add_service(CitizenRegistryServiceServer::new(core.clone()))
        .add_service(LandRegistryServiceServer::new(core.clone()))
        .add_service(BusinessRegistryServiceServer::new(core.clone()))
        .add_service(CatalogServiceServer::new(core.clone()))
        .add_service(AccessLogServiceServer::new(core))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let mut stop = shutdown_rx;
    let handle = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
            .map_err(|e| ServeError::Transport(e.to_string()))?;
        for task in probers {
            task.abort();
        }
        follower.abort();
        // Every call has finished and dropped its handle: seal the log.
        match Arc::try_unwrap(audit) {
            Ok(log) => log.shutdown().await?,
            Err(_) => tracing::warn!(
                "access log still in use at shutdown; its tail is sealed on next start"
            ),
        }
        Ok(())
    });
    Ok(Running {
        addr,
        shutdown: shutdown_tx,
        handle,
    })
}

/// Connection admission for the gateway: its limits, and agencies resolved
/// from certificates with the same identity cache as calls.
fn admission(core: &Core) -> Arc<Admission> {
    let identify = Identify {
        trust_domain: core.config.trust_domain.clone(),
        agencies: core.config.agencies.keys().cloned().collect(),
        identities: Arc::clone(&core.identities),
    };
    let admission = Admission::new(core.config.connections.clone(), Some(identify));
    tracing::debug!(max_connections = admission.cap(), "connection limits");
    admission
}

/// tonic's HTTP/2 settings from `[limits]`: keepalive pings, streams per
/// connection, header size, and pending resets (rapid reset).
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
}

/// Accepts TCP connections on `listener` and yields those that complete the
/// mutual-TLS handshake of `tls_config` and that `admission` admits, until
/// `shutdown` turns true. For `serve_with_incoming*`: tonic then sees the
/// peer certificates.
pub fn tls_incoming(
    listener: TcpListener,
    tls_config: Arc<rustls::ServerConfig>,
    admission: Arc<Admission>,
    shutdown: watch::Receiver<bool>,
) -> ReceiverStream<Result<Guarded, std::io::Error>> {
    let (conn_tx, conn_rx) = mpsc::channel(ACCEPT_BACKLOG);
    tokio::spawn(accept_loop(
        listener,
        TlsAcceptor::from(tls_config),
        admission,
        conn_tx,
        shutdown,
    ));
    ReceiverStream::new(conn_rx)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    admission: Arc<Admission>,
    conns: mpsc::Sender<Result<Guarded, std::io::Error>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let handshake_timeout = admission.limits().handshake_timeout;
    loop {
        let accepted = tokio::select! {
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
            tracing::info!(target: "interop_gateway::handshake", %peer, cap = admission.cap(), "connection limit reached; connection closed");
            continue;
        };
        let Some(slot) = admission.handshake(peer.ip()) else {
            tracing::info!(target: "interop_gateway::handshake", %peer, "too many handshakes in progress from this address; connection closed");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
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
                    tracing::info!(target: "interop_gateway::handshake", %peer, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    tracing::info!(target: "interop_gateway::handshake", %peer, "TLS handshake timed out");
                }
            }
        });
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
