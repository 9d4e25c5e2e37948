//! One dashboard websocket: snapshot, then changes, then stats — without ever slowing anyone else.
//!
//! Each client is one task that owns both halves of its socket and selects over the broadcast
//! receiver, the socket's input, the ping timer and the socket's write readiness. What it decides
//! to send goes into a small local outbox (a `VecDeque`, bounded in bytes by `--ws-queue-bytes`);
//! whenever the socket can take data, every queued frame is fed to the socket and flushed once.
//!
//! Why one task and not a session plus a writer: at a thousand clients a change costs a wake-up
//! per client, and with two tasks it cost two (session → channel → writer) plus an atomic byte
//! counter, a `Notify` and a split-lock hand-off per frame; profiles of the fan-out showed that
//! hand-off, not serialization, as the per-delivery cost. One task is also ~2 KiB less memory
//! per idle connection. Each change is still serialized once ([`Published::frame`]) and shared by
//! reference count. Changes that arrive while the socket is busy (or in one engine batch) are
//! drained from the receiver together, fed to the sink and flushed once; whether that becomes one
//! `send` or one per frame is tungstenite's write buffer (`write_buffer_size` in
//! [`super::configure`]): with 0 every frame is written as it is fed, and at 1,000 clients those
//! per-frame system calls are most of the server's time. For the same reason a session that is
//! receiving a stream of changes rests [`COALESCE`] (2 ms) after each write, neither taking
//! changes nor writing: each dashboard then costs one wake-up and one send per window, not per
//! change. A session that is not (writes further apart than [`STREAMING_GAP`]) does not rest.
//!
//! Never slowing anyone else: the broadcaster never waits on a client. When a client falls behind
//! (outbox over its byte limit, or its broadcast receiver lagged), the session stops queueing
//! changes, lets the outbox drain and then sends a fresh snapshot marked `reset`: the client is
//! resynchronised, never silently deaf. A client that needs that too often is closed with 1008
//! "slow consumer"; one whose socket takes no data for `--ws-write-timeout` is dropped.
//!
//! What a client sends is bounded too, because each message can make the server queue a reply
//! whatever the client reads. A ping makes tungstenite queue a pong: pongs not yet flushed count
//! against [`MAX_UNSENT_PONG_BYTES`], past which the client is closed with 1008 "too many pings"
//! and no longer read. A subscribe costs a snapshot: it drops the snapshot and changes still
//! waiting in the outbox, and its own snapshot is built only once the outbox has drained, so a
//! client that subscribes without reading holds at most one. Client messages are rate-limited
//! too ([`MessageBudget`]; each may compile a query): past the budget a message is ignored with
//! one `error` frame "too many subscribes", and [`MAX_REFUSED_MESSAGES`] refusals in a row
//! close the client with 1008.
//! Invalid UTF-8 in a text message closes with 1007. Resume replays are read from history on a
//! blocking thread, never on a runtime worker.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream, StreamExt};
use futures_util::SinkExt;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::AppState;
use crate::broadcast::{self, Published, Receiver};
use crate::metrics::Counters;
use crate::query::Query;

/// Close codes (RFC 6455).
const GOING_AWAY: u16 = 1001;
const INVALID_PAYLOAD: u16 = 1007;
const POLICY_VIOLATION: u16 = 1008;
const MESSAGE_TOO_BIG: u16 = 1009;

/// The window over which resynchronisations are counted against `ws_max_resyncs`.
const RESYNC_WINDOW: Duration = Duration::from_secs(60);

/// Changes taken from the broadcast receiver per wake-up before the socket gets a turn, so a
/// client that is behind writes in batches instead of first pulling its whole byte budget. With
/// [`COALESCE`], at most this many changes per window per client: 128,000 a second.
const DRAIN_BATCH: usize = 256;

/// After a write, the session rests this long — taking no changes and writing nothing — so that
/// what arrives meanwhile is taken, and leaves, together. Under a steady stream (10,000 changes a
/// second during heavy ingest) a dashboard then costs one wake-up and one send per window
/// instead of one per change; profiles showed those per-change wake-ups of every dashboard
/// competing with ingest. A change after a quiet spell leaves at once; 2 ms is invisible on a
/// screen. The broadcast buffer holds what waits (`--broadcast-capacity`).
const COALESCE: Duration = Duration::from_millis(2);
/// ...unless this much is already queued: then it goes at once.
const COALESCE_BYTES: usize = 16 * 1024;
/// A write finished within this time of the one before means changes are streaming: only then
/// does the session rest. Otherwise (a dashboard's usual day: a change every few seconds, or 100
/// a second across a fleet) the rest buys nothing and costs every client a timer and a second
/// wake-up per change. Measured (`statecast-swarm`, same run, two rounds): 5,000 clients at a
/// fixed rate, p99 62–93 ms → 39–41 ms; 1,000 clients as fast as posts are answered, 2.15–2.19M
/// → 2.05–2.17M deliveries/s (within noise). With 4 ms instead, that second figure lost 8–13%.
const STREAMING_GAP: Duration = Duration::from_millis(8);

/// Outbox slots kept once it has drained (see [`Outbox::poll_write`]).
const SHRINK_ABOVE: usize = 4 * DRAIN_BATCH;

/// Pong bytes tungstenite may hold for a client before they are flushed. A ping read makes
/// tungstenite buffer its pong, and a client that sends pings without reading would otherwise
/// grow that buffer without end (1.3 GiB in 7 s). Honest clients ping every few seconds at most:
/// 64 KiB is 500 pongs of the largest size, or 32,000 empty ones, between two flushes.
const MAX_UNSENT_PONG_BYTES: usize = 64 * 1024;

/// Client messages (subscribes) allowed at once, and refilled per second after that. A
/// dashboard subscribes when its filter changes: a few a minute. Each subscribe costs a
/// snapshot (a megabyte at 10,000 keys), so a client must not make the server build them at will.
const MESSAGE_BURST: f64 = 10.0;
const MESSAGES_PER_SECOND: f64 = 2.0;
/// Messages refused in a row (over the budget) after which the client is closed with 1008.
const MAX_REFUSED_MESSAGES: u32 = 100;

#[derive(Debug, Clone)]
pub struct WsConfig {
    pub queue_bytes: usize,
    pub max_resyncs: u32,
    pub write_timeout: Duration,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
}

/// What waits in the outbox.
enum Outgoing {
    /// A frame that stands on its own: stats, an error reply.
    Frame(Utf8Bytes),
    /// A snapshot or a change: part of the client's view, superseded by a new snapshot.
    View(Utf8Bytes),
    Ping,
    Close(u16, &'static str),
}

type Sink = SplitSink<WebSocket, Message>;

/// Frames decided on but not yet flushed to the socket, and their size.
#[derive(Default)]
struct Outbox {
    items: VecDeque<Outgoing>,
    /// Bytes of frames queued here or handed to the socket since its last flush: what
    /// `--ws-queue-bytes` bounds.
    bytes: usize,
    /// Of `bytes`, those already handed to the socket.
    unflushed: usize,
    /// The socket holds frames that still need a flush.
    needs_flush: bool,
    /// Wire bytes of the pongs tungstenite queued for pings read since the last complete flush:
    /// an upper bound of what it holds for them (see [`MAX_UNSENT_PONG_BYTES`]).
    unsent_pong_bytes: usize,
}

impl Outbox {
    /// Nothing queued and nothing waiting in the socket.
    fn is_idle(&self) -> bool {
        self.items.is_empty() && !self.needs_flush
    }

    /// Drops the snapshot and changes still queued: a new snapshot replaces the client's view.
    /// Frames already handed to the socket stay (they are part of the stream the client reads).
    fn drop_queued_view(&mut self) {
        let mut dropped = 0;
        self.items.retain(|item| match item {
            Outgoing::View(frame) => {
                dropped += frame.len();
                false
            }
            _ => true,
        });
        self.bytes -= dropped;
    }

    /// Records a ping read: tungstenite has queued (or will queue) its pong. False when the
    /// client's unflushed pongs are past [`MAX_UNSENT_PONG_BYTES`].
    fn pong_queued(&mut self, payload_len: usize) -> bool {
        // A server frame's header is 2 bytes for a control payload (at most 125 bytes).
        self.unsent_pong_bytes += 2 + payload_len;
        // Make the session flush so the pong leaves even when nothing else is queued.
        self.needs_flush = true;
        self.unsent_pong_bytes <= MAX_UNSENT_PONG_BYTES
    }

    /// Feeds every queued frame to the socket, then flushes it once. Cancel-safe: every frame
    /// is either still queued or handed to the socket, and the byte count follows.
    ///
    /// `Ready(Ok(true))`: all flushed. `Ready(Ok(false))`: progress, but the socket is full (the
    /// caller restarts its write deadline and polls again). `Pending`: no progress possible now.
    fn poll_write(&mut self, sink: &mut Sink, cx: &mut Context<'_>) -> Poll<Result<bool, ()>> {
        let mut progressed = false;
        while !self.items.is_empty() {
            match sink.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
                Poll::Pending if progressed => return Poll::Ready(Ok(false)),
                Poll::Pending => return Poll::Pending,
            }
            let message = match self.items.pop_front() {
                Some(Outgoing::Frame(frame) | Outgoing::View(frame)) => {
                    self.unflushed += frame.len();
                    Message::Text(frame)
                }
                Some(Outgoing::Ping) => Message::Ping(Default::default()),
                Some(Outgoing::Close(code, reason)) => {
                    // Nothing may follow a close frame.
                    self.items.clear();
                    Message::Close(Some(CloseFrame {
                        code,
                        reason: reason.into(),
                    }))
                }
                None => break,
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
            self.unflushed = 0;
            self.needs_flush = false;
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

/// Keeps the `clients` count true however the session ends.
struct ClientGuard(Arc<Counters>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.ws_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

pub async fn run(
    socket: WebSocket,
    app: AppState,
    filter: Option<Query>,
    resume: Option<Resume>,
    _permit: OwnedSemaphorePermit,
) {
    Counters::add(&app.counters.ws_clients, 1);
    let _guard = ClientGuard(Arc::clone(&app.counters));
    let (sink, stream) = socket.split();
    let session = Session {
        app,
        out: Outbox::default(),
        resyncs: VecDeque::new(),
        filter,
        resume,
        budget: MessageBudget::new(Instant::now()),
    };
    session.run(sink, stream).await;
}

struct Session {
    app: AppState,
    out: Outbox,
    /// When recent resynchronisations happened, to enforce `max_resyncs` per window.
    resyncs: VecDeque<Instant>,
    /// The client's subscription query; `None` is everything.
    filter: Option<Query>,
    /// Where a reconnecting client left off; used by the first subscription only.
    resume: Option<Resume>,
    /// How many messages the client may still send now.
    budget: MessageBudget,
}

/// A token bucket over client messages: [`MESSAGE_BURST`] at once, [`MESSAGES_PER_SECOND`] after.
struct MessageBudget {
    tokens: f64,
    updated: Instant,
    /// Messages refused since the last one accepted.
    refused_in_a_row: u32,
}

/// What to do with a client message, by the budget.
#[derive(Debug, PartialEq, Eq)]
enum Admission {
    Accept,
    /// Ignore it; `true` for the first refusal in a row (the one that gets an error frame).
    Refuse {
        tell: bool,
    },
    /// Too many refused in a row: close the client.
    Close,
}

impl MessageBudget {
    fn new(now: Instant) -> Self {
        Self {
            tokens: MESSAGE_BURST,
            updated: now,
            refused_in_a_row: 0,
        }
    }

    fn admit(&mut self, now: Instant) -> Admission {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * MESSAGES_PER_SECOND).min(MESSAGE_BURST);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            return Admission::Accept;
        }
        self.refused_in_a_row += 1;
        if self.refused_in_a_row > MAX_REFUSED_MESSAGES {
            Admission::Close
        } else {
            Admission::Refuse {
                tell: self.refused_in_a_row == 1,
            }
        }
    }
}

/// `/ws?since=SEQ&epoch=E`: a reconnecting client's position.
#[derive(Debug, Clone)]
pub struct Resume {
    pub since: u64,
    pub epoch: String,
}

/// Beyond this many missed changes a resuming client gets a snapshot instead: cheaper for both.
const MAX_RESUME_CHANGES: u64 = 100_000;

/// How a session's main loop ended.
enum End {
    /// Deliver what is queued (a close frame, usually), then drop the connection.
    Flush,
    /// As `Flush`, then keep discarding the client's input for a moment (see [`LINGER`]).
    FlushAndLinger,
    /// The socket failed or stopped taking data: drop it now.
    Drop,
}

impl Session {
    async fn run(mut self, mut sink: Sink, mut stream: SplitStream<WebSocket>) {
        let end = self.serve(&mut sink, &mut stream).await;
        if matches!(end, End::Drop) {
            return;
        }
        // Deliver the close frame behind whatever the client has yet to read, for as long as
        // the socket keeps taking data; the flush also sends tungstenite's own close reply.
        self.out.needs_flush = true;
        let write_timeout = self.app.ws.write_timeout;
        let mut deadline = Instant::now() + write_timeout;
        loop {
            tokio::select! {
                wrote = poll_fn(|cx| self.out.poll_write(&mut sink, cx)) => match wrote {
                    Ok(false) => deadline = Instant::now() + write_timeout,
                    Ok(true) | Err(()) => break,
                },
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
        // Closing a socket with unread input sends RST, which could destroy the close frame
        // before the client reads it.
        if matches!(end, End::FlushAndLinger) {
            let out = &mut self.out;
            let _ = tokio::time::timeout(LINGER, async {
                while let Some(Ok(message)) = stream.next().await {
                    // Pongs queue while lingering too: a ping flood ends the linger.
                    if let Message::Ping(payload) = message {
                        if !out.pong_queued(payload.len()) {
                            break;
                        }
                    }
                }
            })
            .await;
        }
    }

    /// The session proper: returns when the client is to be closed or is gone.
    async fn serve(&mut self, sink: &mut Sink, stream: &mut SplitStream<WebSocket>) -> End {
        let Some(mut changes) = self.subscribe().await else {
            return End::Flush;
        };
        let mut stats = self.app.stats.clone();
        let mut stats_open = true;
        // While lagging, changes are not queued; the receiver is renewed with a fresh snapshot
        // once the outbox has drained.
        let mut lagging = false;
        // Whether the current lag was counted against the resync budget.
        let mut lag_counted = false;
        // The client subscribed (a new filter): changes are not queued; the receiver is renewed
        // with a snapshot once the outbox has drained.
        let mut resubscribe = false;
        let shutdown = self.app.shutdown.clone();
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let mut ping = tokio::time::interval_at(
            Instant::now() + self.app.ws.ping_interval,
            self.app.ws.ping_interval,
        );
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Set when a ping is out and nothing has been heard since; reaching it means the peer
        // is gone (a pulled cable never sends a FIN).
        let mut pong_deadline: Option<Instant> = None;
        // Set while the outbox holds data: the socket must take some before it passes.
        let mut write_deadline: Option<Instant> = None;
        // The end of the rest after the last complete write (see COALESCE).
        let mut resting_until: Option<Instant> = None;
        let mut last_write: Option<Instant> = None;
        loop {
            // Falling behind is judged when it happens, not when the outbox drains: a client
            // that stopped reading altogether never drains, and must not linger until the ping
            // timeout. The close frame queues behind what the client has yet to read; the write
            // timeout drops the connection if it never reads again.
            if lagging && !lag_counted {
                lag_counted = true;
                if !self.allow_resync() {
                    Counters::add(&self.app.counters.ws_slow_closed, 1);
                    self.close(POLICY_VIOLATION, "slow consumer");
                    return End::Flush;
                }
            }
            if lagging && self.out.is_idle() {
                Counters::add(&self.app.counters.ws_resyncs, 1);
                match self.subscribe_with(true).await {
                    Some(fresh) => changes = fresh,
                    None => return End::Flush,
                }
                lag_counted = false;
                lagging = false;
                // That snapshot has the current filter: it answers a pending subscribe too.
                resubscribe = false;
            }
            // A subscribe is answered once the client has read what was queued before it, so
            // a client that subscribes without reading makes the server build no snapshot.
            if resubscribe && self.out.is_idle() {
                match self.subscribe().await {
                    Some(fresh) => changes = fresh,
                    None => return End::Flush,
                }
                resubscribe = false;
            }
            if self.out.is_idle() {
                write_deadline = None;
            } else if write_deadline.is_none() {
                write_deadline = Some(Instant::now() + self.app.ws.write_timeout);
            }
            resting_until =
                resting_until.filter(|at| *at > Instant::now() && self.out.bytes < COALESCE_BYTES);
            let resting = resting_until.is_some();
            // Biased: writing first, then new changes, so changes that arrive together leave
            // together; the branches that rarely fire are polled only when the others wait.
            tokio::select! {
                biased;
                wrote = poll_fn(|cx| self.out.poll_write(sink, cx)),
                    if !self.out.is_idle() && !resting =>
                {
                    match wrote {
                        Ok(true) => {
                            write_deadline = None;
                            let now = Instant::now();
                            if last_write.is_some_and(|last| now - last < STREAMING_GAP) {
                                resting_until = Some(now + COALESCE);
                            }
                            last_write = Some(now);
                        }
                        Ok(false) => {
                            write_deadline = Some(Instant::now() + self.app.ws.write_timeout);
                        }
                        Err(()) => return End::Drop,
                    }
                }
                received = changes.recv(), if !lagging && !resubscribe && !resting => {
                    // Take what else is already there too (up to a batch): one flush for all.
                    let mut next = Some(received);
                    let mut taken = 0;
                    while let Some(received) = next.take() {
                        match received {
                            Ok(published) => {
                                if self.wants(&published.change)
                                    && !self.queue(published.frame(), true)
                                {
                                    lagging = true;
                                }
                            }
                            Err(RecvError::Lagged(_)) => lagging = true,
                            Err(RecvError::Closed) => {
                                self.close(GOING_AWAY, "server shutting down");
                                return End::Flush;
                            }
                        }
                        taken += 1;
                        if lagging || taken == DRAIN_BATCH {
                            break;
                        }
                        next = match changes.try_recv() {
                            Ok(published) => Some(Ok(published)),
                            Err(TryRecvError::Empty) => None,
                            Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
                            Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
                        };
                    }
                }
                incoming = stream.next() => match incoming {
                    Some(Err(error)) if is_too_big(&error) => {
                        self.close(MESSAGE_TOO_BIG, "message too big");
                        return End::FlushAndLinger;
                    }
                    Some(Err(error)) if is_invalid_utf8(&error) => {
                        self.close(INVALID_PAYLOAD, "text message is not valid UTF-8");
                        return End::FlushAndLinger;
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return End::Flush,
                    Some(Ok(Message::Ping(payload))) => {
                        pong_deadline = None;
                        if !self.out.pong_queued(payload.len()) {
                            // No linger: reading on would queue more pongs.
                            self.close(POLICY_VIOLATION, "too many pings");
                            return End::Flush;
                        }
                    }
                    Some(Ok(Message::Text(text))) => {
                        pong_deadline = None;
                        match self.budget.admit(Instant::now()) {
                            Admission::Accept => {}
                            Admission::Refuse { tell } => {
                                if tell {
                                    self.send_error(format!(
                                        "too many subscribes (at most {MESSAGES_PER_SECOND} a \
                                         second, {MESSAGE_BURST} at once): ignored"
                                    ));
                                }
                                continue;
                            }
                            Admission::Close => {
                                self.close(POLICY_VIOLATION, "too many subscribes");
                                return End::FlushAndLinger;
                            }
                        }
                        if let Some(query) = self.client_request(&text).await {
                            // A new filter starts over with a fresh snapshot at a new seq;
                            // whatever of the old view is still queued will never be needed.
                            self.filter = query;
                            self.out.drop_queued_view();
                            resubscribe = true;
                            lagging = false;
                            lag_counted = false;
                        }
                    }
                    // Any sign of life counts as an answer; pings are answered by tungstenite.
                    Some(Ok(_)) => pong_deadline = None,
                },
                // The rest is over: the loop comes round, takes what waited and writes it.
                _ = sleep_until_some(resting_until) => {}
                _ = sleep_until_some(write_deadline) => {
                    tracing::debug!("dashboard took no data within the write timeout; dropping");
                    return End::Drop;
                }
                _ = ping.tick() => {
                    self.out.items.push_back(Outgoing::Ping);
                    pong_deadline.get_or_insert(Instant::now() + self.app.ws.pong_timeout);
                }
                _ = sleep_until_some(pong_deadline) => {
                    tracing::debug!("dashboard did not answer a ping; closing");
                    self.close(POLICY_VIOLATION, "ping timeout");
                    return End::Flush;
                }
                changed = stats.changed(), if stats_open => match changed {
                    Ok(()) => {
                        let frame = stats.borrow_and_update().clone();
                        // Stats are only a heartbeat: skip them for a client that is behind.
                        if !lagging && !self.queue(frame, false) {
                            lagging = true;
                        }
                    }
                    Err(_) => stats_open = false,
                },
                _ = &mut cancelled => {
                    self.close(GOING_AWAY, "server shutting down");
                    return End::Flush;
                }
            }
        }
    }

    /// Takes a snapshot and subscription from the engine and queues the snapshot.
    ///
    /// A resuming client instead gets exactly the changes after its `seq`, from history, when
    /// its epoch matches and history still reaches back that far; otherwise a snapshot marked
    /// `reset`. `reset` also marks the snapshot of a client resynchronised after falling behind.
    ///
    /// Whatever of an earlier snapshot (and the changes after it) is still queued is dropped:
    /// this one replaces it, so subscribing again and again costs at most one queued snapshot.
    async fn subscribe_with(&mut self, reset: bool) -> Option<Receiver> {
        let sub = self.app.engine.subscribe().await.ok()?;
        let mut reset = reset;
        if let Some(resume) = self.resume.take() {
            if let Some(frames) = self.replay(resume, sub.snapshot.seq).await {
                self.out.drop_queued_view();
                for frame in frames {
                    self.push_view(frame);
                }
                return Some(sub.changes);
            }
            reset = true;
        }
        let filter = self.filter.as_ref();
        let frame = broadcast::snapshot_frame(&sub.snapshot, &self.app.epoch, reset, |e| {
            e.state.is_some() && filter.is_none_or(|q| q.matches(e))
        });
        self.out.drop_queued_view();
        self.push_view(frame);
        Some(sub.changes)
    }

    async fn subscribe(&mut self) -> Option<Receiver> {
        self.subscribe_with(false).await
    }

    /// The change frames in (`since`, `upto`] that pass the filter, or `None` when they cannot
    /// all be had (other epoch, pruned history, too many, or a `since` from the future).
    ///
    /// Reading up to [`MAX_RESUME_CHANGES`] rows and serializing them is blocking work
    /// (hundreds of milliseconds): it runs on a blocking thread so that no runtime worker, and no
    /// other connection sharing it, waits for a resume.
    async fn replay(&self, resume: Resume, upto: u64) -> Option<Vec<Utf8Bytes>> {
        if resume.epoch != self.app.epoch || resume.since > upto {
            return None;
        }
        if resume.since == upto {
            return Some(Vec::new());
        }
        if upto - resume.since > MAX_RESUME_CHANGES {
            return None;
        }
        let store = Arc::clone(self.app.store.as_ref()?);
        let filter = self.filter.clone();
        tokio::task::spawn_blocking(move || {
            let oldest = store.oldest_seq().ok()??;
            if oldest > resume.since + 1 {
                return None;
            }
            let limit = (upto - resume.since) as usize;
            let stored = store.history(resume.since, limit, |_| true).ok()?;
            if stored.len() != limit {
                return None;
            }
            Some(
                stored
                    .into_iter()
                    .map(|c| Published::new(c.into_change()))
                    .filter(|p| wants(filter.as_ref(), &p.change))
                    .map(|p| p.frame())
                    .collect(),
            )
        })
        .await
        .ok()?
    }

    fn wants(&self, change: &crate::engine::Change) -> bool {
        wants(self.filter.as_ref(), change)
    }

    /// Handles a client message. Returns the new filter when the client (re)subscribed;
    /// anything unusable is answered with an error frame and changes nothing.
    async fn client_request(&mut self, text: &str) -> Option<Option<Query>> {
        let request: ClientRequest = match serde_json::from_str(text) {
            Ok(request) => request,
            Err(error) => {
                self.send_error(format!("cannot read message: {error}"));
                return None;
            }
        };
        match request {
            ClientRequest::Subscribe { query } => match Query::parse_filter(query.as_deref()).await
            {
                Ok(filter) => Some(filter),
                Err(error) => {
                    self.send_error(error);
                    None
                }
            },
        }
    }

    fn send_error(&mut self, error: String) {
        let frame = serde_json::json!({"type": "error", "error": error}).to_string();
        self.push(frame.into());
    }

    /// Queues a frame unless the outbox is over its byte limit; false means "fell behind".
    /// `view`: a change (superseded by a new snapshot), not a stats heartbeat.
    fn queue(&mut self, frame: Utf8Bytes, view: bool) -> bool {
        let queued = self.out.bytes;
        if queued + frame.len() > self.app.ws.queue_bytes && queued > 0 {
            return false;
        }
        if view {
            self.push_view(frame);
        } else {
            self.push(frame);
        }
        true
    }

    /// Queues a frame whatever its size (replies).
    fn push(&mut self, frame: Utf8Bytes) {
        self.out.bytes += frame.len();
        self.out.items.push_back(Outgoing::Frame(frame));
    }

    /// Queues a snapshot or replayed change whatever its size; a later snapshot replaces it
    /// while it is still queued.
    fn push_view(&mut self, frame: Utf8Bytes) {
        self.out.bytes += frame.len();
        self.out.items.push_back(Outgoing::View(frame));
    }

    /// Queues the close frame behind what is already queued.
    fn close(&mut self, code: u16, reason: &'static str) {
        self.out.items.push_back(Outgoing::Close(code, reason));
    }

    /// Records a resynchronisation; false when the client has needed too many lately.
    fn allow_resync(&mut self) -> bool {
        let now = Instant::now();
        while self
            .resyncs
            .front()
            .is_some_and(|t| now.duration_since(*t) > RESYNC_WINDOW)
        {
            self.resyncs.pop_front();
        }
        if self.resyncs.len() >= self.app.ws.max_resyncs as usize {
            return false;
        }
        self.resyncs.push_back(now);
        true
    }
}

/// How long a session closed for bad input keeps reading (and discarding) the client's input.
const LINGER: Duration = Duration::from_secs(1);

/// A change is delivered when the event before or after it matches the filter, so a watcher
/// also sees a service leave its slice.
fn wants(filter: Option<&Query>, change: &crate::engine::Change) -> bool {
    filter.is_none_or(|q| q.matches_transition(&change.event, change.previous.as_deref()))
}

/// Whether a read failed because a text message was not valid UTF-8 (close code 1007).
pub fn is_invalid_utf8(error: &axum::Error) -> bool {
    use std::error::Error as _;
    use tokio_tungstenite::tungstenite::Error;
    error
        .source()
        .and_then(|e| e.downcast_ref::<Error>())
        .is_some_and(|e| matches!(e, Error::Utf8(_)))
}

/// Whether a read failed because the client's message exceeded the size limit.
fn is_too_big(error: &axum::Error) -> bool {
    use std::error::Error as _;
    use tokio_tungstenite::tungstenite::Error;
    error
        .source()
        .and_then(|e| e.downcast_ref::<Error>())
        .is_some_and(|e| matches!(e, Error::Capacity(_)))
}

/// Pending forever when there is no deadline.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Messages a dashboard may send.
#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientRequest {
    /// `{"type":"subscribe","query":"state != \"ok\""}`; no query means everything.
    Subscribe { query: Option<String> },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_budget_allows_a_burst_then_a_rate_then_closes_on_abuse() {
        let start = Instant::now();
        let mut budget = MessageBudget::new(start);
        for _ in 0..MESSAGE_BURST as usize {
            assert_eq!(budget.admit(start), Admission::Accept);
        }
        assert_eq!(budget.admit(start), Admission::Refuse { tell: true });
        assert_eq!(budget.admit(start), Admission::Refuse { tell: false });
        // Half a second refills one message at 2 a second.
        let later = start + Duration::from_millis(500);
        assert_eq!(budget.admit(later), Admission::Accept);
        // A new episode of refusals is told again; past the limit in a row, close.
        for _ in 0..MAX_REFUSED_MESSAGES {
            assert!(matches!(budget.admit(later), Admission::Refuse { .. }));
        }
        assert_eq!(budget.admit(later), Admission::Close);
    }

    #[test]
    fn a_new_view_drops_queued_snapshots_and_changes_but_keeps_replies() {
        let mut out = Outbox::default();
        for (item, len) in [
            (Outgoing::View("snapshot!".into()), 9),
            (Outgoing::Frame("stats".into()), 5),
            (Outgoing::View("change".into()), 6),
        ] {
            out.bytes += len;
            out.items.push_back(item);
        }
        out.drop_queued_view();
        assert_eq!(out.bytes, 5);
        assert_eq!(out.items.len(), 1);
        assert!(matches!(&out.items[0], Outgoing::Frame(f) if f.as_str() == "stats"));
    }

    #[test]
    fn unflushed_pongs_are_bounded() {
        let mut out = Outbox::default();
        let mut pings = 0;
        while out.pong_queued(125) {
            pings += 1;
        }
        assert_eq!(pings, MAX_UNSENT_PONG_BYTES / 127);
        assert!(out.needs_flush);
    }
}
