//! One dashboard websocket: snapshot, then changes, then stats — without ever slowing anyone else.
//!
//! Each client runs two tasks. The *writer* owns the socket's sink and drains an outbox; the
//! *session* owns the subscription, decides what to send and tracks how many bytes the outbox
//! holds. When a client falls behind (outbox over its byte limit, or its broadcast receiver
//! lagged), the session stops queueing changes, waits for the outbox to drain and sends a fresh
//! snapshot instead: the client is resynchronised, never silently deaf. A client that needs that
//! too often is closed with 1008 "slow consumer".

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, StreamExt};
use futures_util::SinkExt;
use tokio::sync::{broadcast::error::RecvError, mpsc, Notify, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::AppState;
use crate::broadcast::{self, Published, Receiver};
use crate::metrics::Counters;
use crate::query::Query;

/// Close codes (RFC 6455).
const GOING_AWAY: u16 = 1001;
const POLICY_VIOLATION: u16 = 1008;
const MESSAGE_TOO_BIG: u16 = 1009;

/// The window over which resynchronisations are counted against `ws_max_resyncs`.
const RESYNC_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct WsConfig {
    pub queue_bytes: usize,
    pub max_resyncs: u32,
    pub write_timeout: Duration,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
}

/// What the session hands the writer.
enum Outgoing {
    Frame(Utf8Bytes),
    Ping,
    Close(u16, &'static str),
}

/// The writer's queue, with the byte count the session bounds.
struct Outbox {
    queued_bytes: AtomicUsize,
    drained: Notify,
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
    let outbox = Arc::new(Outbox {
        queued_bytes: AtomicUsize::new(0),
        drained: Notify::new(),
    });
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_frames(
        sink,
        out_rx,
        Arc::clone(&outbox),
        app.ws.write_timeout,
    ));
    let session = Session {
        app,
        outbox,
        out_tx,
        resyncs: VecDeque::new(),
        filter,
        resume,
    };
    session.run(stream, writer).await;
}

struct Session {
    app: AppState,
    outbox: Arc<Outbox>,
    /// Unbounded as a channel, bounded in bytes by [`Session::queue`].
    out_tx: mpsc::UnboundedSender<Outgoing>,
    /// When recent resynchronisations happened, to enforce `max_resyncs` per window.
    resyncs: VecDeque<Instant>,
    /// The client's subscription query; `None` is everything.
    filter: Option<Query>,
    /// Where a reconnecting client left off; used by the first subscription only.
    resume: Option<Resume>,
}

/// `/ws?since=SEQ&epoch=E`: a reconnecting client's position.
#[derive(Debug, Clone)]
pub struct Resume {
    pub since: u64,
    pub epoch: String,
}

/// Beyond this many missed changes a resuming client gets a snapshot instead: cheaper for both.
const MAX_RESUME_CHANGES: u64 = 100_000;

impl Session {
    async fn run(
        mut self,
        mut stream: futures_util::stream::SplitStream<WebSocket>,
        mut writer: tokio::task::JoinHandle<()>,
    ) {
        let Some(mut changes) = self.subscribe().await else {
            return;
        };
        let mut stats = self.app.stats.clone();
        let mut stats_open = true;
        // While lagging, changes are not queued; the receiver is dropped and renewed with a
        // fresh snapshot once the outbox drains.
        let mut lagging = false;
        let shutdown = self.app.shutdown.clone();
        let mut ping = tokio::time::interval_at(
            Instant::now() + self.app.ws.ping_interval,
            self.app.ws.ping_interval,
        );
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Set when a ping is out and nothing has been heard since; reaching it means the peer
        // is gone (a pulled cable never sends a FIN).
        let mut pong_deadline: Option<Instant> = None;
        // Whether the current lag was counted against the resync budget.
        let mut lag_counted = false;
        // Set when the session ends with the client's input unread: closing a socket with
        // unread input sends RST, which could destroy the close frame before the client reads it.
        let mut drain_input = false;
        loop {
            // Falling behind is judged when it happens, not when the outbox drains: a client
            // that stopped reading altogether never drains, and must not linger until the ping
            // timeout. The close frame queues behind what the client has yet to read; the
            // writer's timeout drops the connection if it never reads again.
            if lagging && !lag_counted {
                lag_counted = true;
                if !self.allow_resync() {
                    Counters::add(&self.app.counters.ws_slow_closed, 1);
                    self.close(POLICY_VIOLATION, "slow consumer");
                    break;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.close(GOING_AWAY, "server shutting down");
                    break;
                }
                _ = &mut writer => return,
                _ = ping.tick() => {
                    let _ = self.out_tx.send(Outgoing::Ping);
                    pong_deadline.get_or_insert(Instant::now() + self.app.ws.pong_timeout);
                }
                _ = sleep_until_some(pong_deadline) => {
                    tracing::debug!("dashboard did not answer a ping; closing");
                    self.close(POLICY_VIOLATION, "ping timeout");
                    break;
                }
                incoming = stream.next() => match incoming {
                    Some(Err(error)) if is_too_big(&error) => {
                        self.close(MESSAGE_TOO_BIG, "message too big");
                        drain_input = true;
                        break;
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(Message::Text(text))) => {
                        pong_deadline = None;
                        if let Some(query) = self.client_request(&text) {
                            // A new filter starts over with a fresh snapshot at a new seq.
                            self.filter = query;
                            match self.subscribe().await {
                                Some(fresh) => changes = fresh,
                                None => break,
                            }
                            lagging = false;
                        }
                    }
                    // Any sign of life counts as an answer; pings are answered by tungstenite.
                    Some(Ok(_)) => pong_deadline = None,
                },
                received = changes.recv(), if !lagging => match received {
                    Ok(published) => {
                        if self.wants(&published.change) && !self.queue(published.frame()) {
                            lagging = true;
                        }
                    }
                    Err(RecvError::Lagged(_)) => lagging = true,
                    Err(RecvError::Closed) => {
                        self.close(GOING_AWAY, "server shutting down");
                        break;
                    }
                },
                _ = self.outbox.drained.notified(), if lagging => {
                    if self.outbox.queued_bytes.load(Ordering::Acquire) > 0 {
                        continue;
                    }
                    Counters::add(&self.app.counters.ws_resyncs, 1);
                    match self.subscribe_with(true).await {
                        Some(fresh) => changes = fresh,
                        None => break,
                    }
                    lag_counted = false;
                    lagging = false;
                },
                changed = stats.changed(), if stats_open => match changed {
                    Ok(()) => {
                        let frame = stats.borrow_and_update().clone();
                        // Stats are only a heartbeat: skip them for a client that is behind.
                        if !lagging && !self.queue(frame) {
                            lagging = true;
                        }
                    }
                    Err(_) => stats_open = false,
                },
            }
        }
        // Let the writer deliver the close frame (bounded by its write timeout), then stop.
        drop(self.out_tx);
        let _ = tokio::time::timeout(self.app.ws.write_timeout, &mut writer).await;
        if drain_input {
            let _ = tokio::time::timeout(LINGER, async {
                while let Some(Ok(_)) = stream.next().await {}
            })
            .await;
        }
        writer.abort();
    }

    /// Takes a snapshot and subscription from the engine and queues the snapshot.
    ///
    /// A resuming client instead gets exactly the changes after its `seq`, from history, when
    /// its epoch matches and history still reaches back that far; otherwise a snapshot marked
    /// `reset`. `reset` also marks the snapshot of a client resynchronised after falling behind.
    async fn subscribe_with(&mut self, reset: bool) -> Option<Receiver> {
        let sub = self.app.engine.subscribe().await.ok()?;
        let mut reset = reset;
        if let Some(resume) = self.resume.take() {
            if let Some(frames) = self.replay(&resume, sub.snapshot.seq) {
                for frame in frames {
                    self.push(frame);
                }
                return Some(sub.changes);
            }
            reset = true;
        }
        let filter = self.filter.as_ref();
        let frame = broadcast::snapshot_frame(&sub.snapshot, &self.app.epoch, reset, |e| {
            e.state.is_some() && filter.is_none_or(|q| q.matches(e))
        });
        self.push(frame);
        Some(sub.changes)
    }

    async fn subscribe(&mut self) -> Option<Receiver> {
        self.subscribe_with(false).await
    }

    /// The change frames in (`since`, `upto`] that pass the filter, or `None` when they cannot
    /// all be had (other epoch, pruned history, too many, or a `since` from the future).
    fn replay(&self, resume: &Resume, upto: u64) -> Option<Vec<Utf8Bytes>> {
        if resume.epoch != self.app.epoch || resume.since > upto {
            return None;
        }
        if resume.since == upto {
            return Some(Vec::new());
        }
        if upto - resume.since > MAX_RESUME_CHANGES {
            return None;
        }
        let store = self.app.store.as_ref()?;
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
                .filter(|p| self.wants(&p.change))
                .map(|p| p.frame())
                .collect(),
        )
    }

    /// A change is delivered when the event before or after it matches the filter, so a
    /// watcher also sees a service leave its slice.
    fn wants(&self, change: &crate::engine::Change) -> bool {
        let Some(filter) = &self.filter else {
            return true;
        };
        filter.matches_transition(&change.event, change.previous.as_deref())
    }

    /// Handles a client message. Returns the new filter when the client (re)subscribed;
    /// anything unusable is answered with an error frame and changes nothing.
    fn client_request(&mut self, text: &str) -> Option<Option<Query>> {
        let request: ClientRequest = match serde_json::from_str(text) {
            Ok(request) => request,
            Err(error) => {
                self.send_error(format!("cannot read message: {error}"));
                return None;
            }
        };
        match request {
            ClientRequest::Subscribe { query } => match parse_filter(query.as_deref()) {
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
    fn queue(&mut self, frame: Utf8Bytes) -> bool {
        let queued = self.outbox.queued_bytes.load(Ordering::Acquire);
        if queued + frame.len() > self.app.ws.queue_bytes && queued > 0 {
            return false;
        }
        self.push(frame);
        true
    }

    fn push(&mut self, frame: Utf8Bytes) {
        self.outbox
            .queued_bytes
            .fetch_add(frame.len(), Ordering::AcqRel);
        let _ = self.out_tx.send(Outgoing::Frame(frame));
    }

    fn close(&mut self, code: u16, reason: &'static str) {
        let _ = self.out_tx.send(Outgoing::Close(code, reason));
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

/// Parses a subscription query; `true` (or none) is "no filter".
pub fn parse_filter(query: Option<&str>) -> Result<Option<Query>, String> {
    match query.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => match Query::parse(text) {
            Ok(q) if q.is_match_all() => Ok(None),
            Ok(q) => Ok(Some(q)),
            Err(error) => Err(format!("parse error: {error}")),
        },
    }
}

/// Drains the outbox into the socket, several frames per flush; each write is bounded by
/// `write_timeout` so a peer that stopped reading cannot hold the task forever.
async fn write_frames(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    outbox: Arc<Outbox>,
    write_timeout: Duration,
) {
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut written = 0usize;
        while let Some(item) = next.take() {
            match item {
                Outgoing::Frame(frame) => {
                    written += frame.len();
                    let fed = tokio::time::timeout(write_timeout, sink.feed(Message::Text(frame)));
                    if !matches!(fed.await, Ok(Ok(()))) {
                        return;
                    }
                }
                Outgoing::Ping => {
                    let fed = tokio::time::timeout(
                        write_timeout,
                        sink.feed(Message::Ping(Default::default())),
                    );
                    if !matches!(fed.await, Ok(Ok(()))) {
                        return;
                    }
                }
                Outgoing::Close(code, reason) => {
                    let close = Message::Close(Some(CloseFrame {
                        code,
                        reason: reason.into(),
                    }));
                    let _ = tokio::time::timeout(write_timeout, sink.send(close)).await;
                    return;
                }
            }
            next = rx.try_recv().ok();
        }
        if !matches!(
            tokio::time::timeout(write_timeout, sink.flush()).await,
            Ok(Ok(()))
        ) {
            return;
        }
        let before = outbox.queued_bytes.fetch_sub(written, Ordering::AcqRel);
        if before == written {
            outbox.drained.notify_one();
        }
    }
}
