//! The accept loop: HTTP/1.1 through hyper with bounded headers, a header read timeout and a
//! cap on concurrent connections (request connections plus event streams: see the module
//! docs of `server`, "Bounds").

use std::io;
use std::sync::Arc;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{
    ACCEPT_ERROR_PAUSE, HEADER_READ_TIMEOUT, MAX_BUF_SIZE, MAX_HEADERS, MAX_HEADER_SIZE,
    SHUTDOWN_GRACE,
};

/// Serves `router` on `listener`, at most `max_connections` connections at once, until
/// `shutdown` is cancelled, then stops accepting, lets the connections finish their current
/// response (up to [`SHUTDOWN_GRACE`]) and closes the rest.
///
/// `max_connections` is the request budget plus the event stream limit: the router refuses
/// streams beyond its limit, so the connections holding streams never use up the request
/// budget.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    max_connections: usize,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_BUF_SIZE)
        .max_header_size(MAX_HEADER_SIZE)
        .max_headers(MAX_HEADERS);
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        // At the cap, stop accepting: new connections wait in the kernel's backlog.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    if !is_connection_error(&error) {
                        // Out of file descriptors and the like: pause rather than spin.
                        tracing::warn!(%error, "ops server: accept failed");
                        tokio::select! {
                            () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                            () = shutdown.cancelled() => break,
                        }
                    }
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = builder.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "ops server: connection ended with an error");
                    }
                }
                () = shutdown.cancelled() => {
                    // Finish the response in progress, then close.
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!("ops server: closing connections still open after the grace period");
    }
    connections.shutdown().await;
}

/// Errors about one connection, which say nothing about the listener.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
