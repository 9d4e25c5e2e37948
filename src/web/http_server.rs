//! The HTTP accept loop: a connection cap, header and idle timeouts, a write-stall timeout, and
//! graceful shutdown.
//!
//! `axum::serve` has none of the limits: a client trickling its headers held a connection
//! forever, and a few thousand idle ones held that many file descriptors, which Riemann ingest
//! needs too. Here each connection is served by hyper's HTTP/1 server directly:
//! - `--http-header-timeout`: a request's headers must arrive within it, counted from the
//!   connection or the previous response on, so it also closes idle keep-alive connections;
//! - `--http-body-timeout`: bounds the body read (in the handler) and any response write that
//!   makes no progress ([`StallTimeout`]): a client that stops reading is closed;
//! - `--max-http-connections`: past it a new connection gets a short 503 and is closed, with a
//!   log line at most every [`crate::rate_limited_log::INTERVAL`]. An upgraded websocket leaves this count
//!   for the websocket limit.
//!
//! With `--https` every connection first completes a TLS handshake (see [`crate::tls`]) and is
//! then served the same way over the TLS stream.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Counters;
use crate::rate_limited_log::RateLimitedLog;
use crate::tls::TlsAcceptor;

/// After an accept error (EMFILE: out of descriptors) the loop waits this long before the next
/// accept instead of spinning on the same error.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub write_stall_timeout: Duration,
}

/// Accepts until `shutdown`; each connection is a task on `tasks`, which finishes the request in
/// flight on shutdown and then closes — or is dropped at `force_stop` (the shutdown grace ran
/// out), so a client that never reads its response cannot hold up the engine's final write.
/// With `tls` (`--https`) each connection first completes a TLS handshake, within the handshake
/// timeout, holding its connection slot meanwhile.
#[allow(clippy::too_many_arguments)] // one per concern; a struct would only rename them
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: HttpLimits,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
    force_stop: CancellationToken,
    tasks: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = RateLimitedLog::default();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if let Some(skipped) = refusals.due() {
                        tracing::warn!(%error, skipped, "http accept failed");
                    }
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            Counters::add(&counters.http_refused, 1);
            if let Some(skipped) = refusals.due() {
                tracing::warn!(
                    %peer,
                    limit = limits.max_connections,
                    refused_since_last_line = skipped,
                    "http connection limit reached (--max-http-connections); refusing new connections"
                );
            }
            // A TLS client cannot read a plain 503: it only gets the close.
            if tls.is_none() {
                refuse(stream);
            }
            continue;
        };
        // Websocket frames are small and latency-sensitive: without TCP_NODELAY, Nagle holds
        // each one back until the browser's delayed ACK arrives.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let router = router.clone();
        let shutdown = shutdown.clone();
        let force_stop = force_stop.clone();
        let tls = tls.clone();
        tasks.spawn(async move {
            match tls {
                None => serve_connection(stream, peer, router, limits, shutdown, force_stop).await,
                Some(tls) => {
                    let handshake = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        handshake = tls.accept(stream, peer, "http") => handshake,
                    };
                    if let Some(stream) = handshake {
                        serve_connection(stream, peer, router, limits, shutdown, force_stop).await;
                    }
                }
            }
            drop(permit);
        });
    }
}

async fn serve_connection<S>(
    stream: S,
    peer: std::net::SocketAddr,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
    force_stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(StallTimeout::new(stream, limits.write_stall_timeout));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let connection = builder
        .serve_connection(io, TowerToHyperService::new(with_peer(router, peer)))
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        _ = shutdown.cancelled() => {
            // Finish the response in flight, then close; websockets have their own shutdown.
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                served = connection.as_mut() => served,
                _ = force_stop.cancelled() => return,
            }
        }
    };
    if let Err(error) = served {
        // Timeouts, resets and malformed requests: routine for a server on a network.
        tracing::debug!(%error, "http connection ended");
    }
}

/// The router, with each request marked with the connection's peer address (axum's `ConnectInfo`),
/// which `--trusted-proxy` decides on.
fn with_peer<B>(
    router: Router,
    peer: std::net::SocketAddr,
) -> impl tower::Service<
    hyper::Request<B>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    tower::ServiceExt::map_request(router, move |mut request: hyper::Request<B>| {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        request
    })
}

/// The answer past the connection limit, written without waiting: the socket's send buffer is
/// empty, and a peer that cannot take 150 bytes gets only the close.
fn refuse(stream: TcpStream) {
    const BODY: &str = r#"{"ok":false,"error":"too many http connections"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 5\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

/// A socket whose writes fail with `TimedOut` once they have made no progress for `limit`: a
/// client that sends a request and never reads the answer does not hold its connection (and its
/// response, e.g. a snapshot) forever.
struct StallTimeout<S> {
    inner: S,
    limit: Duration,
    /// Armed while a write waits for the peer.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> StallTimeout<S> {
    fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {limit:?} (--http-body-timeout)"),
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_the_peer_never_reads_times_out() {
        use tokio::io::AsyncWriteExt;
        let (client, server) = tokio::io::duplex(1024);
        let mut stalled = StallTimeout::new(server, Duration::from_millis(50));
        let written = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                stalled.write_all(&[0u8; 4096]).await?;
            }
            #[allow(unreachable_code)]
            Ok::<(), io::Error>(())
        })
        .await
        .expect("the stall timeout fired");
        assert_eq!(written.unwrap_err().kind(), io::ErrorKind::TimedOut);
        drop(client);
    }
}
