//! The listener and the service stack: TCP accept, the rustls handshake (off
//! the accept loop, with a deadline), then tonic serving the registry services,
//! health and reflection on the same port. Shutdown is one explicit mechanism:
//! a watch signal stops the accept loop and tells tonic to drain in-flight
//! calls before `serve` returns.

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
    proto::{
        audit::v1::access_log_service_server::AccessLogServiceServer,
        business::v1::business_registry_service_server::BusinessRegistryServiceServer,
        citizen::v1::citizen_registry_service_server::CitizenRegistryServiceServer,
        land::v1::land_registry_service_server::LandRegistryServiceServer, FILE_DESCRIPTOR_SET,
    },
    registry::{Store, StoreError},
    service::Core,
    tls::{self, TlsError},
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
    let tls_config = tls::server_config(&config.tls)?;
    let store = Store::open(&config.store_path())?;
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
    let signer = Signer::load_or_create(&config.audit.signing_key)?;
    let audit = Arc::new(
        AuditLog::open(
            &config.audit.dir,
            signer,
            AuditOptions {
                checkpoint_every_records: config.audit.checkpoint_every_records,
                checkpoint_every: config.audit.checkpoint_every,
                ..AuditOptions::default()
            },
        )
        .await?,
    );
    let core = Core {
        config: Arc::new(config),
        store,
        audit: Arc::clone(&audit),
        identities: Arc::default(),
        disclosures: Arc::default(),
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
    // Data services are only as healthy as the access log: without it no
    // answer may leave, so health follows the log's writability.
    tokio::spawn(follow_audit_health(audit.health(), health_reporter.clone()));
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

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let incoming = tls_incoming(
        listener,
        tls_config,
        Arc::clone(&admission),
        shutdown_rx.clone(),
    );

    let router = http2_limits(tonic::transport::Server::builder(), admission.limits())
        .layer(CountStreams(admission))
        .add_service(CitizenRegistryServiceServer::new(core.clone()))
        .add_service(LandRegistryServiceServer::new(core.clone()))
        .add_service(BusinessRegistryServiceServer::new(core.clone()))
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

async fn follow_audit_health(
    mut healthy: watch::Receiver<bool>,
    reporter: tonic_health::server::HealthReporter,
) {
    loop {
        let status = if *healthy.borrow_and_update() {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        for service in [
            "",
            "interop.citizen.v1.CitizenRegistryService",
            "interop.land.v1.LandRegistryService",
            "interop.business.v1.BusinessRegistryService",
            "interop.audit.v1.AccessLogService",
        ] {
            reporter.set_service_status(service, status).await;
        }
        if healthy.changed().await.is_err() {
            return;
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
