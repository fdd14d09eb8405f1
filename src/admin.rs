//! The admin listener (`[admin] listen`): plain HTTP/1.1 for the operator's
//! tools, on its own address and never on the mTLS gRPC port. It owns three
//! paths and nothing else:
//!
//! - `GET /metrics`: [`Metrics::render`], the Prometheus text format;
//! - `GET /readyz`: 200 while the gateway serves, 503 while it drains (its
//!   stop signal is set) or while the access log cannot be written
//!   ([`Readiness`]);
//! - `GET /livez`: 200 while the process runs.
//!
//! It discloses no registry data and takes no input but the path, so it has
//! no authentication of its own: bind it to loopback or a management network.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use http::{header, Method, Request, Response, StatusCode};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::metrics::{Metrics, CONTENT_TYPE};

/// Admin connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 32;
/// A request's headers must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the gateway should be sent traffic. Reads two signals and
/// nothing else: the server's stop signal (true from the moment a shutdown
/// or drain starts) and the access log's health.
#[derive(Clone, Debug)]
pub struct Readiness {
    stopping: watch::Receiver<bool>,
    audit_healthy: watch::Receiver<bool>,
}

impl Readiness {
    pub fn new(stopping: watch::Receiver<bool>, audit_healthy: watch::Receiver<bool>) -> Self {
        Self {
            stopping,
            audit_healthy,
        }
    }

    /// `Ok` when ready, else why not.
    pub fn check(&self) -> Result<(), &'static str> {
        if *self.stopping.borrow() {
            Err("draining: the gateway is shutting down")
        } else if !*self.audit_healthy.borrow() {
            Err("the access log cannot be written; calls fail closed")
        } else {
            Ok(())
        }
    }

    /// Whether the access log can be written right now.
    pub fn audit_healthy(&self) -> bool {
        *self.audit_healthy.borrow()
    }
}

/// What the admin listener answers from.
pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
}

/// Serves `admin` on `listener` until the task is aborted.
pub fn serve(listener: TcpListener, admin: Arc<Admin>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(target: "interop_gateway::admin", error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let admin = Arc::clone(&admin);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let admin = Arc::clone(&admin);
                    async move { Ok::<_, Infallible>(answer(&admin, &req)) }
                });
                // One request per connection: a scraper's idle connection
                // never holds one of the slots.
                let served = hyper::server::conn::http1::Builder::new()
                    .keep_alive(false)
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!(target: "interop_gateway::admin", %peer, error = %e, "admin connection ended");
                }
                drop(permit);
            });
        }
    })
}

/// Binds the admin address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

fn text(status: StatusCode, body: String) -> Response<String> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The answer to one admin request.
pub fn answer<B>(admin: &Admin, req: &Request<B>) -> Response<String> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served here\n".into(),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match req.uri().path() {
        "/metrics" => {
            let body = admin.metrics.render(admin.readiness.audit_healthy());
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(CONTENT_TYPE),
            );
            response
        }
        "/readyz" => match admin.readiness.check() {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        "/livez" => text(StatusCode::OK, "live\n".into()),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: this listener serves /metrics, /readyz and /livez\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_reads_the_stop_signal_and_the_log_health() {
        let (stop, stopping) = watch::channel(false);
        let (log, healthy) = watch::channel(true);
        let admin = Admin {
            metrics: Arc::new(Metrics::new()),
            readiness: Readiness::new(stopping, healthy),
        };
        let get = |path: &str| {
            answer(
                &admin,
                &Request::get(path).body(()).expect("a valid request"),
            )
            .status()
        };
        assert_eq!(get("/readyz"), StatusCode::OK);
        log.send_replace(false);
        assert_eq!(get("/readyz"), StatusCode::SERVICE_UNAVAILABLE);
        log.send_replace(true);
        assert_eq!(get("/readyz"), StatusCode::OK);
        stop.send_replace(true);
        assert_eq!(get("/readyz"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(get("/livez"), StatusCode::OK);
        assert_eq!(get("/metrics"), StatusCode::OK);
        assert_eq!(get("/other"), StatusCode::NOT_FOUND);
        let post = Request::post("/metrics").body(()).expect("a valid request");
        assert_eq!(
            answer(&admin, &post).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
