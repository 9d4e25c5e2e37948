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
//! [`crate::tls`]), with the same limits, and counts against the same connection limit.
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
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::reader::ReadEnd;
use self::writer::{write_replies, Link};
use crate::engine::EngineHandle;
use crate::event::EventLimits;
use crate::metrics::Counters;
use crate::tls::TlsAcceptor;

#[derive(Debug, Clone)]
pub(crate) struct TcpConfig {
    pub max_frame_bytes: usize,
    pub max_connections: usize,
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
/// connection limit (a TLS connection holds a slot of `--max-tcp-connections` from accept on,
/// through its handshake) and shutdown.
#[derive(Clone)]
pub(crate) struct Shared {
    pub config: TcpConfig,
    pub engine: EngineHandle,
    pub counters: Arc<Counters>,
    pub permits: Arc<Semaphore>,
    pub shutdown: CancellationToken,
    /// Heard by connections still running when the shutdown grace ends.
    pub force: CancellationToken,
    pub tasks: TaskTracker,
}

impl Shared {
    pub(crate) fn new(
        config: TcpConfig,
        engine: EngineHandle,
        counters: Arc<Counters>,
        shutdown: CancellationToken,
        force: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(config.max_connections)),
            config,
            engine,
            counters,
            shutdown,
            force,
            tasks,
        }
    }
}

/// Accepts connections until shutdown (over TLS when `tls` is given); each runs in its own task
/// tracked by `shared.tasks`. After shutdown, connections answer what they have read; `force`
/// ends those still running.
pub(crate) async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Shared) {
    let what = if tls.is_some() {
        "riemann tls"
    } else {
        "riemann tcp"
    };
    let Shared {
        config,
        engine,
        counters,
        permits,
        shutdown,
        force,
        tasks,
    } = shared;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Usually EMFILE: back off instead of spinning on a hot error.
                tracing::warn!(%error, "{what} accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            Counters::add(&counters.tcp_refused, 1);
            tracing::warn!(%peer, limit = config.max_connections, "{what} connection limit reached (--max-tcp-connections); closing new connection");
            drop(socket);
            continue;
        };
        Counters::add(&counters.tcp_connections, 1);
        let _ = socket.set_nodelay(true);
        let connection = Connection {
            config: config.clone(),
            engine: engine.clone(),
            counters: Arc::clone(&counters),
            peer,
        };
        let shutdown = shutdown.clone();
        let force = force.clone();
        let tls = tls.clone();
        tasks.spawn(async move {
            tokio::select! {
                _ = connection.start(socket, tls, shutdown) => {}
                _ = force.cancelled() => {
                    tracing::warn!(%peer, "{what} connection still busy at the end of the shutdown grace period; closing it");
                }
            }
            drop(permit);
        });
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
    /// Runs the connection, after the TLS handshake when `tls` is given. The halves are the
    /// socket's own for plain TCP (no lock between them) and `tokio::io::split`'s for TLS, whose
    /// reads and writes share one session.
    async fn start(self, socket: TcpStream, tls: Option<TlsAcceptor>, shutdown: CancellationToken) {
        let Some(tls) = tls else {
            let (read, write) = socket.into_split();
            return self.run(read, write, shutdown).await;
        };
        let handshake = tokio::select! {
            _ = shutdown.cancelled() => return,
            handshake = tls.accept(socket, self.peer, "riemann") => handshake,
        };
        if let Some(stream) = handshake {
            let (read, write) = tokio::io::split(stream);
            self.run(read, write, shutdown).await;
        }
    }

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
