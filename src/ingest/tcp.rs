//! Riemann protobuf over TCP: the listener and the per-connection pipeline.
//!
//! Riemann clients pipeline (the Java client keeps up to 8192 messages in flight and matches
//! replies FIFO), so each connection runs two halves that overlap: the reader decodes frames and
//! hands batches to the engine (the event-only `Msg`s of one read as one batch with one
//! acknowledgement), queueing reply slots in request order; the writer
//! waits for each slot in turn and writes replies in batches, flushing only when nothing more is
//! ready. The reply queue is bounded: a client that never reads replies stops being read.
//!
//! Every connection is bounded in time and memory: one that sends no frame for
//! `idle_timeout` is closed (connections are a limited resource), one whose replies make no
//! progress for `write_timeout` is dropped, at most [`QUERIES_IN_FLIGHT`] query replies (each
//! a whole-index snapshot until encoded) wait per connection, and a Msg is checked against
//! [`EventLimits`] on the wire before it is decoded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::convert;
use super::frame::{self, FrameDecoder, FrameError};
use crate::engine::{Applied, EngineError, EngineHandle, Snapshot};
use crate::event::{now_micros, Event, EventLimits};
use crate::metrics::Counters;
use crate::proto::Msg;
use crate::query::Query;

/// Replies are written to the socket once this much is buffered, even if more are ready.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// Read buffer headroom requested before each read.
const READ_CHUNK: usize = 64 * 1024;
/// At most this many `Msg`s (and events) go to the engine as one batch with one acknowledgement.
const BATCH_MSGS: usize = 1024;
const BATCH_EVENTS: usize = 1024;
/// Query replies one connection may have waiting to be written. Each holds a snapshot of the
/// whole index until it is encoded, so a client pipelining thousands of queries without reading
/// once held thousands of snapshots (1.3 GiB); past this the connection is not read.
const QUERIES_IN_FLIGHT: usize = 2;

#[derive(Debug, Clone)]
pub struct TcpConfig {
    pub max_frame_bytes: usize,
    pub max_connections: usize,
    pub max_in_flight: usize,
    /// Bounds on each Msg, checked before it is decoded.
    pub limits: EventLimits,
    /// A connection that sends no whole frame for this long is closed.
    pub idle_timeout: Duration,
    /// A client whose replies make no progress for this long is dropped.
    pub write_timeout: Duration,
    /// Whether queries are answered (the port has no authentication).
    pub queries: bool,
}

/// The error a query gets with `--tcp-queries off`.
pub const QUERIES_DISABLED: &str = "queries are disabled on this port (--tcp-queries off)";

/// How long a connection closed for bad input keeps draining the peer's input.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, PartialEq, Eq)]
enum ReadEnd {
    /// EOF, a read error, or shutdown.
    Closed,
    /// Bad input: an error reply was queued and the connection must close.
    Fatal,
}

/// What the reader does after a frame.
enum Next {
    /// The buffer holds no complete frame: read.
    NeedInput,
    /// The batch reached its cap: send it and go on decoding.
    Full,
    /// A Msg to handle on its own, after the batch.
    Msg(Msg),
    /// A reply ready now (bad input), after the batch.
    Reply(Reply),
}

/// A decoded frame.
enum Frame {
    /// A Msg holding only events (this many), now appended to the batch.
    Batched(usize),
    /// A query or an empty Msg.
    Other(Msg),
}

/// Event-only Msgs read but not yet handed to the engine.
#[derive(Default)]
struct Batch {
    events: Vec<Event>,
    msgs: MsgSizes,
}

/// Where each of a batch's Msgs ends in its events: tells which Msgs lie wholly before the
/// batch's first change, and can be answered before that change is durable. Kept as one number
/// in the usual case of Msgs of equal size (a client's batches rarely vary).
#[derive(Debug, Default, Clone)]
struct MsgSizes {
    count: usize,
    /// Events per Msg while every Msg so far had the same number.
    uniform: Option<usize>,
    /// Each Msg's end, once sizes differ.
    ends: Vec<usize>,
}

impl MsgSizes {
    /// Notes a Msg of `events` events (at least one: empty Msgs are not batched).
    fn push(&mut self, events: usize) {
        match self.uniform {
            _ if self.count == 0 => self.uniform = Some(events),
            Some(size) if size == events => {}
            Some(size) => {
                self.ends = (1..=self.count).map(|i| i * size).collect();
                self.uniform = None;
            }
            None => {}
        }
        if self.uniform.is_none() {
            let end = self.ends.last().copied().unwrap_or(0) + events;
            self.ends.push(end);
        }
        self.count += 1;
    }

    /// How many Msgs end at or before event position `first_change`.
    fn before(&self, first_change: usize) -> usize {
        match self.uniform {
            Some(size) => (first_change / size.max(1)).min(self.count),
            None => self.ends.partition_point(|&end| end <= first_change),
        }
    }
}

/// One reply slot, in request order.
enum Reply {
    /// Wait for the engine to apply the batch, then answer `ok` once per `Msg` it holds (those
    /// before its first change at once, the rest once the change is durable).
    Pending(oneshot::Receiver<Applied>, MsgSizes),
    /// Answer a query once the engine's snapshot (taken after every earlier batch) arrives;
    /// the permit is one of the connection's [`QUERIES_IN_FLIGHT`], returned once it is written.
    Query(oneshot::Receiver<Snapshot>, Query, OwnedSemaphorePermit),
    /// Answer now.
    Ready(Msg),
    /// Answer, then close the connection (bad input).
    Fatal(Msg),
    /// Write these bytes as they are, then close (a client of another protocol).
    Foreign(&'static [u8]),
}

/// Where replies go and how long a write may stall.
#[derive(Debug, Clone, Copy)]
struct Link {
    peer: SocketAddr,
    write_timeout: Duration,
}

/// Accepts connections until shutdown; each runs in its own task tracked by `tasks`. After
/// `shutdown`, connections answer what they have read; `force` ends those still running.
pub async fn serve(
    listener: TcpListener,
    config: TcpConfig,
    engine: EngineHandle,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
    force: CancellationToken,
    tasks: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(config.max_connections));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Usually EMFILE: back off instead of spinning on a hot error.
                tracing::warn!(%error, "riemann tcp accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            Counters::add(&counters.tcp_refused, 1);
            tracing::warn!(%peer, limit = config.max_connections, "riemann tcp connection limit reached; closing new connection");
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
        tasks.spawn(async move {
            tokio::select! {
                _ = connection.run(socket, shutdown) => {}
                _ = force.cancelled() => {
                    tracing::warn!(%peer, "riemann tcp connection still busy at the end of the shutdown grace period; closing it");
                }
            }
            drop(permit);
        });
    }
}

struct Connection {
    config: TcpConfig,
    engine: EngineHandle,
    counters: Arc<Counters>,
    peer: SocketAddr,
}

impl Connection {
    async fn run(self, socket: TcpStream, shutdown: CancellationToken) {
        let (read, write) = socket.into_split();
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
        )));
        let mut read = read;
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

    async fn read_requests(
        &self,
        read: &mut OwnedReadHalf,
        replies: mpsc::Sender<Reply>,
        shutdown: CancellationToken,
    ) -> ReadEnd {
        let decoder = FrameDecoder::new(self.config.max_frame_bytes);
        let queries = Arc::new(Semaphore::new(QUERIES_IN_FLIGHT));
        // The idle clock restarts when the reader goes back to reading after handling frames,
        // so time spent waiting on the client's own backpressure does not count as idle.
        let mut idle_deadline = tokio::time::Instant::now() + self.config.idle_timeout;
        let mut framed = false;
        let mut buf = BytesMut::new();
        // Event-only Msgs decoded from one read go to the engine together: one command and one
        // acknowledgement for the lot, answered with one `ok` per Msg in order. Anything else
        // (a query, an empty Msg, bad input) first sends what is batched, so order is kept.
        let mut batch = Batch::default();
        // Arrival time of what the last read brought: events without a time of their own get it.
        let mut arrived = now_micros();
        loop {
            loop {
                let reply = match decoder.decode(&mut buf) {
                    Ok(Some(body)) => {
                        framed = true;
                        match self.decode_frame(body, arrived, &mut batch.events) {
                            Ok(Frame::Batched(events)) => {
                                batch.msgs.push(events);
                                if batch.msgs.count < BATCH_MSGS
                                    && batch.events.len() < BATCH_EVENTS
                                {
                                    continue;
                                }
                                Next::Full
                            }
                            Ok(Frame::Other(msg)) => Next::Msg(msg),
                            Err(reply) => Next::Reply(reply),
                        }
                    }
                    Ok(None) => Next::NeedInput,
                    Err(error) => {
                        Counters::add(&self.counters.tcp_bad_frames, 1);
                        tracing::warn!(peer = %self.peer, %error, "closing riemann tcp connection");
                        Next::Reply(match error {
                            // A client of another protocol cannot read a protobuf reply.
                            FrameError::LooksLikeTls => Reply::Foreign(b""),
                            FrameError::LooksLikeHttp => Reply::Foreign(HTTP_REPLY),
                            FrameError::TooLarge { .. } => {
                                Reply::Fatal(error_msg(error.to_string()))
                            }
                        })
                    }
                };
                // Whatever comes next, what is batched goes first.
                if let Some(pending) = self.submit_batch(&mut batch).await {
                    let fatal = pending.closes();
                    if replies.send(pending).await.is_err() {
                        return ReadEnd::Closed;
                    }
                    if fatal {
                        return ReadEnd::Fatal;
                    }
                }
                let reply = match reply {
                    Next::NeedInput => break,
                    Next::Full => continue,
                    Next::Msg(msg) => {
                        match self.handle_msg(msg, arrived, &queries, &shutdown).await {
                            Some(reply) => reply,
                            None => return ReadEnd::Closed,
                        }
                    }
                    Next::Reply(reply) => reply,
                };
                let fatal = reply.closes();
                if replies.send(reply).await.is_err() {
                    return ReadEnd::Closed;
                }
                if fatal {
                    return ReadEnd::Fatal;
                }
            }
            if std::mem::take(&mut framed) {
                idle_deadline = tokio::time::Instant::now() + self.config.idle_timeout;
            }
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            let read_result = tokio::select! {
                // Stop taking requests; those already read are still answered.
                _ = shutdown.cancelled() => return ReadEnd::Closed,
                // The writer gave up on the client (write timeout, reset): so does the reader.
                _ = replies.closed() => return ReadEnd::Closed,
                _ = tokio::time::sleep_until(idle_deadline) => {
                    tracing::info!(
                        peer = %self.peer,
                        idle_secs = self.config.idle_timeout.as_secs(),
                        "closing idle riemann tcp connection (no frame within --tcp-idle-timeout)"
                    );
                    return ReadEnd::Closed;
                }
                r = read.read_buf(&mut buf) => r,
            };
            match read_result {
                Ok(0) => {
                    if !buf.is_empty() {
                        tracing::debug!(peer = %self.peer, buffered = buf.len(), "peer disconnected mid-frame");
                    }
                    return ReadEnd::Closed;
                }
                Ok(_) => arrived = now_micros(),
                Err(error) => {
                    tracing::debug!(peer = %self.peer, %error, "riemann tcp read failed");
                    return ReadEnd::Closed;
                }
            }
        }
    }

    /// Decodes one frame: events are appended to `batch` (straight from the decoded Msg, no
    /// Vec per Msg), any other Msg is returned to be handled on its own.
    fn decode_frame(
        &self,
        body: Bytes,
        arrived: i64,
        batch: &mut Vec<Event>,
    ) -> Result<Frame, Reply> {
        // Counted on the wire first: decoding is where a small frame becomes a large Msg.
        if let Err(error) = convert::check_limits(&body, &self.config.limits) {
            Counters::add(&self.counters.tcp_bad_frames, 1);
            tracing::debug!(peer = %self.peer, %error, "riemann msg over a limit; refused");
            return Err(Reply::Ready(error_msg(error.to_string())));
        }
        let msg = match Msg::decode(body) {
            Ok(msg) => msg,
            Err(error) => {
                Counters::add(&self.counters.tcp_bad_frames, 1);
                tracing::warn!(peer = %self.peer, %error, "undecodable riemann msg; closing connection");
                return Err(Reply::Fatal(error_msg(format!(
                    "invalid protobuf Msg: {error}"
                ))));
            }
        };
        if msg.query.is_some() || msg.events.is_empty() {
            return Ok(Frame::Other(msg));
        }
        let events = msg.events.len();
        batch.extend(
            msg.events
                .into_iter()
                .map(|e| convert::from_proto(e, arrived)),
        );
        Ok(Frame::Batched(events))
    }

    /// Hands the batched Msgs to the engine as one command (waiting for queue space:
    /// backpressure): the reply slot that answers them all, if anything was batched.
    async fn submit_batch(&self, batch: &mut Batch) -> Option<Reply> {
        if batch.msgs.count == 0 {
            return None;
        }
        // The next batch is likely the size of this one: reserve that, rather than growing from 1.
        let expected = batch.events.len().min(BATCH_EVENTS);
        let events = std::mem::replace(&mut batch.events, Vec::with_capacity(expected));
        let msgs = std::mem::take(&mut batch.msgs);
        Some(match self.engine.submit(events).await {
            Ok(ack) => Reply::Pending(ack, msgs),
            Err(error) => Reply::Fatal(error_msg(error.to_string())),
        })
    }

    /// A Msg with a query, or without events. `None` when shutdown came while it waited for
    /// one of the connection's `queries` permits.
    async fn handle_msg(
        &self,
        msg: Msg,
        arrived: i64,
        queries: &Arc<Semaphore>,
        shutdown: &CancellationToken,
    ) -> Option<Reply> {
        if msg.query.is_some() && !self.config.queries {
            return Some(Reply::Ready(error_msg(QUERIES_DISABLED.to_owned())));
        }
        let query = match msg.query.map(|q| q.string.unwrap_or_default()) {
            // A bad query is the client's mistake, not a protocol error: answer and carry on.
            // Compiling its patterns is CPU work: off the async workers.
            Some(text) => match Query::parse_off_thread(text).await {
                Ok(query) => Some(query),
                Err(error) => {
                    return Some(Reply::Ready(error_msg(format!("parse error: {error}"))))
                }
            },
            None => None,
        };
        // A query waits for a free slot before anything of its Msg is applied: the connection
        // is not read meanwhile (the client is not reading the earlier query replies).
        let permit = match &query {
            Some(_) => Some(tokio::select! {
                permit = Arc::clone(queries).acquire_owned() => permit.ok()?,
                _ = shutdown.cancelled() => return None,
            }),
            None => None,
        };
        let mut ack = None;
        if !msg.events.is_empty() {
            let events = msg
                .events
                .into_iter()
                .map(|e| convert::from_proto(e, arrived))
                .collect();
            match self.engine.submit(events).await {
                Ok(rx) => ack = Some(rx),
                Err(error) => return Some(Reply::Fatal(error_msg(error.to_string()))),
            }
        }
        Some(match (query.zip(permit), ack) {
            // The snapshot is queued behind this Msg's events, so it includes them.
            (Some((query, permit)), _) => match self.engine.request_snapshot().await {
                Ok(snapshot) => Reply::Query(snapshot, query, permit),
                Err(error) => Reply::Fatal(error_msg(error.to_string())),
            },
            (None, Some(ack)) => {
                let mut sizes = MsgSizes::default();
                sizes.push(1);
                Reply::Pending(ack, sizes)
            }
            (None, None) => Reply::Ready(ok_msg()),
        })
    }
}

fn ok_msg() -> Msg {
    Msg {
        ok: Some(true),
        ..Default::default()
    }
}

fn error_msg(error: String) -> Msg {
    Msg {
        ok: Some(false),
        error: Some(error),
        ..Default::default()
    }
}

/// Writes replies in request order, batching writes: a flush happens only when the next reply is
/// not ready yet (or the batch is large), so a pipelining client gets many replies per syscall.
async fn write_replies(
    mut write: OwnedWriteHalf,
    mut replies: mpsc::Receiver<Reply>,
    link: Link,
    max_frame_bytes: usize,
) {
    let mut out = BytesMut::with_capacity(4096);
    let mut ok_frame = BytesMut::new();
    frame::encode(&ok_msg(), &mut ok_frame);
    while let Some(mut reply) = replies.recv().await {
        loop {
            // A query's permit, returned once its reply is written or handed to the socket.
            let mut query_permit = None;
            let (msg, fatal) = match reply {
                Reply::Ready(msg) => (msg, false),
                Reply::Fatal(msg) => (msg, true),
                Reply::Foreign(bytes) => {
                    out.extend_from_slice(bytes);
                    flush(&mut write, &mut out, link).await;
                    let _ = write.shutdown().await;
                    return;
                }
                Reply::Pending(applied, msgs) => {
                    let (ack, unanswered) = match wait(applied, &mut write, &mut out, link).await {
                        None => return,
                        Some(Err(_)) => (Err(EngineError::Closed), msgs.count),
                        Some(Ok(Applied::Done(ack))) => (ack, msgs.count),
                        Some(Ok(Applied::Changed {
                            first_change,
                            durable,
                        })) => {
                            // The Msgs before the first change are answered now: `wait` sends
                            // them while the change is made durable.
                            let answered = msgs.before(first_change);
                            for _ in 0..answered {
                                out.extend_from_slice(&ok_frame);
                            }
                            match wait(durable, &mut write, &mut out, link).await {
                                None => return,
                                Some(ack) => (
                                    ack.unwrap_or(Err(EngineError::Closed)),
                                    msgs.count - answered,
                                ),
                            }
                        }
                    };
                    match ack {
                        Ok(()) => {
                            // One `ok` per Msg of the batch, in order.
                            for _ in 1..unanswered {
                                out.extend_from_slice(&ok_frame);
                            }
                            (ok_msg(), false)
                        }
                        // Nothing of the batch was applied (index full), or it is not stored
                        // yet (storage failing): each of its Msgs is told so, and the
                        // connection goes on — closing it would only make clients reconnect in
                        // a loop while the disk is full.
                        Err(error @ (EngineError::IndexFull { .. } | EngineError::Storage(_))) => {
                            let refused = error_msg(error.to_string());
                            for _ in 1..unanswered {
                                frame::encode(&refused, &mut out);
                            }
                            (refused, false)
                        }
                        Err(error) => (error_msg(error.to_string()), true),
                    }
                }
                Reply::Query(snapshot, query, permit) => {
                    query_permit = Some(permit);
                    match wait(snapshot, &mut write, &mut out, link).await {
                        Some(Ok(snapshot)) => {
                            // Encoded straight into the output; the snapshot goes right after.
                            if let Err(too_large) =
                                encode_query_reply(&snapshot, &query, max_frame_bytes, &mut out)
                            {
                                (error_msg(too_large), false)
                            } else {
                                (Msg::default(), false)
                            }
                        }
                        Some(Err(_)) => (error_msg(EngineError::Closed.to_string()), true),
                        None => return,
                    }
                }
            };
            // An empty Msg stands for "already encoded" (a query reply): every real reply
            // carries `ok`.
            if msg.ok.is_some() {
                frame::encode(&msg, &mut out);
            }
            if fatal {
                flush(&mut write, &mut out, link).await;
                let _ = write.shutdown().await;
                return;
            }
            if out.len() >= WRITE_BATCH_BYTES && !flush(&mut write, &mut out, link).await {
                return;
            }
            // A large query reply was just written; a small one waits in `out`, which is small.
            drop(query_permit);
            match replies.try_recv() {
                Ok(next) => reply = next,
                Err(_) => break,
            }
        }
        if !flush(&mut write, &mut out, link).await {
            return;
        }
    }
    let _ = write.shutdown().await;
}

/// Waits for a reply slot's result. If it is not ready yet, whatever is buffered is sent first
/// so the client is not kept waiting for replies that are ready. `None` when the peer is gone.
async fn wait<T>(
    mut rx: oneshot::Receiver<T>,
    write: &mut OwnedWriteHalf,
    out: &mut BytesMut,
    link: Link,
) -> Option<Result<T, oneshot::error::RecvError>> {
    match rx.try_recv() {
        Ok(value) => return Some(Ok(value)),
        Err(oneshot::error::TryRecvError::Closed) => {
            return Some(rx.await);
        }
        Err(oneshot::error::TryRecvError::Empty) => {}
    }
    if !flush(write, out, link).await {
        return None;
    }
    Some(rx.await)
}

/// Appends Riemann's answer to a query as one frame: `ok` and every matching indexed event,
/// encoded straight from the snapshot (no intermediate `Msg` holding a copy of each event).
/// A result larger than the frame limit is not sent: the error says how large it was.
fn encode_query_reply(
    snapshot: &Snapshot,
    query: &Query,
    max_frame_bytes: usize,
    out: &mut BytesMut,
) -> Result<(), String> {
    use prost::encoding::{bool as pbool, encode_key, encode_varint, encoded_len_varint, WireType};
    let start = out.len();
    out.put_u32(0); // the length, filled in below
    pbool::encode(2, &true, out);
    let mut body_len = out.len() - start - 4;
    let mut event = Vec::new();
    let match_all = query.is_match_all();
    for e in snapshot.events.iter() {
        if !match_all && !query.matches(e) {
            continue;
        }
        event.clear();
        convert::encode_event(e, &mut event);
        body_len += 1 + encoded_len_varint(event.len() as u64) + event.len();
        // Past the limit, keep counting (to say how large) but stop buffering.
        if body_len <= max_frame_bytes {
            encode_key(6, WireType::LengthDelimited, out);
            encode_varint(event.len() as u64, out);
            out.extend_from_slice(&event);
        }
    }
    if body_len > max_frame_bytes {
        out.truncate(start);
        return Err(format!(
            "query result of {body_len} bytes exceeds the {max_frame_bytes}-byte frame limit (--max-frame-bytes); narrow the query"
        ));
    }
    // At most the frame limit, which fits the 4-byte length (the flag is a usize, but the
    // decoder's own frames are never larger than u32::MAX either).
    let len = u32::try_from(body_len).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Writes out everything buffered; false when the peer is gone or made no progress reading it
/// for the write timeout (it is then dropped).
async fn flush(write: &mut OwnedWriteHalf, out: &mut BytesMut, link: Link) -> bool {
    let mut written = 0;
    let result = loop {
        if written == out.len() {
            break Ok(());
        }
        match tokio::time::timeout(link.write_timeout, write.write(&out[written..])).await {
            Ok(Ok(0)) => break Err("peer closed the connection".to_owned()),
            Ok(Ok(n)) => written += n,
            Ok(Err(error)) => break Err(error.to_string()),
            Err(_) => {
                tracing::info!(
                    peer = %link.peer,
                    timeout_secs = link.write_timeout.as_secs(),
                    unwritten = out.len() - written,
                    "riemann tcp client is not reading its replies (--tcp-write-timeout); dropping it"
                );
                out.clear();
                return false;
            }
        }
    };
    out.clear();
    match result {
        Ok(()) => true,
        Err(error) => {
            tracing::debug!(peer = %link.peer, %error, "riemann tcp write failed");
            false
        }
    }
}

/// A spawned task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a plain HTTP client on the Riemann port is told before the connection closes.
const HTTP_REPLY: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 85\r\n\r\nThis is statecast's Riemann TCP port (protobuf); the dashboard is on the HTTP port.\r\n";

impl Reply {
    /// Whether the connection closes after this reply.
    fn closes(&self) -> bool {
        matches!(self, Reply::Fatal(_) | Reply::Foreign(_))
    }
}

#[cfg(test)]
mod tests {
    use super::MsgSizes;

    fn sizes(of: &[usize]) -> MsgSizes {
        let mut sizes = MsgSizes::default();
        for &events in of {
            sizes.push(events);
        }
        sizes
    }

    #[test]
    fn msgs_wholly_before_the_first_change_are_counted() {
        // Equal sizes: kept as one number.
        let uniform = sizes(&[3, 3, 3]);
        assert_eq!(uniform.uniform, Some(3));
        let before: Vec<usize> = (0..9).map(|at| uniform.before(at)).collect();
        assert_eq!(before, [0, 0, 0, 1, 1, 1, 2, 2, 2]);

        // Sizes that differ after a while: ends are listed, the earlier Msgs included.
        let mixed = sizes(&[2, 2, 1, 4]);
        assert_eq!(mixed.uniform, None);
        assert_eq!(mixed.ends, [2, 4, 5, 9]);
        let before: Vec<usize> = (0..9).map(|at| mixed.before(at)).collect();
        assert_eq!(before, [0, 0, 1, 1, 2, 3, 3, 3, 3]);
        assert_eq!(mixed.count, 4);
    }
}
