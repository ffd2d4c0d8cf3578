//! The admin listener: `/health` (the process runs), `/ready` (discovery is synced and fresh,
//! in OIDC mode the provider's keys are loaded, and the gateway is not draining) and `/metrics` (Prometheus). Never on the public port.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::body::Body;
use crate::discovery::Store;
use crate::respond::Own;

/// What the admin endpoints report on.
#[derive(Debug)]
pub struct Admin {
    pub store: Arc<Store>,
    pub metrics: PrometheusHandle,
    /// OIDC mode: not ready until the provider's keys are loaded.
    pub jwks: Option<Arc<crate::identity::jwks::Jwks>>,
    pub draining: AtomicBool,
    /// Log lines dropped so far (the log queue lives in `telemetry`, above this layer).
    pub log_lines_dropped: fn() -> u64,
}

impl Admin {
    fn answer<B>(&self, request: &Request<B>) -> Response<Body> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n",
                "text/plain; charset=utf-8",
            );
        }
        match request.uri().path() {
            "/health" => text(StatusCode::OK, "OK", "text/plain; charset=utf-8"),
            "/ready" => {
                let ready = self.store.is_usable(Instant::now())
                    && self.jwks.as_ref().is_none_or(|jwks| jwks.is_loaded())
                    && !self.draining.load(Ordering::Relaxed);
                if ready {
                    text(StatusCode::OK, "ready\n", "text/plain; charset=utf-8")
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready\n",
                        "text/plain; charset=utf-8",
                    )
                }
            }
            "/metrics" => text(
                StatusCode::OK,
                {
                    metrics::counter!(crate::metrics::LOG_LINES_DROPPED)
                        .absolute((self.log_lines_dropped)());
                    self.metrics.render()
                },
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found\n",
                "text/plain; charset=utf-8",
            ),
        }
    }
}

fn text(
    status: StatusCode,
    body: impl Into<bytes::Bytes>,
    content_type: &'static str,
) -> Response<Body> {
    Own::new(status).body(content_type, body).into_response()
}

/// Serves the admin endpoints until `shutdown` fires.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let admin = Arc::clone(&admin);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = admin.answer(&request);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
