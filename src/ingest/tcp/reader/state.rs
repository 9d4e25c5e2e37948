//! The reading half's one state, and its one transition: given what is buffered, what to do
//! next — hand a batch to the engine, handle a Msg on its own, queue a reply, or read (until
//! which deadline). Decided without a socket, a clock or the engine.
//!
//! The reader task (`super`) performs each [`Action`] (engine calls, the bounded reply queue,
//! the socket) and tells the state what a read brought ([`ReadState::received`]); the rules
//! themselves — frames split from the buffer, event-only Msgs of one read batched up to
//! [`BATCH_MSGS`] / [`BATCH_EVENTS`], whatever is batched sent before anything else so replies
//! keep request order, bad input answered and closed, the three read deadlines — are tested
//! below on bytes alone:
//!
//! ```text
//!   frame of events ──▶ batched ──(batch full, or anything else next, or buffer drained)──▶ Submit
//!   query / empty Msg ──▶ Handle            over a limit ──▶ Reply(error), go on
//!   oversize / undecodable / TLS / HTTP ──▶ Reply(closes)       nothing whole ──▶ Read(deadline)
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use prost::Message;

use super::super::writer::{error_msg, MsgSizes, Reply};
use super::super::TcpConfig;
use crate::event::convert;
use crate::event::{Event, EventLimits};
use crate::ingest::frame::{FrameDecoder, FrameError};
use crate::metrics::{Counters, ForeignProtocol, TcpTimeout};
use crate::proto::Msg;

/// Read buffer headroom requested before each read.
const READ_CHUNK: usize = 64 * 1024;
/// At most this many `Msg`s (and events) go to the engine as one batch with one acknowledgement.
const BATCH_MSGS: usize = 1024;
const BATCH_EVENTS: usize = 1024;

/// What the reader does next.
pub(super) enum Action {
    /// Hand these event-only Msgs to the engine as one command; its reply slot goes next.
    Submit {
        events: Vec<Event>,
        msgs: MsgSizes,
        /// When the read that brought them returned (for `statecast_tcp_ack_seconds`).
        read_at: Instant,
    },
    /// A query or an empty Msg, handled on its own.
    Handle {
        msg: Msg,
        /// When it arrived (µs since the epoch): events without a time get it.
        arrived: i64,
        read_at: Instant,
    },
    /// Queue this reply (bad input); the connection closes after it if it [`Reply::closes`].
    Reply(Reply),
    /// Nothing whole is buffered: read, and close the connection if `deadline` passes first.
    Read {
        deadline: tokio::time::Instant,
        timeout: TcpTimeout,
    },
}

/// Event-only Msgs read but not yet handed to the engine.
#[derive(Default)]
struct Batch {
    events: Vec<Event>,
    msgs: MsgSizes,
}

/// A decoded frame.
enum Frame {
    /// A Msg holding only events (this many), now appended to the batch.
    Batched(usize),
    /// A query or an empty Msg.
    Other(Msg),
}

/// One connection's reading state; see the module doc.
pub(super) struct ReadState {
    decoder: FrameDecoder,
    buf: BytesMut,
    /// Event-only Msgs decoded from one read go to the engine together: one command and one
    /// acknowledgement for the lot, answered with one `ok` per Msg in order.
    batch: Batch,
    /// What comes after the batch being submitted: what is batched goes first, so order is kept.
    after_batch: Option<Action>,
    deadlines: Deadlines,
    /// Whether frames were taken from the buffer since the last read.
    framed: bool,
    /// Arrival time of what the last read brought: events without a time of their own get it.
    arrived: i64,
    /// The same moment on the monotonic clock: acknowledgement latency is timed from it.
    read_at: Instant,
    limits: EventLimits,
    counters: Arc<Counters>,
    peer: SocketAddr,
}

impl ReadState {
    /// A connection accepted at `now` (`tokio` clock, for the deadlines), `arrived` and
    /// `read_at` (the wall and monotonic clocks, for what it sends).
    pub(super) fn new(
        config: &TcpConfig,
        counters: Arc<Counters>,
        peer: SocketAddr,
        now: tokio::time::Instant,
        arrived: i64,
        read_at: Instant,
    ) -> Self {
        Self {
            decoder: FrameDecoder::new(config.max_frame_bytes),
            buf: BytesMut::new(),
            batch: Batch::default(),
            after_batch: None,
            deadlines: Deadlines::new(now, config),
            framed: false,
            arrived,
            read_at,
            limits: config.limits,
            counters,
            peer,
        }
    }

    /// What to do next; `now` is used when that is to read: the read deadlines restart when
    /// the reader goes back to reading after handling frames, so time spent waiting on the
    /// client's own backpressure (a full reply queue) counts against none of them.
    pub(super) fn next(&mut self, now: tokio::time::Instant) -> Action {
        if let Some(action) = self.after_batch.take() {
            return action;
        }
        loop {
            let action = match self.decoder.decode(&mut self.buf) {
                Ok(Some(body)) => {
                    self.framed = true;
                    match self.decode_frame(body) {
                        Ok(Frame::Batched(events)) => {
                            self.batch.msgs.push(events);
                            if self.batch.msgs.count < BATCH_MSGS
                                && self.batch.events.len() < BATCH_EVENTS
                            {
                                continue;
                            }
                            // Full: send it and go on decoding.
                            match self.take_batch() {
                                Some(submit) => return submit,
                                None => continue,
                            }
                        }
                        Ok(Frame::Other(msg)) => Action::Handle {
                            msg,
                            arrived: self.arrived,
                            read_at: self.read_at,
                        },
                        Err(reply) => Action::Reply(reply),
                    }
                }
                Ok(None) => {
                    if let Some(submit) = self.take_batch() {
                        return submit;
                    }
                    let framed = std::mem::take(&mut self.framed);
                    self.deadlines
                        .before_read(now, framed, !self.buf.is_empty());
                    let (deadline, timeout) = self.deadlines.next();
                    return Action::Read { deadline, timeout };
                }
                Err(error) => {
                    Counters::add(&self.counters.tcp_bad_frames, 1);
                    tracing::warn!(peer = %self.peer, %error, "closing riemann tcp connection");
                    Action::Reply(match error {
                        // A client of another protocol cannot read a protobuf reply.
                        FrameError::LooksLikeTls => {
                            self.counters.tcp_foreign(ForeignProtocol::Tls);
                            Reply::Foreign(b"")
                        }
                        FrameError::LooksLikeHttp => {
                            self.counters.tcp_foreign(ForeignProtocol::Http);
                            Reply::Foreign(HTTP_REPLY)
                        }
                        FrameError::TooLarge { .. } => Reply::Fatal(error_msg(error.to_string())),
                    })
                }
            };
            // Whatever comes next, what is batched goes first.
            return match self.take_batch() {
                Some(submit) => {
                    self.after_batch = Some(action);
                    submit
                }
                None => action,
            };
        }
    }

    /// The buffer to read into, with room for a read.
    pub(super) fn read_buffer(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        &mut self.buf
    }

    /// Bytes buffered: the start of a frame not yet whole.
    pub(super) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// A read brought data into [`Self::read_buffer`], at these times.
    pub(super) fn received(&mut self, arrived: i64, read_at: Instant) {
        self.arrived = arrived;
        self.read_at = read_at;
    }

    /// The batched Msgs as one engine command, if anything is batched.
    fn take_batch(&mut self) -> Option<Action> {
        if self.batch.msgs.count == 0 {
            return None;
        }
        // The next batch is likely the size of this one: reserve that, rather than growing from 1.
        let expected = self.batch.events.len().min(BATCH_EVENTS);
        let events = std::mem::replace(&mut self.batch.events, Vec::with_capacity(expected));
        Some(Action::Submit {
            events,
            msgs: std::mem::take(&mut self.batch.msgs),
            read_at: self.read_at,
        })
    }

    /// Decodes one frame: events are appended to the batch (straight from the decoded Msg, no
    /// Vec per Msg), any other Msg is returned to be handled on its own.
    fn decode_frame(&mut self, body: Bytes) -> Result<Frame, Reply> {
        // Counted on the wire first: decoding is where a small frame becomes a large Msg.
        if let Err(error) = convert::check_limits(&body, &self.limits) {
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
        self.batch
            .events
            .extend(convert::events_from_proto(msg.events, self.arrived));
        Ok(Frame::Batched(events))
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
mod tests;
