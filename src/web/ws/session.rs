//! One dashboard websocket's session: a task that reads the client, takes changes from the
//! broadcast, pings, and writes through the outbox.
//!
//! The task owns both halves of its socket and selects over the broadcast receiver, the socket's
//! input, the ping timer and the socket's write readiness; what each of those means for the
//! client is decided by [`state::SessionState`] (the session's one state, with pure transitions
//! and their scenario tests), and this task only performs it. Changes that arrive while the
//! socket is busy (or in one engine batch) are drained from the receiver together
//! ([`DRAIN_BATCH`]), fed to the outbox and flushed once. A session that is receiving a stream of
//! changes rests 2 ms after each write, neither taking changes nor writing: each dashboard then
//! costs one wake-up and one send per window, not per change.
//!
//! When the outbox refuses a change (the client fell behind) or the receiver lagged, the session
//! stops taking changes, lets the outbox drain and sends a fresh snapshot marked `reset`; too
//! many of those (`--ws-max-resyncs` a minute) close the client with 1008 "slow consumer". A
//! socket that takes no data for `--ws-write-timeout` is dropped; a client that does not answer a
//! ping within `--ws-pong-timeout` is closed.
//!
//! What a client sends is bounded, because each message can make the server queue a reply
//! whatever the client reads. A ping makes tungstenite queue a pong, counted by the outbox:
//! past its bound the client is closed with 1008 "too many pings" and no longer read. A
//! subscribe costs a snapshot: it drops the view still queued, and its own snapshot is built only
//! once the outbox has drained, so a client that subscribes without reading holds at most one.
//! Client messages are rate-limited too (each may compile a query): past the budget a message is
//! ignored with one `error` frame "too many subscribes", and 100 refusals in one episode close the
//! client with 1008. A message larger than the limit closes with 1009, invalid UTF-8 in a text
//! message with 1007.

use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

mod state;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream, StreamExt};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use self::state::{End, FromClient, Need, SessionState, Step, Why};
use self::state::{MESSAGES_PER_SECOND, MESSAGE_BURST};
use super::live_values::LiveValues;
use super::outbox::Outgoing;
use super::{Resume, DRAIN_BATCH};
use crate::broadcast::{self, MetricsReceiver, Published, Receiver};
use crate::change::MetricBatch;
use crate::metrics::Counters;
use crate::protocol::{ClientMessage, Frame};
use crate::query::Query;
use crate::web::{history, is_invalid_utf8, is_too_big, text_frame, AppState};

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
    batch: bool,
    _permit: OwnedSemaphorePermit,
) {
    Counters::add(&app.counters.ws_clients, 1);
    let _guard = ClientGuard(Arc::clone(&app.counters));
    let (sink, stream) = socket.split();
    let mut state = SessionState::new(&app.ws, Instant::now());
    state.outbox().batch_views(batch);
    let session = Session {
        state,
        app,
        filter,
        resume,
        live: LiveValues::default(),
    };
    session.run(sink, stream).await;
}

struct Session {
    app: AppState,
    /// What the session does next, and the outbox; see [`state`].
    state: SessionState,
    /// The client's subscription query; `None` is everything.
    filter: Option<Query>,
    /// Where a reconnecting client left off; used by the first subscription only.
    resume: Option<Resume>,
    /// Live values taken and not yet handed to the socket (see `live_values`).
    live: LiveValues,
}

/// What a subscription streams to the session: the changes after its snapshot, and the live
/// values taken after it.
struct Streams {
    changes: Receiver,
    metrics: MetricsReceiver,
    /// False once the metrics channel closed (the engine stopped).
    metrics_open: bool,
}

/// Beyond this many missed changes a resuming client gets a snapshot instead: cheaper for both.
const MAX_RESUME_CHANGES: u64 = 100_000;

impl Session {
    async fn run(mut self, mut sink: Sink, mut stream: SplitStream<WebSocket>) {
        let end = self.serve(&mut sink, &mut stream).await;
        if matches!(end, End::Drop) {
            return;
        }
        // Deliver the close frame behind whatever the client has yet to read, for as long as
        // the socket keeps taking data; the flush also sends tungstenite's own close reply.
        self.state.outbox().flush_on_next_write();
        let write_timeout = self.app.ws.write_timeout;
        let mut deadline = Instant::now() + write_timeout;
        loop {
            tokio::select! {
                wrote = poll_fn(|cx| self.state.outbox().poll_write(&mut sink, cx)) => match wrote {
                    Ok(false) => deadline = Instant::now() + write_timeout,
                    Ok(true) | Err(()) => break,
                },
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
        // Closing a socket with unread input sends RST, which could destroy the close frame
        // before the client reads it.
        if matches!(end, End::FlushAndLinger) {
            let out = self.state.outbox();
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

    /// The session proper: returns when the client is to be closed or is gone. What to do
    /// with each thing that happens is [`SessionState`]'s decision; this loop only waits for
    /// the next one and performs what it is told.
    async fn serve(&mut self, sink: &mut Sink, stream: &mut SplitStream<WebSocket>) -> End {
        let Some(mut streams) = self.subscribe().await else {
            return End::Flush;
        };
        let mut stats = self.app.stats.clone();
        // Not the frame built before this client connected (it would not count it): the next.
        stats.mark_unchanged();
        let mut stats_open = true;
        let shutdown = self.app.shutdown.clone();
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let mut ping = tokio::time::interval_at(
            Instant::now() + self.app.ws.ping_interval,
            self.app.ws.ping_interval,
        );
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Some(end) = self.before_wait(&mut streams).await {
                return end;
            }
            let (resting_until, write_deadline, pong_deadline) = (
                self.state.resting_until(),
                self.state.write_deadline(),
                self.state.pong_deadline(),
            );
            // Biased: writing first, then new changes, so changes that arrive together leave
            // together; the branches that rarely fire are polled only when the others wait.
            let step = tokio::select! {
                biased;
                wrote = poll_fn(|cx| self.state.outbox().poll_write(sink, cx)),
                    if self.state.may_write() => self.state.written(wrote, Instant::now()),
                received = streams.changes.recv(), if self.state.takes_changes() => {
                    self.take_changes(received, &mut streams.changes)
                }
                // After changes: values let out behind a change are taken after it.
                received = streams.metrics.recv(),
                    if streams.metrics_open && self.state.takes_changes() => {
                    self.take_metrics(received, &mut streams)
                }
                incoming = stream.next() => self.client_sent(incoming).await,
                // The rest is over: the loop comes round, takes what waited and writes it.
                _ = sleep_until_some(resting_until) => Step::Continue,
                _ = sleep_until_some(write_deadline) => {
                    tracing::debug!("dashboard took no data within the write timeout; dropping");
                    self.state.write_stalled()
                }
                _ = ping.tick() => {
                    self.state.ping_due(Instant::now());
                    Step::Continue
                }
                _ = sleep_until_some(pong_deadline) => {
                    tracing::debug!("dashboard did not answer a ping; closing");
                    self.state.pong_overdue()
                }
                changed = stats.changed(), if stats_open => match changed {
                    Ok(()) => {
                        let frame = stats.borrow_and_update().clone();
                        self.state.stats(frame, Instant::now())
                    }
                    Err(_) => {
                        stats_open = false;
                        Step::Continue
                    }
                },
                _ = &mut cancelled => self.state.shutting_down(),
            };
            if let Some(end) = self.ended(step) {
                return end;
            }
        }
    }

    /// Before each wait: a snapshot that is due is taken (with fresh streams), and this
    /// interval's `metrics` frame goes once the last one has left, if it was still in the
    /// socket when the interval's batch came. In that order: `prepare` ends a rest that is
    /// over, and a frame looked at before it would wait for the next batch to wake the session.
    async fn before_wait(&mut self, streams: &mut Streams) -> Option<End> {
        while let Some(need) = self.state.prepare(Instant::now()) {
            if need == Need::Resync {
                Counters::add(&self.app.counters.ws_resyncs, 1);
            }
            match self.subscribe_with(need == Need::Resync).await {
                Some(fresh) => *streams = fresh,
                None => return Some(End::Flush),
            }
        }
        if self.live.due() && self.state.takes_changes() && !self.state.outbox().holds_metrics() {
            let step = self.queue_metrics(Instant::now());
            if let Some(end) = self.ended(step) {
                return Some(end);
            }
        }
        None
    }

    /// How the session ends after `step`, if it does.
    fn ended(&self, step: Step) -> Option<End> {
        match step {
            Step::Continue | Step::Read | Step::Refused => None,
            Step::Close(why) => {
                if why == Why::SlowConsumer {
                    Counters::add(&self.app.counters.ws_slow_closed, 1);
                }
                Some(why.end())
            }
            Step::End(end) => Some(end),
        }
    }

    /// Takes `received` and what else the receiver already holds (up to a batch), so that it
    /// all leaves with one flush.
    fn take_changes(
        &mut self,
        received: Result<Arc<Published>, RecvError>,
        changes: &mut Receiver,
    ) -> Step {
        let now = Instant::now();
        let mut next = Some(received);
        let mut taken = 0;
        while let Some(received) = next.take() {
            let step = match received {
                // Evicted from the ring for bytes: missed, as when lagging.
                Ok(published) => match published.payload() {
                    Some(p) => {
                        if self.wants(&p.change) {
                            self.state.change(p.frame_as(text_frame), now)
                        } else {
                            Step::Continue
                        }
                    }
                    None => self.state.missed(now),
                },
                Err(RecvError::Lagged(_)) => self.state.missed(now),
                Err(RecvError::Closed) => self.state.shutting_down(),
            };
            taken += 1;
            if step != Step::Continue || !self.state.takes_changes() || taken == DRAIN_BATCH {
                return step;
            }
            next = match changes.try_recv() {
                Ok(published) => Some(Ok(published)),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
                Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
            };
        }
        Step::Continue
    }

    /// Takes `received` and the other metric batches the receiver holds into the live values,
    /// then queues this interval's one `metrics` frame. First the last one is settled: handed
    /// to the socket, it was sent; still queued, it was not read and is taken back out (its
    /// values go first in the frame that replaces it). A session that missed batches (it did
    /// not run for [`broadcast::METRIC_BATCHES_KEPT`] intervals) is resynchronised: the
    /// snapshot carries every current value.
    fn take_metrics(
        &mut self,
        received: Result<Arc<MetricBatch>, RecvError>,
        streams: &mut Streams,
    ) -> Step {
        let now = Instant::now();
        if self.state.outbox().take_queued_metrics() {
            self.live.unsent();
        } else {
            self.live.sent();
        }
        let mut next = Some(received);
        while let Some(received) = next.take() {
            match received {
                Ok(batch) => match self.filter.as_ref() {
                    Some(query) => self.live.merge(&batch, |e| query.matches(e)),
                    None => {
                        self.live.take_whole(&batch);
                    }
                },
                Err(RecvError::Lagged(_)) => return self.state.missed(now),
                Err(RecvError::Closed) => streams.metrics_open = false,
            }
            next = match streams.metrics.try_recv() {
                Ok(batch) => Some(Ok(batch)),
                Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
                Err(TryRecvError::Empty | TryRecvError::Closed) => None,
            };
        }
        self.queue_metrics(now)
    }

    /// Queues this interval's `metrics` frame, at most `--metrics-max-bytes` (see
    /// `live_values`) — unless the last one was handed to the socket and is not yet flushed
    /// (the client is not reading yet): then it goes once that one has left (`before_wait`),
    /// or not at all if the next interval comes first, and values keep merging.
    fn queue_metrics(&mut self, now: Instant) -> Step {
        if self.state.outbox().metrics_in_flight() {
            return Step::Continue;
        }
        let Some((frame, values)) = self.live.next_frame(text_frame) else {
            return Step::Continue;
        };
        let counters = &self.app.counters;
        Counters::add(&counters.ws_metrics_frames, 1);
        Counters::add(&counters.ws_metrics_values, values as u64);
        Counters::add(&counters.ws_metrics_deferred, self.live.pending() as u64);
        self.state.metrics(frame, now)
    }

    /// Something the client sent (or the end of its stream): the state decides; a request
    /// within the budget is read here, and a refusal is told once.
    async fn client_sent(&mut self, incoming: Option<Result<Message, axum::Error>>) -> Step {
        let (message, text) = match incoming {
            Some(Err(error)) if is_too_big(&error) => (FromClient::TooBig, None),
            Some(Err(error)) if is_invalid_utf8(&error) => (FromClient::InvalidUtf8, None),
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => (FromClient::Gone, None),
            Some(Ok(Message::Ping(payload))) => (FromClient::Ping(payload.len()), None),
            Some(Ok(Message::Text(text))) => (FromClient::Text, Some(text)),
            // Pings are answered by tungstenite.
            Some(Ok(_)) => (FromClient::Other, None),
        };
        let step = self.state.heard(message, Instant::now());
        match (step, text) {
            (Step::Read, Some(text)) => {
                if let Some(query) = self.client_request(&text).await {
                    self.filter = query;
                    self.state.resubscribe();
                }
                Step::Continue
            }
            (Step::Refused, _) => {
                self.send_error(format!(
                    "too many subscribes (at most {MESSAGES_PER_SECOND} a \
                     second, {MESSAGE_BURST} at once): ignored"
                ));
                Step::Continue
            }
            (step, _) => step,
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
    async fn subscribe_with(&mut self, reset: bool) -> Option<Streams> {
        let sub = self.app.engine.subscribe().await.ok()?;
        // Values taken before this subscription are no newer than what it starts from.
        self.live.clear();
        let streams = Streams {
            changes: sub.changes,
            metrics: sub.metrics,
            metrics_open: true,
        };
        let mut reset = reset;
        if let Some(resume) = self.resume.take() {
            if let Some(frames) = self.replay(resume, sub.snapshot.seq).await {
                self.state.start_view(frames);
                return Some(streams);
            }
            reset = true;
        }
        let filter = self
            .filter
            .as_ref()
            .map(|q| |e: &crate::event::Event| q.matches(e));
        let frame = broadcast::snapshot_frame(&sub.snapshot, &self.app.epoch, reset, filter);
        self.state.start_view([text_frame(frame)]);
        Some(streams)
    }

    async fn subscribe(&mut self) -> Option<Streams> {
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
        self.state.outbox().push(Outgoing::Frame(frame.into()));
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
