//! The writing half of a Riemann TCP connection: replies in request order.
//!
//! The reader queues one [`Reply`] slot per request; the writer waits for each in turn and writes
//! replies in batches, flushing only when the next one is not ready yet (or the batch is large),
//! so a pipelining client gets many replies per syscall. A batch of event Msgs is acknowledged in
//! two stages: the Msgs wholly before its first change at once, the rest once that change is
//! durable ([`MsgSizes`] tells which). A query reply is encoded from its snapshot only when the
//! writer reaches it, straight into the output. A client that makes no progress reading its
//! replies for the write timeout is dropped. This half never reads the socket.
//!
//! What each reply becomes (and whether the connection closes after it) is decided by
//! [`state::ReplyState`] without a socket; this file waits, writes and closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use self::state::{Came, ReplyState, Step, Wait};
use crate::engine::{Applied, Snapshot};
use crate::metrics::Counters;
use crate::proto::Msg;
use crate::query::Query;

mod state;

/// Where each of a batch's Msgs ends in its events: tells which Msgs lie wholly before the
/// batch's first change, and can be answered before that change is durable. Kept as one number
/// in the usual case of Msgs of equal size (a client's batches rarely vary).
#[derive(Debug, Default, Clone)]
pub(super) struct MsgSizes {
    pub(super) count: usize,
    /// Events per Msg while every Msg so far had the same number.
    uniform: Option<usize>,
    /// Each Msg's end, once sizes differ.
    ends: Vec<usize>,
}

impl MsgSizes {
    /// Notes a Msg of `events` events (at least one: empty Msgs are not batched).
    pub(super) fn push(&mut self, events: usize) {
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
    pub(super) fn before(&self, first_change: usize) -> usize {
        match self.uniform {
            Some(size) => (first_change / size.max(1)).min(self.count),
            None => self.ends.partition_point(|&end| end <= first_change),
        }
    }
}

/// Where replies go and how long a write may stall.
#[derive(Debug, Clone)]
pub(super) struct Link {
    pub(super) peer: SocketAddr,
    pub(super) write_timeout: Duration,
    /// Where a client dropped for not reading is counted.
    pub(super) counters: Arc<Counters>,
}

/// One reply slot, in request order.
pub(super) enum Reply {
    /// Wait for the engine to apply the batch, then answer `ok` once per `Msg` it holds (those
    /// before its first change at once, the rest once the change is durable).
    /// The `Instant` is when the read that brought the Msgs returned (for
    /// `statecast_tcp_ack_seconds`).
    Pending(oneshot::Receiver<Applied>, MsgSizes, Instant),
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

impl Reply {
    /// Whether the connection closes after this reply.
    pub(super) fn closes(&self) -> bool {
        matches!(self, Reply::Fatal(_) | Reply::Foreign(_))
    }
}

pub(super) fn ok_msg() -> Msg {
    Msg {
        ok: Some(true),
        ..Default::default()
    }
}

pub(super) fn error_msg(error: String) -> Msg {
    Msg {
        ok: Some(false),
        error: Some(error),
        ..Default::default()
    }
}

/// Writes replies in request order, batching writes: a flush happens only when the next reply is
/// not ready yet (or the batch is large), so a pipelining client gets many replies per syscall.
/// What each reply becomes is [`ReplyState`]'s decision; this performs the waits and writes.
pub(super) async fn write_replies<W: AsyncWrite + Unpin>(
    mut write: W,
    mut replies: mpsc::Receiver<Reply>,
    link: Link,
    max_frame_bytes: usize,
    counters: Arc<Counters>,
) {
    let mut state = ReplyState::new(max_frame_bytes);
    while let Some(mut reply) = replies.recv().await {
        loop {
            // A query's permit, returned once its reply is written or handed to the socket.
            let (mut step, query_permit) = state.begin(reply);
            let (acked, close) = loop {
                step = match step {
                    Step::Wait(what) => {
                        let Some(came) = wait_for(what, &mut write, state.out(), &link).await
                        else {
                            return;
                        };
                        state.came(came)
                    }
                    Step::Done { acked } => break (acked, false),
                    Step::Close { acked } => break (acked, true),
                };
            };
            if let Some(read_at) = acked {
                counters.tcp_ack_seconds.observe(read_at.elapsed());
            }
            if close {
                flush(&mut write, state.out(), &link).await;
                let _ = write.shutdown().await;
                return;
            }
            if state.full() && !flush(&mut write, state.out(), &link).await {
                return;
            }
            // A large query reply was just written; a small one waits in `out`, which is small.
            drop(query_permit);
            match replies.try_recv() {
                Ok(next) => reply = next,
                Err(_) => break,
            }
        }
        if !flush(&mut write, state.out(), &link).await {
            return;
        }
    }
    let _ = write.shutdown().await;
}

/// Waits for what a reply slot waits for; `None` when the peer is gone meanwhile.
async fn wait_for<W: AsyncWrite + Unpin>(
    what: Wait,
    write: &mut W,
    out: &mut BytesMut,
    link: &Link,
) -> Option<Came> {
    Some(match what {
        Wait::Applied(rx, msgs, read_at) => {
            Came::Applied(wait(rx, write, out, link).await?, msgs, read_at)
        }
        Wait::Durable(rx, owed, read_at) => {
            Came::Durable(wait(rx, write, out, link).await?, owed, read_at)
        }
        Wait::Snapshot(rx, query) => Came::Snapshot(wait(rx, write, out, link).await?, query),
    })
}

/// Waits for a reply slot's result. If it is not ready yet, whatever is buffered is sent first
/// so the client is not kept waiting for replies that are ready. `None` when the peer is gone.
async fn wait<T, W: AsyncWrite + Unpin>(
    mut rx: oneshot::Receiver<T>,
    write: &mut W,
    out: &mut BytesMut,
    link: &Link,
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

/// Writes out everything buffered; false when the peer is gone or made no progress reading it
/// for the write timeout (it is then dropped).
async fn flush<W: AsyncWrite + Unpin>(write: &mut W, out: &mut BytesMut, link: &Link) -> bool {
    let mut written = 0;
    let result = loop {
        if written == out.len() {
            // A TLS stream keeps the last records it could not send until flushed; a TCP
            // socket's flush does nothing.
            match tokio::time::timeout(link.write_timeout, write.flush()).await {
                Ok(Ok(())) => break Ok(()),
                Ok(Err(error)) => break Err(error.to_string()),
                Err(_) => {}
            }
        } else {
            match tokio::time::timeout(link.write_timeout, write.write(&out[written..])).await {
                Ok(Ok(0)) => break Err("peer closed the connection".to_owned()),
                Ok(Ok(n)) => {
                    written += n;
                    continue;
                }
                Ok(Err(error)) => break Err(error.to_string()),
                Err(_) => {}
            }
        }
        // The write (or the flush) made no progress for the write timeout.
        Counters::add(&link.counters.tcp_write_timeouts, 1);
        tracing::info!(
            peer = %link.peer,
            timeout_secs = link.write_timeout.as_secs(),
            unwritten = out.len() - written,
            "riemann tcp client is not reading its replies (--tcp-write-timeout); dropping it"
        );
        out.clear();
        return false;
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
