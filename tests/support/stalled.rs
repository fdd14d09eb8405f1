//! An owner's gateway that answers its health checks and nothing else: a
//! call forwarded to it stays in progress until a deadline ends it. Raw
//! HTTP/2 over TLS (h2), so the test decides exactly what is answered.

use std::{path::PathBuf, sync::Arc};

use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

/// `grpc.health.v1.HealthCheckResponse { status: SERVING }`, gRPC-framed.
const SERVING: [u8; 7] = [0, 0, 0, 0, 2, 0x08, 0x01];

/// A running stalled owner: its port and its CA certificate file.
pub struct Stalled {
    pub port: u16,
    pub ca: PathBuf,
    /// Calls received and held so far.
    held: tokio::sync::watch::Receiver<usize>,
    _dir: tempfile::TempDir,
}

/// Listens on 127.0.0.1 with a certificate for `localhost` from a CA of
/// its own.
pub async fn start() -> Stalled {
    let dir = tempfile::tempdir().unwrap();
    let ca = interop_gateway::pki::Ca::generate("stalled owner CA").unwrap();
    let issued = ca.issue_server(&["localhost"]).unwrap();
    let ca_path = dir.path().join("owner-ca.pem");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    let chain = vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (count, held) = tokio::sync::watch::channel(0usize);
    let count = Arc::new(count);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut conn) = h2::server::handshake(tls).await else {
                    return;
                };
                // Streams never answered are kept open here.
                let mut held = Vec::new();
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    if !req.uri().path().ends_with("/Check") {
                        held.push(respond);
                        count.send_modify(|n| *n += 1);
                        continue;
                    }
                    let head = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .body(())
                        .unwrap();
                    if let Ok(mut send) = respond.send_response(head, false) {
                        let _ = send.send_data(SERVING.to_vec().into(), false);
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        let _ = send.send_trailers(trailers);
                    }
                }
            });
        }
    });
    Stalled {
        port,
        ca: ca_path,
        held,
        _dir: dir,
    }
}

impl Stalled {
    /// Waits until `n` calls in all have reached this owner.
    pub async fn holding(&self, n: usize) {
        let mut held = self.held.clone();
        let _ = held.wait_for(|h| *h >= n).await;
    }

    /// A `[[registry]]` forwarding `service` to this owner, with a
    /// forwarding deadline far beyond any test's.
    pub fn registry(&self, service: &str, owner: &str) -> String {
        format!(
            "\n[[registry]]\nservice = \"{service}\"\nowner = \"{owner}\"\nupstream = {{ address = \"127.0.0.1:{}\", server_name = \"localhost\", ca = {:?}, cert = \"certs/gateway.pem\", key = \"certs/gateway.key\", timeout_ms = 600000 }}\n",
            self.port,
            self.ca.display().to_string()
        )
    }
}
