//! Connections the handlers can kill: how the mock resets a connection without a response.
//!
//! Every accepted stream is wrapped in a [`Conn`] sharing a [`Killer`] with the requests it
//! carries (as their `ConnectInfo`). Killing it makes the next read or write fail, so hyper
//! drops the connection before writing the response; with `SO_LINGER` 0 the socket is closed
//! with a TCP reset.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Accepts TCP connections as [`Conn`]s.
#[derive(Debug)]
pub(super) struct KillableListener(pub(super) TcpListener);

impl Listener for KillableListener {
    type Io = Conn;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Conn, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    // Chunks must leave at once; failing to set this only delays them.
                    let _ = stream.set_nodelay(true);
                    let conn = Conn {
                        stream,
                        killer: Killer::default(),
                    };
                    return (conn, addr);
                }
                Err(e) => {
                    // Per-connection errors (aborted handshakes) and resource exhaustion:
                    // back off briefly and keep accepting.
                    tracing::debug!(error = %e, "mock LLM server: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// Kills the connection a request arrived on.
#[derive(Debug, Clone, Default)]
pub(super) struct Killer(Arc<AtomicBool>);

impl Killer {
    /// The connection fails its next read or write and closes with a reset.
    pub(super) fn kill(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn killed(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl Connected<IncomingStream<'_, KillableListener>> for Killer {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Killer {
        stream.io().killer.clone()
    }
}

/// An accepted TCP stream that can be killed.
#[derive(Debug)]
pub(super) struct Conn {
    stream: TcpStream,
    killer: Killer,
}

impl Conn {
    /// `Some(error)` once killed, after arranging for the socket to close with a reset.
    fn check(&self) -> Option<io::Error> {
        if !self.killer.killed() {
            return None;
        }
        // SO_LINGER 0: closing sends RST rather than FIN. (`set_linger` is deprecated only
        // because non-zero values block; zero does not. Best effort: a FIN also ends it.)
        #[allow(deprecated)]
        let _ = self.stream.set_linger(Some(Duration::ZERO));
        Some(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "mock LLM server: connection reset by fault",
        ))
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.check() {
            Some(e) => Poll::Ready(Err(e)),
            None => Pin::new(&mut this.stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.check() {
            Some(e) => Poll::Ready(Err(e)),
            None => Pin::new(&mut this.stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.check() {
            Some(e) => Poll::Ready(Err(e)),
            None => Pin::new(&mut this.stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.check() {
            Some(e) => Poll::Ready(Err(e)),
            None => Pin::new(&mut this.stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.check() {
            Some(_) => Poll::Ready(Ok(())),
            None => Pin::new(&mut this.stream).poll_shutdown(cx),
        }
    }
}
