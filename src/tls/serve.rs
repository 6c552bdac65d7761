//! axum over rustls: accept loop, TLS handshakes, HTTP/1.1 + HTTP/2, graceful shutdown.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A handshake that takes longer than this is abandoned (and counted as failed).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// On shutdown, in-flight requests get this long to finish.
const GRACE: Duration = Duration::from_secs(20);

/// Counters of the TLS server, readable by tests and `/metrics`.
#[derive(Debug, Default)]
pub struct TlsStats {
    handshakes: AtomicU64,
    failed_handshakes: AtomicU64,
}

impl TlsStats {
    /// The counters [`serve`] writes to.
    pub fn global() -> &'static Arc<TlsStats> {
        static GLOBAL: LazyLock<Arc<TlsStats>> = LazyLock::new(Arc::default);
        &GLOBAL
    }

    /// Completed TLS handshakes.
    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(Ordering::Relaxed)
    }

    /// Failed (or timed out) TLS handshakes.
    pub fn failed_handshakes(&self) -> u64 {
        self.failed_handshakes.load(Ordering::Relaxed)
    }
}

/// Failed TLS handshakes counted by [`serve`] since the process started.
pub fn failed_handshakes() -> u64 {
    TlsStats::global().failed_handshakes()
}

/// Serves `router` over TLS on `listener` until `shutdown` completes, then stops
/// accepting and lets in-flight requests finish (up to 20 s). Counts into
/// [`TlsStats::global`].
pub async fn serve(
    router: axum::Router,
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) {
    serve_with_stats(router, listener, config, shutdown, TlsStats::global().clone()).await
}

/// [`serve`], counting into `stats`.
pub async fn serve_with_stats(
    router: axum::Router,
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
    stats: Arc<TlsStats>,
) {
    let acceptor = TlsAcceptor::from(config);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true).timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Duration::from_secs(30));
    let graceful = GracefulShutdown::new();
    let local = listener.local_addr().ok();
    tracing::info!(addr = ?local, "webhook TLS server listening");
    let mut shutdown = std::pin::pin!(shutdown);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let router = router.clone();
        let stats = stats.clone();
        tasks.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    stats.failed_handshakes.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    stats.failed_handshakes.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, "TLS handshake timed out after {HANDSHAKE_TIMEOUT:?}");
                    return;
                }
            };
            stats.handshakes.fetch_add(1, Ordering::Relaxed);
            let service = TowerToHyperService::new(router);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service).into_owned();
            if let Err(error) = watcher.watch(conn).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(addr = ?local, connections = graceful.count(), "webhook TLS server draining");
    if tokio::time::timeout(GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after {GRACE:?}; closing them");
    }
    tasks.shutdown().await;
}
