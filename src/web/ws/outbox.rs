//! One client's outbox: the frames a session has decided to send and the socket has not yet
//! taken, bounded in bytes by `--ws-queue-bytes`, and the budget of resynchronisations a client
//! that falls behind may have.
//!
//! Falling behind is judged here: a change that does not fit in the byte budget is refused
//! ([`Outbox::offer`]) and the session resynchronises the client with a fresh snapshot instead.
//! The snapshot itself (or a resume's replay) is counted apart: it is the client's starting
//! point, as large as the index, and changes queue behind it up to the budget while it is being
//! written. Counting it against the budget made every change that arrived during a snapshot
//! larger than `--ws-queue-bytes` mark the client lagging — a new snapshot, and so on until
//! 1008 — however fast the client read. At most one snapshot waits (a new one replaces it), so
//! what a client holds stays one snapshot plus the budget.
//! A snapshot replaces the view still queued ([`Outbox::drop_queued_view`]), so however often a
//! client subscribes, at most one snapshot waits for it. The outbox writes through any
//! `Sink<Message>` ([`Outbox::poll_write`]), and knows nothing of the broadcast, the engine or
//! client messages: the session decides what to queue and when to write.

use std::collections::VecDeque;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt};
use tokio::time::Instant;

use super::DRAIN_BATCH;

/// Outbox slots kept once it has drained (see [`Outbox::poll_write`]).
const SHRINK_ABOVE: usize = 4 * DRAIN_BATCH;

/// Pong bytes tungstenite may hold for a client before they are flushed. A ping read makes
/// tungstenite buffer its pong, and a client that sends pings without reading would otherwise
/// grow that buffer without end (1.3 GiB in 7 s). Honest clients ping every few seconds at most:
/// 64 KiB is 500 pongs of the largest size, or 32,000 empty ones, between two flushes.
pub(super) const MAX_UNSENT_PONG_BYTES: usize = 64 * 1024;

/// Frames joined into one `batch` message at most, and its bytes at most (a frame larger than
/// that still leaves, alone): bounds the copy a batch costs and what a page parses in one task.
const MAX_BATCH_FRAMES: usize = 512;
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// The window over which resynchronisations are counted against `ws_max_resyncs`.
const RESYNC_WINDOW: Duration = Duration::from_secs(60);

/// What waits in the outbox.
pub(super) enum Outgoing {
    /// A frame that stands on its own: stats, an error reply.
    Frame(Utf8Bytes),
    /// The client's one `metrics` frame: at most one waits, replaced (by the session, through
    /// [`Outbox::take_queued_metrics`]) while unsent.
    Metrics(Utf8Bytes),
    /// A change: part of the client's view, superseded by a new snapshot.
    View(Utf8Bytes),
    /// A snapshot, or a frame of a resume's replay: the start of the client's view, superseded
    /// by a new snapshot, and not counted against the byte budget (see the module doc).
    Start(Utf8Bytes),
    Ping,
    Close(u16, &'static str),
}

impl Outgoing {
    /// What the item counts against the byte budget: its text.
    fn bytes(&self) -> usize {
        match self {
            Outgoing::Frame(frame)
            | Outgoing::Metrics(frame)
            | Outgoing::View(frame)
            | Outgoing::Start(frame) => frame.len(),
            Outgoing::Ping | Outgoing::Close(..) => 0,
        }
    }

    /// Of [`Outgoing::bytes`], what does not count against the byte budget.
    fn start_bytes(&self) -> usize {
        match self {
            Outgoing::Start(frame) => frame.len(),
            _ => 0,
        }
    }
}

/// Frames decided on but not yet flushed to the socket, and their size.
pub(super) struct Outbox {
    items: VecDeque<Outgoing>,
    /// What `bytes` may reach before changes are refused (`--ws-queue-bytes`).
    limit: usize,
    /// Bytes of frames queued here or handed to the socket since its last flush.
    bytes: usize,
    /// Of `bytes`, those of snapshot and replay frames ([`Outgoing::Start`]); the rest is
    /// what `--ws-queue-bytes` bounds.
    start_bytes: usize,
    /// Of `bytes`, those already handed to the socket.
    unflushed: usize,
    /// Of `unflushed`, those of snapshot and replay frames.
    unflushed_start: usize,
    /// The socket holds frames that still need a flush.
    needs_flush: bool,
    /// A `metrics` frame was handed to the socket and is not yet flushed: the next one waits
    /// (see [`Outbox::metrics_in_flight`]).
    metrics_unflushed: bool,
    /// A `metrics` frame waits in `items` (at most one does: see [`Outbox::holds_metrics`]).
    metrics_queued: bool,
    /// Wire bytes of the pongs tungstenite queued for pings read since the last complete flush:
    /// an upper bound of what it holds for them (see [`MAX_UNSENT_PONG_BYTES`]).
    unsent_pong_bytes: usize,
    /// The client asked for `batch` messages (`/ws?batch=true`): view frames queued together
    /// leave as one websocket message. A browser spends a task per message (in a storm profile,
    /// a quarter of the page's main thread went to that at 1,000 changes/s), so a client that
    /// fell a little behind catches up in a few messages instead of one per change.
    batching: bool,
}

impl Outbox {
    /// An empty outbox that refuses changes past `limit` bytes.
    pub(super) fn new(limit: usize) -> Self {
        Self {
            items: VecDeque::new(),
            limit,
            bytes: 0,
            start_bytes: 0,
            unflushed: 0,
            unflushed_start: 0,
            needs_flush: false,
            metrics_unflushed: false,
            metrics_queued: false,
            unsent_pong_bytes: 0,
            batching: false,
        }
    }

    /// From now on, join view frames queued together into `batch` messages.
    pub(super) fn batch_views(&mut self, batching: bool) {
        self.batching = batching;
    }

    /// Nothing queued and nothing waiting in the socket.
    pub(super) fn is_idle(&self) -> bool {
        self.items.is_empty() && !self.needs_flush
    }

    /// Bytes queued or handed to the socket and not yet flushed.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Queues an item unless the outbox is over its byte limit; false means "fell behind". An
    /// outbox holding no counted bytes takes a frame of any size, so a change larger than the
    /// limit still leaves. A snapshot being written does not count (see the module doc).
    pub(super) fn offer(&mut self, item: Outgoing) -> bool {
        let counted = self.bytes - self.start_bytes;
        if counted + item.bytes() > self.limit && counted > 0 {
            return false;
        }
        self.push(item);
        true
    }

    /// Queues an item whatever its size: replies, snapshots, pings, the close frame.
    pub(super) fn push(&mut self, item: Outgoing) {
        self.metrics_queued |= matches!(item, Outgoing::Metrics(_));
        self.bytes += item.bytes();
        self.start_bytes += item.start_bytes();
        self.items.push_back(item);
    }

    /// Drops the snapshot and changes still queued: a new snapshot replaces the client's view.
    /// Frames already handed to the socket stay (they are part of the stream the client reads).
    pub(super) fn drop_queued_view(&mut self) {
        let (mut dropped, mut dropped_start) = (0, 0);
        self.items.retain(|item| match item {
            Outgoing::View(_) | Outgoing::Start(_) => {
                dropped += item.bytes();
                dropped_start += item.start_bytes();
                false
            }
            _ => true,
        });
        self.bytes -= dropped;
        self.start_bytes -= dropped_start;
    }

    /// Takes the queued `metrics` frame out, if one is still waiting (not yet handed to the
    /// socket): the session replaces it with one carrying its values and newer ones.
    pub(super) fn take_queued_metrics(&mut self) -> bool {
        if !std::mem::take(&mut self.metrics_queued) {
            return false;
        }
        let Some(at) = self
            .items
            .iter()
            .position(|item| matches!(item, Outgoing::Metrics(_)))
        else {
            return false;
        };
        if let Some(item) = self.items.remove(at) {
            self.bytes -= item.bytes();
        }
        true
    }

    /// Whether a `metrics` frame is queued or handed to the socket and not yet flushed: the
    /// session then has one out, and queues the next only with the next interval's values.
    pub(super) fn holds_metrics(&self) -> bool {
        self.metrics_queued || self.metrics_unflushed
    }

    /// Whether a `metrics` frame handed to the socket is still unflushed (the client is not
    /// reading it). The session then queues no other: values keep merging until it has left,
    /// so a client that does not read holds one frame, not one per interval.
    pub(super) fn metrics_in_flight(&self) -> bool {
        self.metrics_unflushed
    }

    /// Records a ping read: tungstenite has queued (or will queue) its pong. False when the
    /// client's unflushed pongs are past [`MAX_UNSENT_PONG_BYTES`].
    pub(super) fn pong_queued(&mut self, payload_len: usize) -> bool {
        // A server frame's header is 2 bytes for a control payload (at most 125 bytes).
        self.unsent_pong_bytes += 2 + payload_len;
        // Make the session flush so the pong leaves even when nothing else is queued.
        self.needs_flush = true;
        self.unsent_pong_bytes <= MAX_UNSENT_PONG_BYTES
    }

    /// Makes the next write flush the socket even when nothing is queued: what the socket
    /// holds of its own (tungstenite's reply to a close) leaves with it.
    pub(super) fn flush_on_next_write(&mut self) {
        self.needs_flush = true;
    }

    /// Feeds every queued frame to the socket, then flushes it once. Cancel-safe: every frame
    /// is either still queued or handed to the socket, and the byte count follows.
    ///
    /// `Ready(Ok(true))`: all flushed. `Ready(Ok(false))`: progress, but the socket is full (the
    /// caller restarts its write deadline and polls again). `Pending`: no progress possible now.
    /// `Ready(Err(()))`: the socket failed; the connection is to be dropped.
    pub(super) fn poll_write<S>(
        &mut self,
        sink: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<Result<bool, ()>>
    where
        S: Sink<Message> + Unpin,
    {
        let mut progressed = false;
        while !self.items.is_empty() {
            match sink.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
                Poll::Pending if progressed => return Poll::Ready(Ok(false)),
                Poll::Pending => return Poll::Pending,
            }
            let Some(message) = self.next_message() else {
                break;
            };
            if sink.start_send_unpin(message).is_err() {
                return Poll::Ready(Err(()));
            }
            self.needs_flush = true;
            progressed = true;
        }
        if self.needs_flush {
            match sink.poll_flush_unpin(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
                Poll::Pending if progressed => return Poll::Ready(Ok(false)),
                Poll::Pending => return Poll::Pending,
            }
            self.bytes -= self.unflushed;
            self.start_bytes -= self.unflushed_start;
            self.unflushed = 0;
            self.unflushed_start = 0;
            self.needs_flush = false;
            self.metrics_unflushed = false;
            // The flush wrote tungstenite's pending pongs too.
            self.unsent_pong_bytes = 0;
        }
        // A client that was far behind may have queued thousands of frames; don't keep room
        // for them on every connection.
        if self.items.capacity() > SHRINK_ABOVE {
            self.items.shrink_to(DRAIN_BATCH);
        }
        Poll::Ready(Ok(true))
    }
}

impl Outbox {
    /// The next websocket message: a `batch` of the view frames leading the queue when the
    /// client asked for batches and more than one leads, otherwise the first item as it is. The
    /// byte counts follow what leaves the queue.
    fn next_message(&mut self) -> Option<Message> {
        if self.batching && self.view_frames_ahead() > 1 {
            return Some(Message::Text(self.take_batch()));
        }
        let message = match self.items.pop_front() {
            Some(Outgoing::Frame(frame) | Outgoing::View(frame)) => {
                self.unflushed += frame.len();
                Message::Text(frame)
            }
            Some(Outgoing::Metrics(frame)) => {
                self.unflushed += frame.len();
                self.metrics_queued = false;
                self.metrics_unflushed = true;
                Message::Text(frame)
            }
            Some(Outgoing::Start(frame)) => {
                self.unflushed += frame.len();
                self.unflushed_start += frame.len();
                Message::Text(frame)
            }
            Some(Outgoing::Ping) => Message::Ping(Default::default()),
            Some(Outgoing::Close(code, reason)) => {
                // Nothing may follow a close frame.
                self.metrics_queued = false;
                for item in self.items.drain(..) {
                    self.bytes -= item.bytes();
                    self.start_bytes -= item.start_bytes();
                }
                Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                }))
            }
            None => return None,
        };
        Some(message)
    }

    /// How many view frames (changes, actions, a snapshot, a replay) lead the queue, up to the
    /// batch limits.
    fn view_frames_ahead(&self) -> usize {
        let mut bytes = 0;
        self.items
            .iter()
            .take(MAX_BATCH_FRAMES)
            .take_while(|item| match item {
                Outgoing::View(frame) | Outgoing::Start(frame) => {
                    bytes += frame.len() + 1;
                    bytes <= MAX_BATCH_BYTES
                }
                _ => false,
            })
            .count()
    }

    /// Takes the view frames leading the queue (see [`Outbox::view_frames_ahead`]) as one
    /// `{"type":"batch","frames":[…]}` text: the frames' own bytes, joined, never re-serialized.
    fn take_batch(&mut self) -> Utf8Bytes {
        let count = self.view_frames_ahead();
        let mut text = String::with_capacity(MAX_BATCH_BYTES.min(64 * 1024));
        text.push_str(crate::protocol::BATCH_OPEN);
        for i in 0..count {
            let frame = match self.items.pop_front() {
                Some(Outgoing::View(frame)) => frame,
                Some(Outgoing::Start(frame)) => {
                    self.unflushed_start += frame.len();
                    frame
                }
                Some(other) => {
                    // Not reached: the frames counted above are views; put it back unsent.
                    self.items.push_front(other);
                    break;
                }
                None => break,
            };
            if i > 0 {
                text.push(',');
            }
            text.push_str(frame.as_str());
            self.unflushed += frame.len();
        }
        text.push_str(crate::protocol::BATCH_CLOSE);
        text.into()
    }
}

/// When a client's recent resynchronisations happened, to allow at most `max` per
/// [`RESYNC_WINDOW`]: a client that falls behind again and again is closed instead of being sent
/// snapshot after snapshot.
pub(super) struct Resyncs {
    times: VecDeque<Instant>,
    max: u32,
}

impl Resyncs {
    pub(super) fn new(max: u32) -> Self {
        Self {
            times: VecDeque::new(),
            max,
        }
    }

    /// Records a resynchronisation at `now`; false when the client has needed too many lately.
    pub(super) fn allow(&mut self, now: Instant) -> bool {
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) > RESYNC_WINDOW)
        {
            self.times.pop_front();
        }
        if self.times.len() >= self.max as usize {
            return false;
        }
        self.times.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests;
