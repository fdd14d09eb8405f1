//! Clients below the gRPC client: TCP from a chosen loopback address, TLS
//! with a chosen certificate, raw HTTP/2; and what hostile-client tests
//! watch: whether the gateway closes a connection, its calls' latency, the
//! process's memory, panics, and the open-file limit.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Once,
    },
    time::{Duration, Instant},
};

use interop_gateway::pki::IssuedCert;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use tokio::{
    io::{AsyncRead, AsyncReadExt},
    net::{TcpSocket, TcpStream},
};
use tokio_rustls::{client::TlsStream, TlsConnector};

use super::Gateway;

pub fn port(gw: &Gateway) -> u16 {
    gw.addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// A TCP connection to the gateway from `from` (any 127.x.y.z: Linux
/// routes all of 127/8 to the loopback interface), so tests can play many
/// source addresses.
pub async fn tcp_from(gw: &Gateway, from: Ipv4Addr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0))?;
    socket
        .connect(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port(gw)))
        .await
}

/// A TLS client config trusting the gateway's CA, presenting `issued`
/// (none: no client certificate), offering h2.
pub fn tls_config(gw: &Gateway, issued: Option<&IssuedCert>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(gw.pki.ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match issued {
        Some(issued) => {
            let chain = vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// A TLS connection with `issued`'s certificate that then sends nothing.
pub async fn tls_connect(gw: &Gateway, issued: &IssuedCert) -> TlsStream<TcpStream> {
    let tcp = tcp_from(gw, Ipv4Addr::LOCALHOST).await.unwrap();
    TlsConnector::from(tls_config(gw, Some(issued)))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// The first flight of a TLS handshake (the ClientHello), to send and then
/// go silent halfway through the handshake.
pub fn client_hello(gw: &Gateway) -> Vec<u8> {
    let mut conn = rustls::ClientConnection::new(
        tls_config(gw, None),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// Whether the gateway closes `conn` (end of stream or reset) within `within`.
pub async fn closed_within<S: AsyncRead + Unpin>(conn: &mut S, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // Handshake messages, session tickets and the like: keep reading.
            Ok(Ok(_)) => continue,
        }
    }
}

/// Resident memory of this process (the gateway and the test's clients),
/// KiB, from `/proc/self/status`.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts panics from here on in any thread (the gateway's tasks
/// included), keeping the default report. A failed assertion of a test
/// (in `tests/`) is not counted: tests of one binary share the count.
pub fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info
                .location()
                .is_some_and(|l| l.file().starts_with("tests/"))
            {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

pub fn panics() -> usize {
    PANICS.load(Ordering::SeqCst)
}

/// The soft and hard limits on open files of this process.
pub fn open_file_limits() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut fields = line["Max open files".len()..].split_whitespace();
    let mut next = || match fields.next() {
        Some("unlimited") | None => u64::MAX,
        Some(n) => n.parse().unwrap_or(u64::MAX),
    };
    (next(), next())
}

/// Raises this process's soft open-file limit to `want` (at most the hard
/// limit) with util-linux `prlimit` on its own pid, and returns the soft
/// limit then in force. No `unsafe` and no dependency for one system call.
pub fn raise_open_file_limit(want: u64) -> u64 {
    let (soft, hard) = open_file_limits();
    if soft >= want {
        return soft;
    }
    let target = want.min(hard);
    let raised = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={target}:{hard}"))
        .status();
    if !raised.is_ok_and(|s| s.success()) {
        eprintln!("could not raise the open-file limit from {soft} (prlimit)");
    }
    open_file_limits().0
}

/// Latencies of `calls`, in order; every call must succeed.
pub async fn timed<F, Fut>(calls: usize, mut call: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let mut out = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        call().await.expect("a well-behaved agency's call failed");
        out.push(started.elapsed());
    }
    out
}

pub fn median(latencies: &[Duration]) -> Duration {
    let mut v = latencies.to_vec();
    v.sort();
    v[v.len() / 2]
}

/// The generous bound a well-behaved agency's median latency keeps under
/// attack: five times its quiet median, plus 50 ms for a busy 2-core machine.
pub fn within_normal(quiet: Duration, under_attack: Duration) -> bool {
    under_attack <= quiet * 5 + Duration::from_millis(50)
}

/// How a hand-written call ended.
#[derive(Debug)]
pub enum Outcome {
    /// A gRPC status (in the headers of a trailers-only answer, or in the
    /// trailers).
    Status(tonic::Status),
    /// The stream or the connection was reset or closed without one.
    Refused(String),
}

impl Outcome {
    /// The status, or a panic naming what happened instead.
    pub fn status(self) -> tonic::Status {
        match self {
            Outcome::Status(s) => s,
            Outcome::Refused(why) => panic!("no gRPC status: {why}"),
        }
    }
}

/// A gRPC message frame: not compressed, 4-byte big-endian length, `msg`.
pub fn grpc_frame(msg: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// One call written by hand on a new connection with `issued`'s
/// certificate: POST `path` with `headers`, then `body` as is.
pub async fn raw_call(
    gw: &Gateway,
    issued: &IssuedCert,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Outcome {
    let tls = tls_connect(gw, issued).await;
    let (h2, connection) = match h2::client::handshake(tls).await {
        Ok(c) => c,
        Err(e) => return Outcome::Refused(e.to_string()),
    };
    let conn = tokio::spawn(connection);
    let outcome = async {
        let mut h2 = h2.ready().await.map_err(|e| e.to_string())?;
        let mut req = http::Request::post(format!("https://localhost{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let (response, mut send) = h2
            .send_request(req.body(()).unwrap(), false)
            .map_err(|e| e.to_string())?;
        send.reserve_capacity(body.len());
        send.send_data(body.into(), true)
            .map_err(|e| e.to_string())?;
        let response = response.await.map_err(|e| e.to_string())?;
        if let Some(status) = tonic::Status::from_header_map(response.headers()) {
            return Ok(status);
        }
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            chunk.map_err(|e| e.to_string())?;
        }
        let trailers = body.trailers().await.map_err(|e| e.to_string())?;
        trailers
            .as_ref()
            .and_then(tonic::Status::from_header_map)
            .ok_or_else(|| "no grpc-status".to_owned())
    }
    .await;
    conn.abort();
    match outcome {
        Ok(status) => Outcome::Status(status),
        Err(why) => Outcome::Refused(why),
    }
}
