//! Riemann protobuf over TCP: the listener and the per-connection pipeline.
//!
//! Riemann clients pipeline (the Java client keeps up to 8192 messages in flight and matches
//! replies FIFO), so each connection runs two halves that overlap: the reader decodes frames and
//! hands batches to the engine (the event-only `Msg`s of one read as one batch with one
//! acknowledgement), queueing reply slots in request order; the writer
//! waits for each slot in turn and writes replies in batches, flushing only when nothing more is
//! ready. The reply queue is bounded: a client that never reads replies stops being read.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::convert;
use super::frame::{self, FrameDecoder};
use crate::engine::{Applied, EngineError, EngineHandle, Snapshot};
use crate::event::{now_micros, Event};
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

#[derive(Debug, Clone)]
pub struct TcpConfig {
    pub max_frame_bytes: usize,
    pub max_connections: usize,
    pub max_in_flight: usize,
}

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
    /// Answer a query once the engine's snapshot (taken after every earlier batch) arrives.
    Query(oneshot::Receiver<Snapshot>, Query),
    /// Answer now.
    Ready(Msg),
    /// Answer, then close the connection (bad input).
    Fatal(Msg),
}

/// Accepts connections until shutdown; each runs in its own task tracked by `tasks`.
pub async fn serve(
    listener: TcpListener,
    config: TcpConfig,
    engine: EngineHandle,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
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
        tasks.spawn(async move {
            connection.run(socket, shutdown).await;
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
        let writer = tokio::spawn(write_replies(write, replies_rx, peer));
        let mut read = read;
        let ended = self.read_requests(&mut read, replies_tx, shutdown).await;
        // The reader is done (EOF, bad input or shutdown); the writer answers what is in flight
        // and then closes.
        let _ = writer.await;
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
                    Ok(Some(body)) => match self.decode_frame(body, arrived, &mut batch.events) {
                        Ok(Frame::Batched(events)) => {
                            batch.msgs.push(events);
                            if batch.msgs.count < BATCH_MSGS && batch.events.len() < BATCH_EVENTS {
                                continue;
                            }
                            Next::Full
                        }
                        Ok(Frame::Other(msg)) => Next::Msg(msg),
                        Err(reply) => Next::Reply(reply),
                    },
                    Ok(None) => Next::NeedInput,
                    Err(error) => {
                        Counters::add(&self.counters.tcp_bad_frames, 1);
                        tracing::warn!(peer = %self.peer, %error, "closing riemann tcp connection");
                        Next::Reply(Reply::Fatal(error_msg(error.to_string())))
                    }
                };
                // Whatever comes next, what is batched goes first.
                if let Some(pending) = self.submit_batch(&mut batch).await {
                    let fatal = matches!(pending, Reply::Fatal(_));
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
                    Next::Msg(msg) => self.handle_msg(msg, arrived).await,
                    Next::Reply(reply) => reply,
                };
                let fatal = matches!(reply, Reply::Fatal(_));
                if replies.send(reply).await.is_err() {
                    return ReadEnd::Closed;
                }
                if fatal {
                    return ReadEnd::Fatal;
                }
            }
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            let read_result = tokio::select! {
                // Stop taking requests; those already read are still answered.
                _ = shutdown.cancelled() => return ReadEnd::Closed,
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

    /// A Msg with a query, or without events.
    async fn handle_msg(&self, msg: Msg, arrived: i64) -> Reply {
        let query = match msg.query.map(|q| q.string.unwrap_or_default()) {
            // A bad query is the client's mistake, not a protocol error: answer and carry on.
            // Compiling its patterns is CPU work: off the async workers.
            Some(text) => match Query::parse_off_thread(text).await {
                Ok(query) => Some(query),
                Err(error) => return Reply::Ready(error_msg(format!("parse error: {error}"))),
            },
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
                Err(error) => return Reply::Fatal(error_msg(error.to_string())),
            }
        }
        match (query, ack) {
            // The snapshot is queued behind this Msg's events, so it includes them.
            (Some(query), _) => match self.engine.request_snapshot().await {
                Ok(snapshot) => Reply::Query(snapshot, query),
                Err(error) => Reply::Fatal(error_msg(error.to_string())),
            },
            (None, Some(ack)) => {
                let mut sizes = MsgSizes::default();
                sizes.push(1);
                Reply::Pending(ack, sizes)
            }
            (None, None) => Reply::Ready(ok_msg()),
        }
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
    peer: SocketAddr,
) {
    let mut out = BytesMut::with_capacity(4096);
    let mut ok_frame = BytesMut::new();
    frame::encode(&ok_msg(), &mut ok_frame);
    while let Some(mut reply) = replies.recv().await {
        loop {
            let (msg, fatal) = match reply {
                Reply::Ready(msg) => (msg, false),
                Reply::Fatal(msg) => (msg, true),
                Reply::Pending(applied, msgs) => {
                    let (ack, unanswered) = match wait(applied, &mut write, &mut out, peer).await {
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
                            match wait(durable, &mut write, &mut out, peer).await {
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
                        // Nothing of the batch was applied: each of its Msgs is told so, and
                        // the connection goes on (updates of indexed keys still succeed).
                        Err(error @ EngineError::IndexFull { .. }) => {
                            let refused = error_msg(error.to_string());
                            for _ in 1..unanswered {
                                frame::encode(&refused, &mut out);
                            }
                            (refused, false)
                        }
                        Err(error) => (error_msg(error.to_string()), true),
                    }
                }
                Reply::Query(snapshot, query) => {
                    match wait(snapshot, &mut write, &mut out, peer).await {
                        Some(Ok(snapshot)) => (query_result(&snapshot, &query), false),
                        Some(Err(_)) => (error_msg(EngineError::Closed.to_string()), true),
                        None => return,
                    }
                }
            };
            frame::encode(&msg, &mut out);
            if fatal {
                flush(&mut write, &mut out, peer).await;
                let _ = write.shutdown().await;
                return;
            }
            if out.len() >= WRITE_BATCH_BYTES && !flush(&mut write, &mut out, peer).await {
                return;
            }
            match replies.try_recv() {
                Ok(next) => reply = next,
                Err(_) => break,
            }
        }
        if !flush(&mut write, &mut out, peer).await {
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
    peer: SocketAddr,
) -> Option<Result<T, oneshot::error::RecvError>> {
    match rx.try_recv() {
        Ok(value) => return Some(Ok(value)),
        Err(oneshot::error::TryRecvError::Closed) => {
            return Some(rx.await);
        }
        Err(oneshot::error::TryRecvError::Empty) => {}
    }
    if !flush(write, out, peer).await {
        return None;
    }
    Some(rx.await)
}

/// Riemann's answer to a query: `ok` and every matching indexed event.
fn query_result(snapshot: &Snapshot, query: &Query) -> Msg {
    Msg {
        ok: Some(true),
        events: snapshot
            .events
            .iter()
            .filter(|e| query.matches(e))
            .map(|e| convert::to_proto(e))
            .collect(),
        ..Default::default()
    }
}

/// Writes out everything buffered; false when the peer is gone.
async fn flush(write: &mut OwnedWriteHalf, out: &mut BytesMut, peer: SocketAddr) -> bool {
    if out.is_empty() {
        return true;
    }
    let result = write.write_all(out).await;
    out.clear();
    match result {
        Ok(()) => true,
        Err(error) => {
            tracing::debug!(%peer, %error, "riemann tcp write failed");
            false
        }
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
