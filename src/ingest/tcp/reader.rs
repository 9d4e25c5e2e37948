//! The reading half of a Riemann TCP connection: frames in, engine commands and reply slots out.
//!
//! What one read brings is split into frames (the frame decoder also names a TLS or HTTP client
//! that knocked on the wrong port); each Msg is checked against the connection's limits on the
//! wire before it is decoded. The event-only Msgs of one read go to the engine as one batch with
//! one acknowledgement; anything else (a query, an empty Msg, bad input) first sends what is
//! batched, so request order is kept. For each request a [`Reply`] slot is queued for the
//! writer; the queue is bounded, so a client that never reads its replies stops being read. A
//! connection is closed when it sends no first frame in time, leaves a started frame unfinished
//! too long, or idles between frames past the idle timeout. This half never writes the socket.
//!
//! Those rules are [`state::ReadState`]'s, decided on the buffered bytes alone (and tested so);
//! this file performs what it decides: engine commands, queries, the reply queue and the reads.

use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use self::state::{Action, ReadState};
use super::writer::{error_msg, ok_msg, MsgSizes, Reply};
use super::{Connection, QUERIES_DISABLED};
use crate::event::convert;
use crate::event::now_micros;
use crate::metrics::TcpTimeout;
use crate::proto::Msg;
use crate::query::Query;

mod state;

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

impl Connection {
    /// Reads requests until the connection ends: performs what [`ReadState`] decides (engine
    /// commands, reply slots, reads) and tells it what each read brought.
    pub(super) async fn read_requests<R: AsyncRead + Unpin>(
        &self,
        read: &mut R,
        replies: mpsc::Sender<Reply>,
        shutdown: CancellationToken,
    ) -> ReadEnd {
        let queries = Arc::new(Semaphore::new(QUERIES_IN_FLIGHT));
        let mut state = ReadState::new(
            &self.config,
            Arc::clone(&self.counters),
            self.peer,
            tokio::time::Instant::now(),
            now_micros(),
            Instant::now(),
        );
        loop {
            let reply = match state.next(tokio::time::Instant::now()) {
                Action::Submit {
                    events,
                    msgs,
                    read_at,
                } => match self.engine.submit(events).await {
                    Ok(ack) => Reply::Pending(ack, msgs, read_at),
                    Err(error) => Reply::Fatal(error_msg(error.to_string())),
                },
                Action::Handle {
                    msg,
                    arrived,
                    read_at,
                } => match self
                    .handle_msg(msg, arrived, read_at, &queries, &shutdown)
                    .await
                {
                    Some(reply) => reply,
                    None => return ReadEnd::Closed,
                },
                Action::Reply(reply) => reply,
                Action::Read { deadline, timeout } => {
                    let read_result = tokio::select! {
                        // Stop taking requests; those already read are still answered.
                        _ = shutdown.cancelled() => return ReadEnd::Closed,
                        // The writer gave up on the client (write timeout, reset): so does the
                        // reader.
                        _ = replies.closed() => return ReadEnd::Closed,
                        _ = tokio::time::sleep_until(deadline) => {
                            self.timed_out(timeout);
                            return ReadEnd::Closed;
                        }
                        r = read.read_buf(state.read_buffer()) => r,
                    };
                    match read_result {
                        Ok(0) => {
                            if state.buffered() > 0 {
                                tracing::debug!(peer = %self.peer, buffered = state.buffered(), "peer disconnected mid-frame");
                            }
                            return ReadEnd::Closed;
                        }
                        Ok(_) => state.received(now_micros(), Instant::now()),
                        Err(error) => {
                            tracing::debug!(peer = %self.peer, %error, "riemann tcp read failed");
                            return ReadEnd::Closed;
                        }
                    }
                    continue;
                }
            };
            // The reply queue is bounded: a client that does not read its replies stops being
            // read here.
            let fatal = reply.closes();
            if replies.send(reply).await.is_err() {
                return ReadEnd::Closed;
            }
            if fatal {
                return ReadEnd::Fatal;
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
