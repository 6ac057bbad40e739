//! The HTTP server loop of every role's HTTP port, with the limits `axum::serve` lacks: a
//! header read timeout (slow or trickled headers are cut off) and `TCP_NODELAY` (streamed
//! answers are many small writes).

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::limits::HEADER_READ_TIMEOUT;

/// Serves `router` on `listener` until the task is dropped; each connection is served on
/// its own task, and a connection whose request headers do not arrive within
/// [`HEADER_READ_TIMEOUT`] is closed.
pub async fn serve(listener: TcpListener, router: Router) {
    serve_with(listener, router, HEADER_READ_TIMEOUT).await
}

/// [`serve`] with another header read timeout.
pub async fn serve_with(listener: TcpListener, router: Router, header_read_timeout: Duration) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: wait a little instead of spinning.
                warn!(error = %e, "cannot accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            warn!(error = %e, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                .await
            {
                debug!(%peer, error = %e, "HTTP connection ended");
            }
        });
    }
}
