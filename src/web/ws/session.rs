//! One dashboard websocket's session: a task that reads the client, takes changes from the
//! broadcast, pings, and writes through the [`Outbox`].
//!
//! The task owns both halves of its socket and selects over the broadcast receiver, the socket's
//! input, the ping timer and the socket's write readiness. Changes that arrive while the socket
//! is busy (or in one engine batch) are drained from the receiver together ([`DRAIN_BATCH`]),
//! fed to the sink and flushed once. A session that is receiving a stream of changes rests
//! [`COALESCE`] (2 ms) after each write, neither taking changes nor writing: each dashboard then
//! costs one wake-up and one send per window, not per change. A session that is not (writes
//! further apart than [`STREAMING_GAP`]) does not rest.
//!
//! When the outbox refuses a change (the client fell behind) or the receiver lagged, the session
//! stops taking changes, lets the outbox drain and sends a fresh snapshot marked `reset`; too
//! many of those ([`Resyncs`]) close the client with 1008 "slow consumer". A socket that takes no
//! data for `--ws-write-timeout` is dropped; a client that does not answer a ping within
//! `--ws-pong-timeout` is closed.
//!
//! What a client sends is bounded, because each message can make the server queue a reply
//! whatever the client reads. A ping makes tungstenite queue a pong, counted by the outbox:
//! past its bound the client is closed with 1008 "too many pings" and no longer read. A
//! subscribe costs a snapshot: it drops the view still queued, and its own snapshot is built only
//! once the outbox has drained, so a client that subscribes without reading holds at most one.
//! Client messages are rate-limited too ([`MessageBudget`]; each may compile a query): past the
//! budget a message is ignored with one `error` frame "too many subscribes", and
//! [`MAX_REFUSED_MESSAGES`] refusals in a row close the client with 1008. A message larger than
//! the limit closes with 1009, invalid UTF-8 in a text message with 1007.

use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream, StreamExt};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::outbox::{Outbox, Outgoing, Resyncs};
use super::{Resume, DRAIN_BATCH};
use crate::broadcast::{self, Receiver};
use crate::metrics::Counters;
use crate::protocol::{ClientMessage, Frame};
use crate::query::Query;
use crate::web::{history, is_invalid_utf8, is_too_big, text_frame, AppState};

/// Close codes (RFC 6455).
const GOING_AWAY: u16 = 1001;
const INVALID_PAYLOAD: u16 = 1007;
const POLICY_VIOLATION: u16 = 1008;
const MESSAGE_TOO_BIG: u16 = 1009;

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

/// Client messages (subscribes) allowed at once, and refilled per second after that. A
/// dashboard subscribes when its filter changes: a few a minute. Each subscribe costs a
/// snapshot (a megabyte at 10,000 keys), so a client must not make the server build them at will.
const MESSAGE_BURST: f64 = 10.0;
const MESSAGES_PER_SECOND: f64 = 2.0;
/// Messages refused in a row (over the budget) after which the client is closed with 1008.
const MAX_REFUSED_MESSAGES: u32 = 100;

/// The socket's writing half.
type Sink = SplitSink<WebSocket, Message>;

/// Keeps the `clients` count true however the session ends.
struct ClientGuard(Arc<Counters>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.ws_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one upgraded dashboard socket until it closes; `_permit` holds its connection slot
/// that long.
pub(super) async fn run(
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
        out: Outbox::new(app.ws.queue_bytes),
        resyncs: Resyncs::new(app.ws.max_resyncs),
        app,
        filter,
        resume,
        budget: MessageBudget::new(Instant::now()),
    };
    session.run(sink, stream).await;
}

struct Session {
    app: AppState,
    out: Outbox,
    /// Recent resynchronisations, at most `--ws-max-resyncs` a minute.
    resyncs: Resyncs,
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
        self.out.flush_on_next_write();
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
        // Not the frame built before this client connected (it would not count it): the next.
        stats.mark_unchanged();
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
                if !self.resyncs.allow(Instant::now()) {
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
            resting_until = resting_until
                .filter(|at| *at > Instant::now() && self.out.bytes() < COALESCE_BYTES);
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
                            // Evicted from the ring for bytes: missed, as when lagging.
                            Ok(published) => match published.payload() {
                                Some(p) => {
                                    if self.wants(&p.change)
                                        && !self.out.offer(Outgoing::View(p.frame_as(text_frame)))
                                    {
                                        lagging = true;
                                    }
                                }
                                None => lagging = true,
                            },
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
                    self.out.push(Outgoing::Ping);
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
                        if !lagging && !self.out.offer(Outgoing::Frame(frame)) {
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
                    self.out.push(Outgoing::Start(frame));
                }
                return Some(sub.changes);
            }
            reset = true;
        }
        let filter = self
            .filter
            .as_ref()
            .map(|q| |e: &crate::event::Event| q.matches(e));
        let frame = broadcast::snapshot_frame(&sub.snapshot, &self.app.epoch, reset, filter);
        self.out.drop_queued_view();
        self.out.push(Outgoing::Start(text_frame(frame)));
        Some(sub.changes)
    }

    async fn subscribe(&mut self) -> Option<Receiver> {
        self.subscribe_with(false).await
    }

    /// The change frames in (`since`, `upto`] that pass the filter, or `None` when they cannot
    /// all be had (other epoch, pruned history, too many, or a `since` from the future). Read
    /// on a blocking thread (see `history`).
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
        let count = (upto - resume.since) as usize;
        history::replay(store, resume.since, count, self.filter.clone())
            .await
            .ok()?
    }

    fn wants(&self, change: &crate::engine::Change) -> bool {
        wants(self.filter.as_ref(), change)
    }

    /// Handles a client message. Returns the new filter when the client (re)subscribed;
    /// anything unusable is answered with an error frame and changes nothing.
    async fn client_request(&mut self, text: &str) -> Option<Option<Query>> {
        let request: ClientMessage = match serde_json::from_str(text) {
            Ok(request) => request,
            Err(error) => {
                self.send_error(format!("cannot read message: {error}"));
                return None;
            }
        };
        match request {
            ClientMessage::Subscribe { query } => match Query::parse_filter(query.as_deref()).await
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
        let frame = Frame::Error { error: &error }.to_text();
        self.out.push(Outgoing::Frame(frame.into()));
    }

    /// Queues the close frame behind what is already queued.
    fn close(&mut self, code: u16, reason: &'static str) {
        self.out.push(Outgoing::Close(code, reason));
    }
}

/// How long a session closed for bad input keeps reading (and discarding) the client's input.
const LINGER: Duration = Duration::from_secs(1);

/// See [`history::shown_to`]: live changes and replayed ones pass the same rule.
fn wants(filter: Option<&Query>, change: &crate::engine::Change) -> bool {
    history::shown_to(filter, change)
}

/// Pending forever when there is no deadline.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
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
}
