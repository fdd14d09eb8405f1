//! The `grpc.health.v1.Health` service as the gateway serves it:
//! tonic-health's, except that a `Watch` stream ends once the gateway
//! drains. A watch never ends by itself, and a drain waits for every open
//! stream: one load balancer or probe following health would hold every
//! stop for the whole `drain_timeout_ms`. A watcher still gets the
//! NOT_SERVING the drain sets, then the stream ends with UNAVAILABLE.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tonic_health::{
    pb::{
        health_check_response::ServingStatus, health_server::Health, HealthCheckRequest,
        HealthCheckResponse,
    },
    server::{HealthReporter, HealthService},
};

/// tonic-health's service, whose watches end at the stop signal.
pub struct DrainingHealth {
    inner: HealthService,
    stopping: watch::Receiver<bool>,
}

impl DrainingHealth {
    /// Serves the statuses `reporter` sets; watches end once `stopping`
    /// turns true and the watched status is NOT_SERVING.
    pub fn new(reporter: HealthReporter, stopping: watch::Receiver<bool>) -> Self {
        Self {
            inner: HealthService::from_health_reporter(reporter),
            stopping,
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

/// A watch that ends after the NOT_SERVING of a drain.
struct Watching {
    inner: WatchStream,
    /// The stop signal's values, the current one first.
    stop: tokio_stream::wrappers::WatchStream<bool>,
    stopped: bool,
    /// The last status sent was NOT_SERVING.
    not_serving: bool,
    ended: bool,
}

impl Stream for Watching {
    type Item = Result<HealthCheckResponse, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            if this.stopped && this.not_serving {
                this.ended = true;
                return Poll::Ready(Some(Err(Status::unavailable(
                    "the gateway is shutting down; watch another instance",
                ))));
            }
            if !this.stopped {
                match Pin::new(&mut this.stop).poll_next(cx) {
                    Poll::Ready(Some(false)) => continue,
                    // Stopping, or the signal is gone (the server stopped).
                    Poll::Ready(_) => {
                        this.stopped = true;
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            return match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(item)) => {
                    if let Ok(status) = &item {
                        this.not_serving = status.status == ServingStatus::NotServing as i32;
                    }
                    Poll::Ready(Some(item))
                }
                other => other,
            };
        }
    }
}

#[tonic::async_trait]
impl Health for DrainingHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let inner = self.inner.watch(request).await?.into_inner();
        Ok(Response::new(Box::pin(Watching {
            inner: Box::pin(inner),
            stop: tokio_stream::wrappers::WatchStream::new(self.stopping.clone()),
            stopped: false,
            not_serving: false,
            ended: false,
        })))
    }
}
