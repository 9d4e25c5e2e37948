//! The reading half of a Riemann TCP connection: frames in, engine commands and reply slots out.
//!
//! What one read brings is split into frames ([`FrameDecoder`], which also names a TLS or HTTP
//! client that knocked on the wrong port); each Msg is checked against the connection's limits
//! on the wire before it is decoded. The event-only Msgs of one read go to the engine as one
//! batch with one acknowledgement; anything else (a query, an empty Msg, bad input) first sends
//! what is batched, so request order is kept. For each request a [`Reply`] slot is queued for the
//! writer; the queue is bounded, so a client that never reads its replies stops being read. A
//! connection is closed when it sends no first frame in time, leaves a started frame unfinished
//! too long, or idles between frames past the idle timeout ([`Deadlines`]). This half never
//! writes the socket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use super::writer::{error_msg, ok_msg, MsgSizes, Reply};
use super::{Connection, TcpConfig, QUERIES_DISABLED};
use crate::event::convert;
use crate::event::{now_micros, Event};
use crate::ingest::frame::{FrameDecoder, FrameError};
use crate::metrics::{Counters, ForeignProtocol, TcpTimeout};
use crate::proto::Msg;
use crate::query::Query;

/// Read buffer headroom requested before each read.
const READ_CHUNK: usize = 64 * 1024;
/// At most this many `Msg`s (and events) go to the engine as one batch with one acknowledgement.
const BATCH_MSGS: usize = 1024;
const BATCH_EVENTS: usize = 1024;
/// Query replies one connection may have waiting to be written. Each holds a snapshot of the
/// whole index until it is encoded, so a client pipelining thousands of queries without reading
/// once held thousands of snapshots (1.3 GiB); past this the connection is not read.
pub(super) const QUERIES_IN_FLIGHT: usize = 2;

#[derive(Debug, PartialEq, Eq)]
pub(super) enum ReadEnd {
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

impl Connection {
    pub(super) async fn read_requests<R: AsyncRead + Unpin>(
        &self,
        read: &mut R,
        replies: mpsc::Sender<Reply>,
        shutdown: CancellationToken,
    ) -> ReadEnd {
        let decoder = FrameDecoder::new(self.config.max_frame_bytes);
        let queries = Arc::new(Semaphore::new(QUERIES_IN_FLIGHT));
        // The clocks restart when the reader goes back to reading after handling frames, so
        // time spent waiting on the client's own backpressure counts against none of them.
        let mut deadlines = Deadlines::new(tokio::time::Instant::now(), &self.config);
        let mut framed = false;
        let mut buf = BytesMut::new();
        // Event-only Msgs decoded from one read go to the engine together: one command and one
        // acknowledgement for the lot, answered with one `ok` per Msg in order. Anything else
        // (a query, an empty Msg, bad input) first sends what is batched, so order is kept.
        let mut batch = Batch::default();
        // Arrival time of what the last read brought: events without a time of their own get it.
        let mut arrived = now_micros();
        // The same moment on the monotonic clock: acknowledgement latency is timed from it.
        let mut read_at = Instant::now();
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
                            FrameError::LooksLikeTls => {
                                self.counters.tcp_foreign(ForeignProtocol::Tls);
                                Reply::Foreign(b"")
                            }
                            FrameError::LooksLikeHttp => {
                                self.counters.tcp_foreign(ForeignProtocol::Http);
                                Reply::Foreign(HTTP_REPLY)
                            }
                            FrameError::TooLarge { .. } => {
                                Reply::Fatal(error_msg(error.to_string()))
                            }
                        })
                    }
                };
                // Whatever comes next, what is batched goes first.
                if let Some(pending) = self.submit_batch(&mut batch, read_at).await {
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
                        match self
                            .handle_msg(msg, arrived, read_at, &queries, &shutdown)
                            .await
                        {
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
            deadlines.before_read(
                tokio::time::Instant::now(),
                std::mem::take(&mut framed),
                !buf.is_empty(),
            );
            let (deadline, timeout) = deadlines.next();
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            let read_result = tokio::select! {
                // Stop taking requests; those already read are still answered.
                _ = shutdown.cancelled() => return ReadEnd::Closed,
                // The writer gave up on the client (write timeout, reset): so does the reader.
                _ = replies.closed() => return ReadEnd::Closed,
                _ = tokio::time::sleep_until(deadline) => {
                    self.timed_out(timeout);
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
                Ok(_) => {
                    arrived = now_micros();
                    read_at = Instant::now();
                }
                Err(error) => {
                    tracing::debug!(peer = %self.peer, %error, "riemann tcp read failed");
                    return ReadEnd::Closed;
                }
            }
        }
    }

    /// Counts and logs a connection closed by `timeout`.
    fn timed_out(&self, timeout: TcpTimeout) {
        self.counters.tcp_timeout(timeout);
        let peer = self.peer;
        match timeout {
            TcpTimeout::Idle => tracing::info!(
                %peer,
                idle_secs = self.config.idle_timeout.as_secs(),
                "closing idle riemann tcp connection (no frame within --tcp-idle-timeout)"
            ),
            // Scanners and port checks do this all day: debug, counted in /metrics.
            TcpTimeout::FirstFrame => tracing::debug!(
                %peer,
                "closing riemann tcp connection: no complete frame within --tcp-first-frame-timeout"
            ),
            TcpTimeout::Frame => tracing::info!(
                %peer,
                frame_secs = self.config.frame_timeout.as_secs_f64(),
                "closing riemann tcp connection: a frame did not arrive whole within --tcp-frame-timeout"
            ),
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
        batch.extend(convert::events_from_proto(msg.events, arrived));
        Ok(Frame::Batched(events))
    }

    /// Hands the batched Msgs to the engine as one command (waiting for queue space:
    /// backpressure): the reply slot that answers them all, if anything was batched.
    async fn submit_batch(&self, batch: &mut Batch, read_at: Instant) -> Option<Reply> {
        if batch.msgs.count == 0 {
            return None;
        }
        // The next batch is likely the size of this one: reserve that, rather than growing from 1.
        let expected = batch.events.len().min(BATCH_EVENTS);
        let events = std::mem::replace(&mut batch.events, Vec::with_capacity(expected));
        let msgs = std::mem::take(&mut batch.msgs);
        Some(match self.engine.submit(events).await {
            Ok(ack) => Reply::Pending(ack, msgs, read_at),
            Err(error) => Reply::Fatal(error_msg(error.to_string())),
        })
    }

    /// A Msg with a query, or without events. `None` when shutdown came while it waited for
    /// one of the connection's `queries` permits.
    async fn handle_msg(
        &self,
        msg: Msg,
        arrived: i64,
        read_at: Instant,
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
            let events = convert::events_from_proto(msg.events, arrived).collect();
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
                Reply::Pending(ack, sizes, read_at)
            }
            (None, None) => Reply::Ready(ok_msg()),
        })
    }
}

/// The read deadlines of one connection; whichever is nearest closes it.
///
/// - first frame: a new connection must send a whole frame within `first_frame_timeout` (a
///   socket that never sends must not hold its slot for the idle timeout);
/// - frame: bytes of a frame are buffered (a frame has started) — it must be whole within
///   `frame_timeout` of its start (a client dripping a byte a second must not either);
/// - idle: between frames, an established client may wait up to `idle_timeout`.
///
/// Pure: the reader tells it what happened and when, so its rules are tested without a clock.
#[derive(Debug)]
struct Deadlines {
    first_frame: Option<tokio::time::Instant>,
    frame: Option<tokio::time::Instant>,
    idle: tokio::time::Instant,
    idle_timeout: Duration,
    frame_timeout: Duration,
}

impl Deadlines {
    fn new(now: tokio::time::Instant, config: &TcpConfig) -> Self {
        Self {
            first_frame: Some(now + config.first_frame_timeout),
            frame: None,
            idle: now + config.idle_timeout,
            idle_timeout: config.idle_timeout,
            frame_timeout: config.frame_timeout,
        }
    }

    /// Before each read, at `now`: whether frames were handled since the last read, and whether
    /// bytes of an unfinished frame are buffered.
    fn before_read(&mut self, now: tokio::time::Instant, framed: bool, partial: bool) {
        if framed {
            self.first_frame = None;
            self.idle = now + self.idle_timeout;
        }
        self.frame = match (partial, self.frame) {
            (false, _) => None,
            // What is buffered after whole frames began in the read that brought them.
            (true, Some(started)) if !framed => Some(started),
            (true, _) => Some(now + self.frame_timeout),
        };
    }

    /// The nearest deadline and what it stands for.
    fn next(&self) -> (tokio::time::Instant, TcpTimeout) {
        let mut next = (self.idle, TcpTimeout::Idle);
        for (deadline, timeout) in [
            (self.frame, TcpTimeout::Frame),
            (self.first_frame, TcpTimeout::FirstFrame),
        ] {
            if let Some(deadline) = deadline.filter(|d| *d <= next.0) {
                next = (deadline, timeout);
            }
        }
        next
    }
}

/// What a plain HTTP client on the Riemann port is told before the connection closes.
const HTTP_REPLY: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 85\r\n\r\nThis is statecast's Riemann TCP port (protobuf); the dashboard is on the HTTP port.\r\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventLimits;

    fn config() -> TcpConfig {
        TcpConfig {
            max_frame_bytes: 1024,
            max_connections: 1,
            max_tls_handshakes: 1,
            max_in_flight: 1,
            limits: EventLimits::DEFAULT,
            idle_timeout: Duration::from_secs(300),
            first_frame_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            queries: true,
        }
    }

    #[test]
    fn a_new_connection_has_the_first_frame_deadline_then_the_idle_one() {
        let t0 = tokio::time::Instant::now();
        let s = Duration::from_secs;
        let mut deadlines = Deadlines::new(t0, &config());
        deadlines.before_read(t0, false, false);
        assert_eq!(deadlines.next(), (t0 + s(10), TcpTimeout::FirstFrame));
        // Half a first frame: the first-frame deadline is still the nearest.
        deadlines.before_read(t0 + s(1), false, true);
        assert_eq!(deadlines.next(), (t0 + s(10), TcpTimeout::FirstFrame));
        // A whole frame: only the idle deadline, from then on.
        deadlines.before_read(t0 + s(5), true, false);
        assert_eq!(deadlines.next(), (t0 + s(305), TcpTimeout::Idle));
    }

    #[test]
    fn a_started_frame_must_finish_within_the_frame_timeout_of_its_start() {
        let t0 = tokio::time::Instant::now();
        let s = Duration::from_secs;
        let mut deadlines = Deadlines::new(t0, &config());
        deadlines.before_read(t0 + s(1), true, false);
        // A frame starts at 100 s; more bytes of it keep arriving, one at a time.
        deadlines.before_read(t0 + s(100), false, true);
        deadlines.before_read(t0 + s(120), false, true);
        assert_eq!(deadlines.next(), (t0 + s(130), TcpTimeout::Frame));
        // It completes, with the start of the next one behind it: that one's clock starts now.
        deadlines.before_read(t0 + s(125), true, true);
        assert_eq!(deadlines.next(), (t0 + s(155), TcpTimeout::Frame));
        // Nothing buffered: idle again.
        deadlines.before_read(t0 + s(126), true, false);
        assert_eq!(deadlines.next(), (t0 + s(426), TcpTimeout::Idle));
    }
}
