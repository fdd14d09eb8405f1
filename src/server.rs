//! The listener and the service stack: TCP accept, the rustls handshake (off
//! the accept loop, with a deadline), then tonic serving the registry services,
//! health and reflection on the same port. Shutdown is one explicit mechanism:
//! a watch signal stops the accept loop and tells tonic to drain in-flight
//! calls before `serve` returns.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tokio_rustls::{server::TlsStream, TlsAcceptor};
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    config::Config,
    proto::{
        business::v1::business_registry_service_server::BusinessRegistryServiceServer,
        citizen::v1::citizen_registry_service_server::CitizenRegistryServiceServer,
        land::v1::land_registry_service_server::LandRegistryServiceServer, FILE_DESCRIPTOR_SET,
    },
    registry::{Store, StoreError},
    service::Core,
    tls::{self, TlsError},
};

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
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
    let core = Core {
        config: Arc::new(config),
        store,
    };

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
    let (conn_tx, conn_rx) = mpsc::channel(ACCEPT_BACKLOG);
    tokio::spawn(accept_loop(
        listener,
        TlsAcceptor::from(tls_config),
        conn_tx,
        shutdown_rx.clone(),
    ));

    let router = tonic::transport::Server::builder()
        .add_service(CitizenRegistryServiceServer::new(core.clone()))
        .add_service(LandRegistryServiceServer::new(core.clone()))
        .add_service(BusinessRegistryServiceServer::new(core))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let mut stop = shutdown_rx;
    let handle = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
            .map_err(|e| ServeError::Transport(e.to_string()))
    });
    Ok(Running {
        addr,
        shutdown: shutdown_tx,
        handle,
    })
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    conns: mpsc::Sender<Result<TlsStream<TcpStream>, std::io::Error>>,
    mut shutdown: watch::Receiver<bool>,
) {
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
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let conns = conns.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = conns.send(Ok(tls)).await;
                }
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

/// Resolves when the process gets SIGTERM or Ctrl-C.
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
