//! Riemann protobuf over TCP: the listener, its connection limit, and each connection's two
//! halves.
//!
//! Riemann clients pipeline (the Java client keeps up to 8192 messages in flight and matches
//! replies FIFO), so each connection runs two halves that overlap: the reader decodes frames and
//! hands batches to the engine (the event-only `Msg`s of one read as one batch with one
//! acknowledgement), queueing reply slots in request order; the writer
//! waits for each slot in turn and writes replies in batches, flushing only when nothing more is
//! ready. The reply queue is bounded: a client that never reads replies stops being read.
//!
//! Every connection is bounded in time and memory: one that sends no first frame within
//! `first_frame_timeout`, leaves a started frame unfinished for `frame_timeout`, or sends no frame
//! for `idle_timeout` is closed (connections are a limited resource), one whose replies make no
//! progress for `write_timeout` is dropped, at most [`reader::QUERIES_IN_FLIGHT`] query replies (each
//! a whole-index snapshot until encoded) wait per connection, and a Msg is checked against
//! [`EventLimits`] on the wire before it is decoded.
//!
//! The TLS listener (`--tls-tcp`) runs the same connections over a TLS session (see
//! [`crate::tls`]), with the same limits. During its handshake a TLS connection holds only a
//! slot of its own budget (`max_tls_handshakes`); it takes a slot of the shared connection limit
//! once the handshake is done. Sockets that open and never handshake (1,100 of them once kept
//! every plain client out for the handshake timeout) are refused past that budget and never
//! touch the plain port's slots. Refusals are logged at most once per
//! [`crate::rate_limited_log::INTERVAL`], with the count.
//!
//! This module owns the listener (accept, back-off, the connection limit, shutdown) and starts
//! each connection's halves: [`reader`] (framing, batching what one read brings, limits) and
//! [`writer`] (replies in request order, the two-stage acknowledgements, the write timeout). They
//! talk through one bounded queue of [`writer::Reply`] slots. Nothing here knows the wire format
//! (that is [`super::frame`]) or what an event means downstream (that is the engine's).

mod reader;
mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use self::reader::ReadEnd;
use self::writer::{write_replies, Link};
use crate::engine::EngineHandle;
use crate::event::EventLimits;
use crate::lifecycle::Lifecycle;
use crate::metrics::Counters;
use crate::rate_limited_log::RateLimitedLog;
use crate::tls::TlsAcceptor;

#[derive(Debug, Clone)]
pub(crate) struct TcpConfig {
    pub max_frame_bytes: usize,
    pub max_connections: usize,
    /// TLS handshakes in progress at once (`--max-tls-handshakes`), apart from `max_connections`.
    pub max_tls_handshakes: usize,
    pub max_in_flight: usize,
    /// Bounds on each Msg, checked before it is decoded.
    pub limits: EventLimits,
    /// A connection that sends no whole frame for this long between frames is closed.
    pub idle_timeout: Duration,
    /// A new connection must send its first whole frame within this.
    pub first_frame_timeout: Duration,
    /// A frame, once started, must arrive whole within this.
    pub frame_timeout: Duration,
    /// A client whose replies make no progress for this long is dropped.
    pub write_timeout: Duration,
    /// Whether queries are answered (the port has no authentication).
    pub queries: bool,
}

/// The error a query gets with `--tcp-queries off`.
const QUERIES_DISABLED: &str = "queries are disabled on this port (--tcp-queries off)";

/// How long a connection closed for bad input keeps draining the peer's input.
const LINGER: Duration = Duration::from_secs(1);

/// What every Riemann TCP listener, plain and TLS, shares: the settings, the engine, one
/// connection limit (a TLS connection takes its slot once its handshake is done), the TLS
/// handshake budget, the refusal log's rate limit, and the server's lifecycle (shutdown, the
/// forced stop at the end of the grace period, task tracking, counters).
#[derive(Clone)]
pub(crate) struct Shared {
    pub config: TcpConfig,
    pub engine: EngineHandle,
    pub permits: Arc<Semaphore>,
    /// TLS handshakes in progress.
    pub handshakes: Arc<Semaphore>,
    pub refusals: Arc<RateLimitedLog>,
    pub life: Lifecycle,
}

impl Shared {
    pub(crate) fn new(config: TcpConfig, engine: EngineHandle, life: &Lifecycle) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(config.max_connections)),
            handshakes: Arc::new(Semaphore::new(config.max_tls_handshakes)),
            refusals: Arc::default(),
            config,
            engine,
            life: life.clone(),
        }
    }
}

/// Accepts connections until shutdown (over TLS when `tls` is given); each runs in its own task
/// tracked by the lifecycle. After shutdown, connections answer what they have read; the forced
/// stop ends those still running.
pub(crate) async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Shared) {
    let what = if tls.is_some() {
        "riemann tls"
    } else {
        "riemann tcp"
    };
    loop {
        let accepted = tokio::select! {
            _ = shared.life.shutdown().cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Usually EMFILE: back off instead of spinning on a hot error.
                if let Some(skipped) = shared.refusals.due() {
                    tracing::warn!(%error, not_logged_since_last_line = skipped, "{what} accept failed");
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        match &tls {
            None => {
                let Some(permit) = shared.admit(peer, what) else {
                    continue;
                };
                Counters::add(&shared.life.counters().tcp_connections, 1);
                let shared = shared.clone();
                let tasks = shared.life.tasks().clone();
                tasks.spawn(async move {
                    let (read, write) = socket.into_split();
                    shared.run_connection(peer, what, read, write).await;
                    drop(permit);
                });
            }
            Some(tls) => {
                let Ok(handshake) = Arc::clone(&shared.handshakes).try_acquire_owned() else {
                    Counters::add(&shared.life.counters().tls_handshakes_refused, 1);
                    if let Some(skipped) = shared.refusals.due() {
                        tracing::warn!(%peer, limit = shared.config.max_tls_handshakes, not_logged_since_last_line = skipped, "{what}: too many TLS handshakes in progress (--max-tls-handshakes); closing new connections");
                    }
                    continue;
                };
                Counters::add(&shared.life.counters().tcp_connections, 1);
                let (shared, tls) = (shared.clone(), tls.clone());
                let tasks = shared.life.tasks().clone();
                tasks.spawn(async move {
                    let stream = tokio::select! {
                        _ = shared.life.shutdown().cancelled() => return,
                        stream = tls.accept(socket, peer, "riemann") => stream,
                    };
                    drop(handshake);
                    let Some(stream) = stream else {
                        Counters::add(&shared.life.counters().tls_handshakes_failed, 1);
                        return;
                    };
                    let Some(permit) = shared.admit(peer, what) else {
                        return;
                    };
                    // The halves of `tokio::io::split` share one TLS session.
                    let (read, write) = tokio::io::split(stream);
                    shared.run_connection(peer, what, read, write).await;
                    drop(permit);
                });
            }
        }
    }
}

impl Shared {
    /// A slot of the connection limit, or `None` (counted, logged at most every 10 s) when
    /// every slot is taken; the caller then drops the connection.
    fn admit(&self, peer: SocketAddr, what: &str) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
            return Some(permit);
        }
        Counters::add(&self.life.counters().tcp_refused, 1);
        if let Some(skipped) = self.refusals.due() {
            tracing::warn!(
                %peer,
                limit = self.config.max_connections,
                not_logged_since_last_line = skipped,
                "{what} connection limit reached (--max-tcp-connections); closing new connections"
            );
        }
        None
    }

    /// Runs one admitted connection until it ends, or until the forced stop (the shutdown grace
    /// ran out).
    async fn run_connection<R, W>(&self, peer: SocketAddr, what: &str, read: R, write: W)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let connection = Connection {
            config: self.config.clone(),
            // Its own handle: its inputs take effect in the order it sent them (cluster mode).
            engine: self.engine.for_connection(),
            counters: Arc::clone(self.life.counters()),
            peer,
        };
        tokio::select! {
            _ = connection.run(read, write, self.life.shutdown().clone()) => {}
            _ = self.life.force_stop().cancelled() => {
                tracing::warn!(%peer, "{what} connection still busy at the end of the shutdown grace period; closing it");
            }
        }
    }
}

/// One accepted connection: what both halves need.
struct Connection {
    config: TcpConfig,
    engine: EngineHandle,
    counters: Arc<Counters>,
    peer: SocketAddr,
}

impl Connection {
    async fn run<R, W>(self, mut read: R, write: W, shutdown: CancellationToken)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (replies_tx, replies_rx) = mpsc::channel(self.config.max_in_flight.max(1));
        let peer = self.peer;
        let link = Link {
            peer,
            write_timeout: self.config.write_timeout,
            counters: Arc::clone(&self.counters),
        };
        // Aborted if this connection is dropped (forced to end at shutdown) before it finishes.
        let mut writer = AbortOnDrop(tokio::spawn(write_replies(
            write,
            replies_rx,
            link,
            self.config.max_frame_bytes,
            Arc::clone(&self.counters),
        )));
        let ended = self.read_requests(&mut read, replies_tx, shutdown).await;
        // The reader is done (EOF, bad input or shutdown); the writer answers what is in flight
        // and then closes.
        let _ = (&mut writer.0).await;
        if ended == ReadEnd::Fatal {
            // Closing a socket with unread input makes the kernel send RST, which can destroy the
            // error reply before the client reads it. Drain briefly so the client sees why.
            let mut sink = [0u8; 8192];
            let _ = tokio::time::timeout(LINGER, async {
                while matches!(read.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
        }
        tracing::debug!(%peer, "riemann tcp connection closed");
    }
}

/// A spawned task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
