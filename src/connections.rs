//! What a client may hold of the gateway between TCP accept and its calls:
//! admission (a cap on connections in total, handshakes per source address,
//! connections per agency, and closing at once a connection whose certificate
//! names no configured agency) and upkeep (a deadline for the HTTP/2 preface
//! after the handshake, and an idle timeout for connections with no call in
//! progress). HTTP/2-level bounds (keepalive pings, streams, header size,
//! pending resets) are tonic's settings, applied in `server.rs` from the same
//! [`ConnectionLimits`].
//!
//! Calls in progress are counted by [`CountStreams`], a tower layer that
//! finds the connection of a request by its remote address; an admitted
//! connection ([`Guarded`]) reads that count to tell idle from busy.

use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

use crate::{
    config::ConnectionLimits,
    metrics::{ConnectionAgency, Metrics},
    snapshot::Live,
};

/// Length of the HTTP/2 client connection preface.
const PREFACE_LEN: usize = 24;

/// How certificates map to agencies, for admission: the snapshot in force
/// at the handshake, with the same rule (and verdict cache) as calls.
pub struct Identify {
    pub live: Arc<Live>,
}

/// Admission state shared by the accept loop, the connections and the
/// stream-counting layer.
pub struct Admission {
    limits: ConnectionLimits,
    /// `None` admits any verified certificate (the benchmark baseline).
    identify: Option<Identify>,
    total: Arc<Semaphore>,
    /// The cap actually applied: `max_connections`, lowered to fit the
    /// open-file limit.
    cap: usize,
    handshakes: Mutex<HashMap<IpAddr, usize>>,
    per_agency: Mutex<HashMap<String, usize>>,
    live: Mutex<HashMap<SocketAddr, Arc<Streams>>>,
    /// Where refusals and failed handshakes are counted, if anywhere.
    metrics: Option<Arc<Metrics>>,
}

/// Why a connection was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The certificate names no configured agency; `reason` is the
    /// `ErrorInfo` reason a call would get.
    #[error("{reason}: {message}")]
    NoAgency {
        reason: &'static str,
        message: String,
    },
    #[error("agency {agency} already holds {max} connections (limits.max_connections_per_agency)")]
    AgencyFull { agency: String, max: usize },
}

/// Calls in progress on one connection, and since when it has had none.
#[derive(Debug)]
struct Streams {
    state: Mutex<(usize, Instant)>,
    /// The configured agency the connection was admitted as.
    agency: Option<ConnectionAgency>,
}

impl Streams {
    fn idle_since(&self) -> Option<Instant> {
        let (open, since) = *lock(&self.state);
        (open == 0).then_some(since)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps hold counts only; a panic elsewhere leaves them usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes one of at most `max` slots under `key`.
fn take<K: Eq + Hash>(map: &Mutex<HashMap<K, usize>>, key: K, max: usize) -> bool {
    let mut map = lock(map);
    let n = map.entry(key).or_insert(0);
    if *n >= max {
        return false;
    }
    *n += 1;
    true
}

fn give_back<K: Eq + Hash>(map: &Mutex<HashMap<K, usize>>, key: &K) {
    let mut map = lock(map);
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// The soft limit on open files of this process, from `/proc/self/limits`.
pub fn open_file_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `max_connections`, lowered so that connections never take the last
/// `fd_reserve` descriptors of `open_files`.
pub fn connection_cap(limits: &ConnectionLimits, open_files: Option<u64>) -> usize {
    match open_files {
        Some(files) => {
            let room = files.saturating_sub(limits.fd_reserve).max(1);
            limits.max_connections.min(room as usize)
        }
        None => limits.max_connections,
    }
}

impl Admission {
    pub fn new(limits: ConnectionLimits, identify: Option<Identify>) -> Arc<Admission> {
        Self::with_metrics(limits, identify, None)
    }

    /// [`Admission::new`], counting refused connections and failed
    /// handshakes in `metrics`.
    pub fn with_metrics(
        limits: ConnectionLimits,
        identify: Option<Identify>,
        metrics: Option<Arc<Metrics>>,
    ) -> Arc<Admission> {
        let files = open_file_limit();
        let cap = connection_cap(&limits, files);
        if cap < limits.max_connections {
            tracing::warn!(
                max_connections = limits.max_connections,
                open_files = ?files,
                fd_reserve = limits.fd_reserve,
                cap,
                "open-file limit lower than limits.max_connections; capping connections to keep the reserve free (raise `ulimit -n` to allow more)"
            );
        }
        Arc::new(Admission {
            total: Arc::new(Semaphore::new(cap)),
            cap,
            limits,
            identify,
            handshakes: Mutex::default(),
            per_agency: Mutex::default(),
            live: Mutex::default(),
            metrics,
        })
    }

    /// Counts a connection closed for a limit, under `reason` (see
    /// [`crate::metrics::connection_closed_reason`]).
    pub fn connection_closed(&self, reason: &'static str) {
        if let Some(m) = &self.metrics {
            m.connection_closed(reason);
        }
    }

    /// Counts a failed TLS handshake under `reason`.
    pub fn handshake_failed(&self, reason: &'static str) {
        if let Some(m) = &self.metrics {
            m.handshake_failed(reason);
        }
    }

    /// The limits the gateway started with: what is built once from them
    /// (the connection cap, tonic's HTTP/2 settings) keeps them.
    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// The limits in force for a new handshake or connection: those of the
    /// config snapshot in force when agencies are checked (so a reload's
    /// per-connection limits and timeouts apply to the next connection),
    /// else the fixed ones.
    pub fn current_limits(&self) -> ConnectionLimits {
        match &self.identify {
            Some(id) => id.live.snapshot().config.connections.clone(),
            None => self.limits.clone(),
        }
    }

    /// Connections open at once, at most.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// A slot for a freshly accepted connection, if the cap allows it.
    pub fn connection(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.total).try_acquire_owned().ok()
    }

    /// A handshake slot for `ip`, released when the guard drops.
    pub fn handshake(self: &Arc<Self>, ip: IpAddr) -> Option<HandshakeSlot> {
        let max = self.current_limits().max_handshakes_per_address;
        take(&self.handshakes, ip, max).then(|| HandshakeSlot {
            admission: Arc::clone(self),
            ip,
        })
    }

    /// Admits a handshaken connection, or says why it is to be closed at
    /// once (handing the stream back for a clean TLS close).
    pub fn admit(
        self: &Arc<Self>,
        tls: TlsStream<TcpStream>,
        permit: OwnedSemaphorePermit,
    ) -> Result<Guarded, (Refused, Box<TlsStream<TcpStream>>)> {
        let limits = self.current_limits();
        let agency = match self.agency(&tls, &limits) {
            Ok(agency) => agency,
            Err(why) => {
                match (&why, &self.metrics) {
                    (Refused::NoAgency { reason, .. }, Some(m)) => m.unauthenticated(reason),
                    (Refused::AgencyFull { .. }, Some(m)) => m.connection_closed(
                        crate::metrics::connection_closed_reason::AGENCY_CONNECTIONS,
                    ),
                    _ => {}
                }
                return Err((why, Box::new(tls)));
            }
        };
        let remote = tls.get_ref().0.peer_addr().ok();
        let streams = Arc::new(Streams {
            state: Mutex::new((0, Instant::now())),
            agency: agency
                .as_deref()
                .map(|a| ConnectionAgency::new(a, self.metrics.as_deref())),
        });
        if let Some(addr) = remote {
            lock(&self.live).insert(addr, Arc::clone(&streams));
        }
        let now = Instant::now();
        Ok(Guarded {
            io: tls,
            streams,
            preface_left: PREFACE_LEN,
            preface_due: now + limits.preface_timeout,
            idle_timeout: self.identify.as_ref().map(|_| limits.idle_timeout),
            timer: Box::pin(tokio::time::sleep_until(now + limits.preface_timeout)),
            closed: false,
            _held: Held {
                admission: Arc::clone(self),
                agency,
                remote,
                _permit: permit,
            },
        })
    }

    /// The agency of a connection's certificate, with one of its connection
    /// slots taken; `None` when agencies are not checked.
    fn agency(
        &self,
        tls: &TlsStream<TcpStream>,
        limits: &ConnectionLimits,
    ) -> Result<Option<String>, Refused> {
        Ok(match &self.identify {
            None => None,
            Some(id) => {
                let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
                let agency = id
                    .live
                    .snapshot()
                    .authenticate(chain)
                    .map_err(|e| Refused::NoAgency {
                        reason: match &e {
                            crate::error::RequestError::Unauthenticated { reason, .. } => reason,
                            _ => crate::error::reason::NO_AGENCY_IDENTITY,
                        },
                        message: e.to_string(),
                    })?
                    .to_string();
                let max = limits.max_connections_per_agency;
                if !take(&self.per_agency, agency.clone(), max) {
                    return Err(Refused::AgencyFull { agency, max });
                }
                Some(agency)
            }
        })
    }

    fn stream_opened(&self, remote: SocketAddr) -> Option<StreamGuard> {
        let streams = lock(&self.live).get(&remote).cloned()?;
        lock(&streams.state).0 += 1;
        Some(StreamGuard(streams))
    }
}

/// A TLS handshake in progress from one address.
pub struct HandshakeSlot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        give_back(&self.admission.handshakes, &self.ip);
    }
}

/// What an admitted connection holds until it closes.
struct Held {
    admission: Arc<Admission>,
    agency: Option<String>,
    remote: Option<SocketAddr>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(agency) = &self.agency {
            give_back(&self.admission.per_agency, agency);
        }
        if let Some(addr) = &self.remote {
            lock(&self.admission.live).remove(addr);
        }
    }
}

/// Why [`Guarded`] ends a connection, as logged.
const NO_PREFACE: &str = "no HTTP/2 preface in time";
const IDLE: &str = "idle";

/// An admitted connection: the TLS stream, ending (as if the client had
/// closed it) when the preface is late or it has been idle too long.
pub struct Guarded {
    io: TlsStream<TcpStream>,
    streams: Arc<Streams>,
    preface_left: usize,
    preface_due: Instant,
    /// `None`: no idle timeout (calls are not counted on this server).
    idle_timeout: Option<Duration>,
    timer: Pin<Box<Sleep>>,
    /// Ended by a deadline: every later read is the end of the stream.
    closed: bool,
    _held: Held,
}

impl Guarded {
    /// Whether the connection is past a deadline; if not, arms the timer so
    /// the reader is woken to look again.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<&'static str> {
        loop {
            let now = Instant::now();
            let (due, why) = if self.preface_left > 0 {
                (self.preface_due, NO_PREFACE)
            } else if let Some(idle) = self.idle_timeout {
                match self.streams.idle_since() {
                    Some(since) => (since + idle, IDLE),
                    // Calls in progress: look again later (keeping a timer
                    // already set for later, so busy reads cost no reset).
                    None if self.timer.deadline() > now => (self.timer.deadline(), ""),
                    None => (now + idle, ""),
                }
            } else {
                return None;
            };
            if now >= due {
                return Some(why);
            }
            if self.timer.deadline() != due {
                self.timer.as_mut().reset(due);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return None;
            }
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Ok(()));
        }
        if let Some(why) = this.expired(cx) {
            this.closed = true;
            let reason = if why == NO_PREFACE {
                crate::metrics::connection_closed_reason::NO_PREFACE
            } else {
                crate::metrics::connection_closed_reason::IDLE
            };
            this._held.admission.connection_closed(reason);
            tracing::info!(target: "interop_gateway::connection", remote = ?this._held.remote, agency = ?this._held.agency, why, "connection closed");
            // End of stream: hyper closes the connection.
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if this.preface_left > 0 {
            let read = buf.filled().len() - before;
            this.preface_left = this.preface_left.saturating_sub(read);
        }
        polled
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl Connected for Guarded {
    // The same connect info as a bare TLS stream, so handlers find the peer
    // certificates where tonic puts them.
    type ConnectInfo = TlsConnectInfo<TcpConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// One call in progress; the connection is idle again once all have ended.
struct StreamGuard(Arc<Streams>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        state.0 = state.0.saturating_sub(1);
        state.1 = Instant::now();
    }
}

/// The tower layer counting calls in progress per connection.
#[derive(Clone)]
pub struct CountStreams(pub Arc<Admission>);

impl<S> tower::Layer<S> for CountStreams {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            admission: Arc::clone(&self.0),
        }
    }
}

/// See [`CountStreams`].
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    admission: Arc<Admission>,
}

impl<S, B, R> tower::Service<http::Request<B>> for Counted<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<CountedBody<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let guard = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.get_ref().remote_addr())
            .and_then(|addr| self.admission.stream_opened(addr));
        // The agency the connection was admitted as, for the layers inside
        // (metrics labels).
        if let Some(agency) = guard.as_ref().and_then(|g| g.0.agency.clone()) {
            req.extensions_mut().insert(agency);
        }
        let call = self.inner.call(req);
        Box::pin(async move {
            let response = call.await?;
            Ok(response.map(|body| CountedBody {
                body,
                _guard: guard,
            }))
        })
    }
}

/// The tower layer that refuses, with UNAVAILABLE (`SHUTTING_DOWN`), every
/// call arriving once the drain has begun (`stopping` true), on a
/// connection that has not yet acted on its GOAWAY. Calls that arrived
/// before finish; a refused call has read nothing, so nothing is
/// half-served. Health checks still pass, so a probe on an open connection
/// reads NOT_SERVING rather than an error.
#[derive(Clone)]
pub struct RefuseWhenDraining(pub tokio::sync::watch::Receiver<bool>);

impl<S> tower::Layer<S> for RefuseWhenDraining {
    type Service = Draining<S>;
    fn layer(&self, inner: S) -> Draining<S> {
        Draining {
            inner,
            stopping: self.0.clone(),
        }
    }
}

/// See [`RefuseWhenDraining`].
#[derive(Clone)]
pub struct Draining<S> {
    inner: S,
    stopping: tokio::sync::watch::Receiver<bool>,
}

/// The path prefix of `grpc.health.v1` calls.
const HEALTH_PATH: &str = "/grpc.health.v1.Health/";

impl<S, B, R> tower::Service<http::Request<B>> for Draining<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let draining = *self.stopping.borrow();
        if draining && !req.uri().path().starts_with(HEALTH_PATH) {
            let status = tonic::Status::from(crate::error::RequestError::ShuttingDown(
                "the gateway is shutting down; retry on another instance or after it restarts"
                    .into(),
            ));
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        Box::pin(self.inner.call(req))
    }
}

/// A response body that keeps its call counted until it is sent or dropped.
pub struct CountedBody<B> {
    body: B,
    _guard: Option<StreamGuard>,
}

impl<B: http_body::Body + Unpin> http_body::Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
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

    #[test]
    fn the_connection_cap_keeps_the_descriptor_reserve_free() {
        let limits = ConnectionLimits {
            max_connections: 4096,
            fd_reserve: 64,
            ..ConnectionLimits::default()
        };
        assert_eq!(connection_cap(&limits, Some(256)), 192);
        assert_eq!(connection_cap(&limits, Some(1_048_576)), 4096);
        assert_eq!(connection_cap(&limits, Some(10)), 1);
        assert_eq!(connection_cap(&limits, None), 4096);
        assert!(open_file_limit().is_some_and(|n| n > 0));
    }

    #[tokio::test]
    async fn calls_arriving_during_the_drain_are_refused_but_health_is_answered() {
        use tower::{Layer, ServiceExt};
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let inner = tower::service_fn(|_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::from("served")))
        });
        let service = RefuseWhenDraining(stopping).layer(inner);
        let call = |path: &str| {
            let request = http::Request::builder().uri(path).body(()).unwrap();
            service.clone().oneshot(request)
        };
        let data = "/interop.citizen.v1.CitizenRegistryService/GetCitizen";
        assert_eq!(call(data).await.unwrap().body(), "served");
        stop.send(true).unwrap();
        let refused = call(data).await.unwrap();
        assert!(refused.body().is_empty());
        assert_eq!(refused.headers()["grpc-status"], "14");
        let status = tonic::Status::from_header_map(refused.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        let health = call("/grpc.health.v1.Health/Check").await.unwrap();
        assert_eq!(health.body(), "served");
    }

    #[test]
    fn slots_are_counted_per_key_and_given_back() {
        let map: Mutex<HashMap<&str, usize>> = Mutex::default();
        assert!(take(&map, "a", 2) && take(&map, "a", 2));
        assert!(!take(&map, "a", 2));
        assert!(take(&map, "b", 2));
        give_back(&map, &"a");
        assert!(take(&map, "a", 2));
        give_back(&map, &"b");
        assert!(!lock(&map).contains_key("b"));
    }
}
