//! Health, readiness and metrics on a plain port.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::Result;
use crate::metrics::Metrics;

/// `/healthz`, `/readyz` (once the caches are synced) and `/metrics`, until `shutdown`.
pub(crate) async fn serve(
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::Relaxed);
                async move {
                    if ready {
                        (axum::http::StatusCode::OK, "ok")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                // The content type of the format the encoder writes, so that
                // Prometheus parses it as OpenMetrics.
                async move { ([(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], m.render()) }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(crate::io(format!("binding {addr}")))?;
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.map_err(crate::io("health server"))
}
