//! The gateway-wide bounds on every call, as tower layers composed in
//! `server.rs`, each reading its `[limits]` value per call from the config
//! the call uses ([`Settings`]):
//!
//! - [`AwaitingBodyLayer`]: per agency, at most its `max_in_flight` calls
//!   whose request has not ended: a call is counted in the agency's share
//!   only once its request is read to its end (tonic calls the handler,
//!   `Core::call`, then), so without this an agency could hold every
//!   gateway-wide place with calls that send their headers, or a whole
//!   message, and never end their request stream;
//! - [`ShedLayer`]: at most `max_in_flight` calls being served; one more is
//!   answered at once with UNAVAILABLE `OVERLOADED` and a RetryInfo, instead
//!   of queueing into a timeout;
//! - [`RequestBytesLayer`]: a request body over `max_request_bytes` ends the
//!   call with RESOURCE_EXHAUSTED `REQUEST_TOO_LARGE`, having read no more;
//! - [`DeadlineLayer`]: the caller's `grpc-timeout`, capped by `max_call_ms`;
//!   past it the call is dropped and answered DEADLINE_EXCEEDED;
//! - [`MalformedLayer`]: a request body that is not the method's message
//!   is INVALID_ARGUMENT `MALFORMED_REQUEST`, not the INTERNAL tonic gives.
//!
//! Refusals are ordinary gRPC statuses built by `error.rs`, so every layer
//! outside these sees them as it sees any other answer. tower's own
//! `ConcurrencyLimit`, `LoadShed` and `Timeout` fix their bound when built
//! and answer with errors tonic turns into other codes; these read the
//! bound per call so a reloaded config applies at once.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::{body::Body, codegen::Bytes, Status};

use crate::{
    config::{Config, Limits},
    error::RequestError,
};

/// What a shed caller is told to wait before trying again.
pub const SHED_RETRY_AFTER: Duration = Duration::from_millis(100);

/// Where the layers read `[limits]` (and each agency's `max_in_flight`):
/// the config a call uses, looked up when the call starts.
#[derive(Clone)]
pub struct Settings {
    limits: Arc<dyn Fn() -> Limits + Send + Sync>,
    agency_max_in_flight: AgencyBound,
}

/// An agency's `max_in_flight` by its code, as the config in force has it.
type AgencyBound = Arc<dyn Fn(&str) -> Option<usize> + Send + Sync>;

impl Settings {
    /// Always `config`.
    pub fn fixed(config: Arc<Config>) -> Settings {
        let agencies = Arc::clone(&config);
        Settings::new(move || config.limits.clone()).with_agencies(move |code| {
            agencies
                .agencies
                .get(code)
                .and_then(|a| a.limits.max_in_flight)
        })
    }

    /// Whatever `current` returns at the start of each call (and no
    /// agency limits, until [`Settings::with_agencies`]).
    pub fn new(current: impl Fn() -> Limits + Send + Sync + 'static) -> Settings {
        Settings {
            limits: Arc::new(current),
            agency_max_in_flight: Arc::new(|_| None),
        }
    }

    /// Each agency's `max_in_flight`, as `of` says at the start of a call.
    pub fn with_agencies(
        mut self,
        of: impl Fn(&str) -> Option<usize> + Send + Sync + 'static,
    ) -> Settings {
        self.agency_max_in_flight = Arc::new(of);
        self
    }

    fn current(&self) -> Limits {
        (self.limits)()
    }
}

/// Counts, per agency, the calls whose request has not ended; see the
/// module docs. Runs before [`ShedLayer`], so such calls
/// past the agency's bound never take a gateway-wide place.
#[derive(Clone)]
pub struct AwaitingBodyLayer {
    settings: Settings,
    waiting: Arc<Mutex<std::collections::HashMap<Arc<str>, Arc<AtomicUsize>>>>,
}

impl AwaitingBodyLayer {
    pub fn new(settings: Settings) -> AwaitingBodyLayer {
        AwaitingBodyLayer {
            settings,
            waiting: Arc::default(),
        }
    }

    /// The agency's count (connections are only admitted for configured
    /// agencies, so the map is bounded by the config).
    fn count_of(&self, agency: &Arc<str>) -> Arc<AtomicUsize> {
        let mut map = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(map.entry(Arc::clone(agency)).or_default())
    }
}

impl<S> tower::Layer<S> for AwaitingBodyLayer {
    type Service = AwaitingBody<S>;
    fn layer(&self, inner: S) -> AwaitingBody<S> {
        AwaitingBody {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`AwaitingBodyLayer`].
#[derive(Clone)]
pub struct AwaitingBody<S> {
    inner: S,
    layer: AwaitingBodyLayer,
}

/// A call counted among its agency's calls awaiting their request's end, in
/// its request's extensions until [`LimitedBody`] sees the request end (or
/// fail, or be dropped).
#[derive(Clone)]
pub struct BodyPending(Place);

impl<S, B> tower::Service<http::Request<B>> for AwaitingBody<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: HttpBody + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // Server reflection is one long bidirectional stream per client
        // session (grpcurl, Postman): its request never ends while in use.
        let streaming = req.uri().path().starts_with("/grpc.reflection.");
        let agency = req
            .extensions()
            .get::<crate::metrics::ConnectionAgency>()
            .filter(|_| !streaming)
            .map(|a| Arc::clone(&a.code));
        let bound = agency.and_then(|a| {
            let max = (self.layer.settings.agency_max_in_flight)(&a)?;
            Some((a, max))
        });
        if let Some((agency, max)) = bound {
            let count = self.layer.count_of(&agency);
            let before = count.fetch_add(1, Ordering::AcqRel);
            let counted = Counted(count);
            if before >= max {
                drop(counted);
                tracing::debug!(target: "interop_gateway::shed", agency = %agency, max_in_flight = max, "call refused: the agency's earlier calls have not sent their request");
                let answer = refusal(RequestError::ResourceExhausted {
                    reason: crate::error::reason::TOO_MANY_IN_FLIGHT,
                    message: format!(
                        "agency {agency} already has {max} calls (its max_in_flight) whose request has not ended; finish sending those, or retry after the delay given"
                    ),
                    metadata: vec![
                        ("agency".into(), agency.to_string()),
                        ("max_in_flight".into(), max.to_string()),
                    ],
                    retry_after: crate::limits::IN_FLIGHT_RETRY_AFTER,
                });
                return answered_after_body(req.into_body(), answer);
            }
            req.extensions_mut()
                .insert(BodyPending(Place::holding(counted)));
        }
        Box::pin(self.inner.call(req))
    }
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

fn refusal(e: RequestError) -> http::Response<Body> {
    Status::from(e).into_http()
}

/// Sheds calls beyond `[limits] max_in_flight`; see the module docs.
#[derive(Clone)]
pub struct ShedLayer {
    settings: Settings,
    in_flight: Arc<AtomicUsize>,
    answer: Arc<Mutex<Option<ShedAnswer>>>,
}

impl ShedLayer {
    pub fn new(settings: Settings) -> ShedLayer {
        ShedLayer {
            settings,
            in_flight: Arc::default(),
            answer: Arc::default(),
        }
    }

    /// The OVERLOADED answer for `max`. It is the same for every shed call
    /// while `max` stays, so its headers (the message, and the encoded
    /// ErrorInfo and RetryInfo) are built once: a refusal is the gateway's
    /// cheapest answer, and while it sheds it gives little else.
    fn answer(&self, max: usize) -> http::Response<Body> {
        let mut cached = self.answer.lock().unwrap_or_else(|e| e.into_inner());
        let headers = match cached.as_ref() {
            Some(answer) if answer.max == max => answer.headers.clone(),
            _ => {
                let built = refusal(RequestError::Overloaded {
                    message: format!(
                        "the gateway is serving as many calls as it can ({max}, limits.max_in_flight); retry after the delay given"
                    ),
                    retry_after: SHED_RETRY_AFTER,
                });
                let headers = built.headers().clone();
                *cached = Some(ShedAnswer {
                    max,
                    headers: headers.clone(),
                });
                headers
            }
        };
        drop(cached);
        let mut response = http::Response::new(Body::default());
        *response.headers_mut() = headers;
        response
    }
}

/// The shed call's answer as last built, and the bound it names.
struct ShedAnswer {
    max: usize,
    headers: http::HeaderMap,
}

impl<S> tower::Layer<S> for ShedLayer {
    type Service = Shed<S>;
    fn layer(&self, inner: S) -> Shed<S> {
        Shed {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`ShedLayer`].
#[derive(Clone)]
pub struct Shed<S> {
    inner: S,
    layer: ShedLayer,
}

/// One call counted in the gateway's calls in flight.
struct Counted(Arc<AtomicUsize>);

/// A call's count, shared by the request's extensions and the layer that
/// took it: whoever is first to [`Place::release`] it gives it back.
#[derive(Clone, Default)]
struct Place(Arc<Mutex<Option<Counted>>>);

impl Place {
    fn holding(counted: Counted) -> Place {
        Place(Arc::new(Mutex::new(Some(counted))))
    }

    /// Gives the count back now (once; later calls do nothing).
    fn release(&self) {
        let taken = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(taken);
    }
}

/// A call's place among the gateway's `max_in_flight`, in its request's
/// extensions: the call holds it until its answer, except that a call
/// ending in an error gives it back once its access record is in the
/// writer's bounded queue, before the record is durable
/// ([`ShedSlot::release`]). Such a call discloses nothing; were it to keep
/// its place while its record is made durable, a flood of refused calls (an
/// agency over its own limits) would fill the places every other agency
/// needs. The queue's bound still holds them back when the log is slow.
#[derive(Clone, Default)]
pub struct ShedSlot(Place);

impl ShedSlot {
    /// Gives the call's place back now (once; later calls do nothing).
    pub fn release(&self) {
        self.0.release();
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S, B> tower::Service<http::Request<B>> for Shed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: HttpBody + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // The router is always ready; a shed call leaves it unused, which
        // holds nothing of it.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let max = self.layer.settings.current().max_in_flight;
        let before = self.layer.in_flight.fetch_add(1, Ordering::AcqRel);
        let counted = Counted(Arc::clone(&self.layer.in_flight));
        if before >= max {
            drop(counted);
            tracing::debug!(target: "interop_gateway::shed", path = req.uri().path(), max_in_flight = max, "call shed");
            return answered_after_body(req.into_body(), self.layer.answer(max));
        }
        let slot = ShedSlot(Place::holding(counted));
        req.extensions_mut().insert(slot.clone());
        let call = self.inner.call(req);
        Box::pin(async move {
            let response = call.await;
            slot.release();
            response
        })
    }
}

/// A refusal made before the call reached its handler: `answer`, once the
/// call's `body` has been read to its end (see [`Drain`]).
fn answered_after_body<B, E>(
    body: B,
    answer: http::Response<Body>,
) -> BoxFuture<http::Response<Body>, E>
where
    B: HttpBody + Send + 'static,
    E: 'static,
{
    let drain = Drain::new(body);
    Box::pin(async move {
        drain.await;
        Ok(answer)
    })
}

/// Most of a shed call's body read before its answer; see [`Drain`].
const DRAIN_BYTES: usize = 64 * 1024;
/// Longest a shed call's answer waits for the rest of its body.
const DRAIN_TIME: Duration = Duration::from_millis(5);

/// Reads a shed call's body to its end (it is one small message, nearly
/// always already received with the headers), at most [`DRAIN_BYTES`] and
/// [`DRAIN_TIME`], before the answer goes.
///
/// Answering a stream whose request is still open makes h2 reset it; under
/// overload its last DATA frame then often reaches a reset stream h2 no
/// longer remembers (it keeps a bounded number), which h2 answers with a
/// reset of its own that it counts against the connection, for the
/// connection's whole life (`MAX_LOCAL_ERROR_RESET_STREAMS`, the defence
/// against MadeYouReset). A well-behaved client shed often enough would have
/// its connection closed with GOAWAY, failing every call on it. A body read
/// to its end leaves nothing to reset. Reading stops at the first error,
/// past the bytes or the time allowed: the answer then goes as before.
struct Drain<B> {
    body: Pin<Box<B>>,
    read: usize,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> Drain<B> {
    fn new(body: B) -> Drain<B> {
        Drain {
            body: Box::pin(body),
            read: 0,
            deadline: None,
        }
    }
}

impl<B: HttpBody> Future for Drain<B> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            match this.body.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.read += frame.data_ref().map_or(0, prost::bytes::Buf::remaining);
                    if this.read > DRAIN_BYTES {
                        return Poll::Ready(());
                    }
                }
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => break,
            }
        }
        // Only a body still on its way costs a timer.
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(DRAIN_TIME)));
        deadline.as_mut().poll(cx)
    }
}

/// A layer that reads the `[limits]` in force ([`Settings`]) and the
/// service it wraps: the shape [`RequestBytesLayer`] and [`DeadlineLayer`]
/// share.
macro_rules! settings_layer {
    ($(#[$doc:meta])* $layer:ident, $service:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $layer(Settings);

        impl $layer {
            pub fn new(settings: Settings) -> $layer {
                $layer(settings)
            }
        }

        impl<S> tower::Layer<S> for $layer {
            type Service = $service<S>;
            fn layer(&self, inner: S) -> $service<S> {
                $service {
                    inner,
                    settings: self.0.clone(),
                }
            }
        }

        #[doc = concat!("See [`", stringify!($layer), "`].")]
        #[derive(Clone)]
        pub struct $service<S> {
            inner: S,
            settings: Settings,
        }
    };
}

settings_layer!(
    /// Bounds request bodies by `[limits] max_request_bytes`; see the module docs.
    RequestBytesLayer,
    RequestBytes
);

/// gRPC's length-prefixed message header: a flag byte and a 4-byte length.
const GRPC_FRAME_HEADER: usize = 5;

impl<S, B> tower::Service<http::Request<B>> for RequestBytes<S>
where
    S: tower::Service<http::Request<LimitedBody<B>>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> S::Future {
        let max = self.settings.current().max_request_bytes;
        let pending = req.extensions().get::<BodyPending>().cloned();
        self.inner.call(req.map(|body| LimitedBody {
            inner: body,
            max,
            left: max + GRPC_FRAME_HEADER,
            header: Vec::with_capacity(GRPC_FRAME_HEADER),
            pending,
        }))
    }
}

/// A request body that fails once more than its limit has been read, or as
/// soon as its first message's length prefix claims more: the error is the
/// gRPC status the caller receives.
pub struct LimitedBody<B> {
    inner: B,
    max: usize,
    left: usize,
    /// The first message's frame header, while it is being read.
    header: Vec<u8>,
    /// The call's place among its agency's calls awaiting their request,
    /// given back once the request has ended: tonic hands a unary call to
    /// its handler (where the agency's own limits apply) only then, so a
    /// complete message on a stream left open is still awaited.
    pending: Option<BodyPending>,
}

impl<B> LimitedBody<B> {
    /// The request has ended (or never will): the call no longer awaits it.
    fn arrived(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.0.release();
        }
    }
}

impl<B> Drop for LimitedBody<B> {
    fn drop(&mut self) {
        self.arrived();
    }
}

impl<B> LimitedBody<B> {
    fn too_large(&mut self) -> Status {
        self.left = 0;
        Status::from(RequestError::RequestTooLarge {
            max_bytes: self.max,
        })
    }

    /// Takes in `data`; a status once over the limit.
    fn count(&mut self, data: &[u8]) -> Result<(), Status> {
        if self.header.len() < GRPC_FRAME_HEADER {
            let wanted = GRPC_FRAME_HEADER - self.header.len();
            self.header
                .extend_from_slice(&data[..wanted.min(data.len())]);
            if let [flag, a, b, c, d] = self.header[..] {
                if flag != 0 {
                    // tonic answers a compressed flag without an encoding
                    // with INTERNAL, as if the gateway had failed.
                    self.left = 0;
                    return Err(Status::from(malformed_request(format!(
                        "the message is marked compressed (flag {flag}); this gateway accepts \
                         uncompressed messages only (no grpc-encoding)"
                    ))));
                }
                if u32::from_be_bytes([a, b, c, d]) as usize > self.max {
                    return Err(self.too_large());
                }
            }
        }
        match self.left.checked_sub(data.len()) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => Err(self.too_large()),
        }
    }
}

impl<B> HttpBody for LimitedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let frame = match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            None => {
                this.arrived();
                return Poll::Ready(None);
            }
            Some(Err(e)) => {
                this.arrived();
                return Poll::Ready(Some(Err(Status::from_error(e.into()))));
            }
            Some(Ok(frame)) => frame,
        };
        if let Some(data) = frame.data_ref() {
            if let Err(status) = this.count(data) {
                this.arrived();
                return Poll::Ready(Some(Err(status)));
            }
        }
        // Trailers end a request; so does the end of the stream on the
        // frame just read.
        if frame.is_trailers() || this.inner.is_end_stream() {
            this.arrived();
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

settings_layer!(
    /// Ends calls at their deadline; see the module docs.
    DeadlineLayer,
    Deadline
);

/// tonic ends a call at its `grpc-timeout` itself, from outside every layer
/// and with CANCELLED; ending it this much earlier here answers with the
/// code the caller expects.
const AHEAD_OF_TONIC: Duration = Duration::from_millis(1);

impl<S, B> tower::Service<http::Request<B>> for Deadline<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let cap = self.settings.current().max_call;
        let asked = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| parse_grpc_timeout(v.as_bytes()));
        let budget = match asked {
            Some(asked) if asked < cap => asked.saturating_sub(AHEAD_OF_TONIC),
            _ => cap,
        };
        let call = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout(budget, call).await {
                Ok(response) => response,
                Err(_) => Ok(refusal(RequestError::DeadlineExceeded(format!(
                    "the call did not finish within its deadline ({} ms: its grpc-timeout, at most limits.max_call_ms)",
                    budget.as_millis()
                )))),
            }
        })
    }
}

/// Answers a request tonic could not decode as INVALID_ARGUMENT
/// `MALFORMED_REQUEST` naming what was wrong. tonic (with tonic-prost)
/// reports bad protobuf and a message cut short as INTERNAL, which tells
/// the caller the gateway failed and counts as a server error; the caller
/// sent bytes that are not the message. Only answers made before the
/// handler ran are rewritten: they carry no request id, which every
/// answer of `Core::call` does (an owner's status passed on included).
#[derive(Clone, Default)]
pub struct MalformedLayer;

impl<S> tower::Layer<S> for MalformedLayer {
    type Service = Malformed<S>;
    fn layer(&self, inner: S) -> Malformed<S> {
        Malformed { inner }
    }
}

/// See [`MalformedLayer`].
#[derive(Clone)]
pub struct Malformed<S> {
    inner: S,
}

/// tonic's messages for a request body it cannot decode.
const DECODE_FAILURES: [&str; 2] = [
    // prost's DecodeError, as tonic-prost passes it on.
    "failed to decode Protobuf message: ",
    // tonic: the body ended inside a length-prefixed message.
    "Unexpected EOF decoding stream",
];

/// The rewritten answer, when `response` is tonic's report of an
/// undecodable request.
fn malformed(response: &http::Response<Body>) -> Option<http::Response<Body>> {
    let headers = response.headers();
    if headers.get("grpc-status").map(|v| v.as_bytes()) != Some(b"13")
        || headers.contains_key(crate::service::REQUEST_ID_HEADER)
    {
        return None;
    }
    let status = Status::from_header_map(headers)?;
    let message = status.message();
    let prefix = DECODE_FAILURES.iter().find(|p| message.starts_with(*p))?;
    let what = match message[prefix.len()..].trim() {
        "" => "the request ended inside a message",
        what => what,
    };
    Some(refusal(malformed_request(format!(
        "not a well-formed message of this method: {what}"
    ))))
}

/// INVALID_ARGUMENT `MALFORMED_REQUEST`: the request's bytes are not a
/// message of the method, for the reason `what`.
fn malformed_request(what: String) -> RequestError {
    RequestError::InvalidArgument {
        reason: crate::error::reason::MALFORMED_REQUEST,
        violations: vec![crate::error::Violation::new("request", what)],
    }
}

impl<S, B> tower::Service<http::Request<B>> for Malformed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let call = self.inner.call(req);
        Box::pin(async move {
            let response = call.await?;
            Ok(malformed(&response).unwrap_or(response))
        })
    }
}

/// The value of a `grpc-timeout` header: 1 to 8 ASCII digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`), as the gRPC-over-HTTP/2 spec has it.
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_shed_answer_names_the_bound_in_force_when_it_is_given() {
        let max = Arc::new(AtomicUsize::new(2));
        let read = Arc::clone(&max);
        let layer = ShedLayer::new(Settings::new(move || Limits {
            max_in_flight: read.load(Ordering::Relaxed),
            ..Limits::default()
        }));
        let status = |max: usize| {
            let answer = layer.answer(max);
            assert_eq!(answer.status(), http::StatusCode::OK);
            assert_eq!(answer.headers()["content-type"], "application/grpc");
            Status::from_header_map(answer.headers()).expect("a grpc-status header")
        };
        for expected in [2, 2, 5, 2] {
            max.store(expected, Ordering::Relaxed);
            let shed = status(layer.settings.current().max_in_flight);
            assert_eq!(shed.code(), tonic::Code::Unavailable);
            assert!(
                shed.message()
                    .contains(&format!("({expected}, limits.max_in_flight)")),
                "{shed:?}"
            );
            let details = tonic_types::StatusExt::get_error_details(&shed);
            assert_eq!(
                details.error_info().map(|i| i.reason.as_str()),
                Some("OVERLOADED")
            );
            assert_eq!(
                details.retry_info().and_then(|r| r.retry_delay),
                Some(SHED_RETRY_AFTER)
            );
        }
    }

    #[test]
    fn grpc_timeouts_parse_as_the_spec_has_them() {
        for (text, want) in [
            ("1S", Some(Duration::from_secs(1))),
            ("250m", Some(Duration::from_millis(250))),
            ("2H", Some(Duration::from_secs(7200))),
            ("3M", Some(Duration::from_secs(180))),
            ("99999999u", Some(Duration::from_micros(99_999_999))),
            ("7n", Some(Duration::from_nanos(7))),
            ("123456789S", None),
            ("S", None),
            ("", None),
            ("1s", None),
            ("-1S", None),
            ("1.5S", None),
            (" 1S", None),
        ] {
            assert_eq!(parse_grpc_timeout(text.as_bytes()), want, "{text:?}");
        }
    }

    proptest! {
        /// Fuzzing the header parser: any bytes, never a panic, and what
        /// parses prints back to itself.
        #[test]
        fn fuzz_grpc_timeout(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            if let Some(d) = parse_grpc_timeout(&bytes) {
                prop_assert!(d <= Duration::from_secs(99_999_999 * 3600));
                prop_assert!(bytes.len() >= 2 && bytes.len() <= 9);
            }
        }
    }

    /// A body that never ends: the refusal waits for it at most
    /// `DRAIN_TIME`.
    struct Never;
    impl HttpBody for Never {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_refused_call_whose_body_never_ends_is_answered_after_its_wait() {
        let started = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(10), Drain::new(Never))
            .await
            .expect("the wait ends");
        assert!(started.elapsed() >= DRAIN_TIME);
    }

    #[test]
    fn a_body_is_refused_once_over_or_once_its_prefix_claims_more() {
        let body = |max| LimitedBody {
            inner: (),
            max,
            left: max + GRPC_FRAME_HEADER,
            header: Vec::new(),
            pending: None,
        };
        let frame = |len: u32| {
            let mut f = vec![0u8];
            f.extend_from_slice(&len.to_be_bytes());
            f
        };
        // The prefix claims more than allowed, in pieces or at once.
        let mut b = body(100);
        let claim = frame(101);
        assert!(b.count(&claim[..2]).is_ok());
        assert!(b.count(&claim[2..]).is_err());
        assert!(body(100).count(&frame(1 << 30)).is_err());
        // Up to the limit is fine; one byte beyond is not.
        let mut b = body(100);
        assert!(b.count(&frame(100)).is_ok());
        assert!(b.count(&[0; 100]).is_ok());
        assert!(b.count(&[0]).is_err());
    }

    fn settings(limits: impl FnOnce(&mut crate::config::Limits)) -> Settings {
        let dir = std::env::temp_dir();
        let mut config = Config::parse(
            "listen = \"127.0.0.1:0\"\ntrust_domain = \"t\"\ndata_dir = \"d\"\n[tls]\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"a\"\n",
            &dir.join("gateway.toml"),
        )
        .unwrap();
        limits(&mut config.limits);
        Settings::fixed(Arc::new(config))
    }

    /// A service that answers OK when `release` is notified.
    #[derive(Clone)]
    struct Held(Arc<tokio::sync::Notify>);

    impl<B> tower::Service<http::Request<B>> for Held {
        type Response = http::Response<Body>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Self::Response, Self::Error>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<B>) -> Self::Future {
            let release = Arc::clone(&self.0);
            Box::pin(async move {
                release.notified().await;
                Ok(Status::ok("").into_http())
            })
        }
    }

    fn code(response: &http::Response<Body>) -> Option<&str> {
        response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn calls_beyond_max_in_flight_are_shed_at_once_and_counted_back() {
        use tower::{Layer, Service, ServiceExt};
        let release = Arc::new(tokio::sync::Notify::new());
        let mut svc =
            ShedLayer::new(settings(|l| l.max_in_flight = 2)).layer(Held(release.clone()));
        let a = ServiceExt::<http::Request<Body>>::ready(&mut svc)
            .await
            .unwrap()
            .call(http::Request::new(Body::default()));
        let b = ServiceExt::<http::Request<Body>>::ready(&mut svc)
            .await
            .unwrap()
            .call(http::Request::new(Body::default()));
        let shed = ServiceExt::<http::Request<Body>>::ready(&mut svc)
            .await
            .unwrap()
            .call(http::Request::new(Body::default()))
            .await
            .unwrap();
        assert_eq!(code(&shed), Some("14"));
        let status = Status::from_header_map(shed.headers()).unwrap();
        use tonic_types::StatusExt;
        let details = status.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, "OVERLOADED");
        assert!(details.retry_info().unwrap().retry_delay.is_some());
        // Joined in order: both wait before they are released.
        let (a, b, ()) = tokio::join!(a, b, async { release.notify_waiters() });
        assert_eq!(code(&a.unwrap()), Some("0"));
        assert_eq!(code(&b.unwrap()), Some("0"));
        // Both slots are back.
        let c = ServiceExt::<http::Request<Body>>::ready(&mut svc)
            .await
            .unwrap()
            .call(http::Request::new(Body::default()));
        let d = ServiceExt::<http::Request<Body>>::ready(&mut svc)
            .await
            .unwrap()
            .call(http::Request::new(Body::default()));
        let (c, d, ()) = tokio::join!(c, d, async { release.notify_waiters() });
        assert_eq!(code(&c.unwrap()), Some("0"));
        assert_eq!(code(&d.unwrap()), Some("0"));
    }

    /// A request body that sends `chunks` after `after` polls, or never ends.
    struct Trickle {
        polls: usize,
        after: usize,
        chunks: Vec<Bytes>,
        ends: bool,
        ended: Arc<std::sync::atomic::AtomicBool>,
    }

    impl HttpBody for Trickle {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.polls += 1;
            if self.polls <= self.after {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match self.chunks.pop() {
                Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
                None if self.ends => {
                    self.ended.store(true, Ordering::Relaxed);
                    Poll::Ready(None)
                }
                None => Poll::Pending,
            }
        }
    }

    impl Trickle {
        /// `chunks` after `after` polls, then the end when `ends`.
        fn new(after: usize, chunks: Vec<Bytes>, ends: bool) -> Trickle {
            Trickle {
                polls: 0,
                after,
                chunks,
                ends,
                ended: Arc::default(),
            }
        }
    }

    #[tokio::test]
    async fn a_shed_answer_follows_its_body_but_never_waits_long_for_it() {
        use tower::{Layer, Service, ServiceExt};
        let release = Arc::new(tokio::sync::Notify::new());
        let mut svc =
            ShedLayer::new(settings(|l| l.max_in_flight = 1)).layer(Held(release.clone()));
        let held = ServiceExt::<http::Request<Trickle>>::ready(&mut svc)
            .await
            .unwrap()
            .call(http::Request::new(Trickle::new(0, Vec::new(), true)));
        let shed = |svc: &Shed<Held>, body: Trickle| {
            let svc = svc.clone();
            async move { svc.oneshot(http::Request::new(body)).await.unwrap() }
        };
        // The body comes a few polls later: the answer waits for its end.
        let body = Trickle::new(3, vec![Bytes::from_static(b"\0\0\0\0\x02\x0a\0")], true);
        let ended = Arc::clone(&body.ended);
        let answer = shed(&svc, body).await;
        assert_eq!(code(&answer), Some("14"));
        assert!(
            ended.load(Ordering::Relaxed),
            "answered before the body ended"
        );
        // A body that never ends: answered after DRAIN_TIME all the same.
        let started = tokio::time::Instant::now();
        let answer = shed(&svc, Trickle::new(0, Vec::new(), false)).await;
        assert_eq!(code(&answer), Some("14"));
        assert!(started.elapsed() >= DRAIN_TIME);
        // More than DRAIN_BYTES is not read to its end either.
        let big = vec![Bytes::from(vec![0u8; DRAIN_BYTES + 1])];
        let answer = shed(&svc, Trickle::new(0, big, false)).await;
        assert_eq!(code(&answer), Some("14"));
        let (held, ()) = tokio::join!(held, async { release.notify_waiters() });
        assert_eq!(code(&held.unwrap()), Some("0"));
    }

    #[tokio::test]
    async fn the_deadline_is_the_callers_capped_by_max_call() {
        use tower::{Layer, ServiceExt};
        let release = Arc::new(tokio::sync::Notify::new());
        let cap = Duration::from_millis(300);
        let svc = DeadlineLayer::new(settings(|l| l.max_call = cap)).layer(Held(release));
        for (header, want) in [
            (Some("50m"), Duration::from_millis(49)),
            (Some("1H"), cap),
            (None, cap),
            (Some("garbage"), cap),
        ] {
            let mut req = http::Request::new(());
            if let Some(h) = header {
                req.headers_mut().insert("grpc-timeout", h.parse().unwrap());
            }
            let started = tokio::time::Instant::now();
            let response = svc.clone().oneshot(req).await.unwrap();
            assert_eq!(code(&response), Some("4"), "{header:?}");
            // At its deadline, not before; never anywhere near the hour.
            let took = started.elapsed();
            assert!(
                took >= want && took < Duration::from_secs(60),
                "{header:?}: {took:?}"
            );
        }
    }
}
