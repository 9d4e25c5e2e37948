//! A dashboard session's one state, and its transitions: what happens to the client when a
//! write finishes, a change arrives, the client sends something or a timer passes — decided
//! without a socket, a clock or the engine.
//!
//! The session task (`super`) owns the socket, the broadcast receiver and the engine handle. It
//! turns what happened into one call here, with the time as data, and performs the [`Step`] it
//! gets back; before each wait it asks [`SessionState::prepare`] whether a snapshot is due. So
//! every rule of a session's life is a transition the tests below check without sockets or
//! sleeps, as `static/js/connection.js` does for the page's side of the socket:
//!
//! ```text
//!   live ──change refused (queue limit) / missed──▶ behind ──outbox drained──▶ snapshot (reset) ─▶ live
//!   live, behind ──client subscribes──▶ resubscribing ──outbox drained──▶ snapshot ─▶ live
//!   resubscribing ──stats refused──▶ behind
//!   behind more than --ws-max-resyncs times a minute ──▶ close 1008 "slow consumer"
//! ```
//!
//! Besides the view, the state holds the outbox (what is decided but not yet written), the
//! three deadlines (the socket must take data, the client must answer a ping, the rest after a
//! write ends) and the client's budgets (resynchronisations, messages).

use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::time::Instant;

use super::super::outbox::{Outbox, Outgoing, Resyncs};
use super::super::WsConfig;

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
pub(super) const MESSAGE_BURST: f64 = 10.0;
pub(super) const MESSAGES_PER_SECOND: f64 = 2.0;
/// Messages refused (over the budget) in one episode after which the client is closed with 1008;
/// see [`MessageBudget`].
const MAX_REFUSED_MESSAGES: u32 = 100;

/// Close codes (RFC 6455).
const GOING_AWAY: u16 = 1001;
const INVALID_PAYLOAD: u16 = 1007;
const POLICY_VIOLATION: u16 = 1008;
const MESSAGE_TOO_BIG: u16 = 1009;

/// What the client is being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum View {
    /// Its snapshot (or replay) and the changes after it.
    Live,
    /// It fell behind: changes are not taken; once the outbox has drained it gets a fresh
    /// snapshot marked `reset`.
    Behind,
    /// It subscribed with a new filter: changes are not taken; once the outbox has drained it
    /// gets the new filter's snapshot (so a client that subscribes without reading makes the
    /// server build none).
    Resubscribing,
}

/// A snapshot the session must take from the engine before waiting on anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    /// For a client that fell behind: marked `reset`, counted in `statecast_ws_resyncs_total`.
    Resync,
    /// For a client's new filter.
    Snapshot,
}

/// Why the session closes a client: its close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Why {
    ShuttingDown,
    /// Fell behind too often (`--ws-max-resyncs`).
    SlowConsumer,
    /// Its unflushed pongs passed their bound.
    TooManyPings,
    /// Past its message budget too many times in one episode.
    TooManySubscribes,
    /// No sign of life within `--ws-pong-timeout` of a ping.
    PingTimeout,
    MessageTooBig,
    InvalidUtf8,
}

impl Why {
    /// The close frame's code and reason.
    fn frame(self) -> (u16, &'static str) {
        match self {
            Why::ShuttingDown => (GOING_AWAY, "server shutting down"),
            Why::SlowConsumer => (POLICY_VIOLATION, "slow consumer"),
            Why::TooManyPings => (POLICY_VIOLATION, "too many pings"),
            Why::TooManySubscribes => (POLICY_VIOLATION, "too many subscribes"),
            Why::PingTimeout => (POLICY_VIOLATION, "ping timeout"),
            Why::MessageTooBig => (MESSAGE_TOO_BIG, "message too big"),
            Why::InvalidUtf8 => (INVALID_PAYLOAD, "text message is not valid UTF-8"),
        }
    }

    /// How the connection ends after the close frame. A client closed for what it sent is read
    /// (and discarded) a moment longer, so the close frame is not lost to an RST; not one that
    /// floods pings (reading on would queue more pongs).
    pub(super) fn end(self) -> End {
        match self {
            Why::MessageTooBig | Why::InvalidUtf8 | Why::TooManySubscribes => End::FlushAndLinger,
            _ => End::Flush,
        }
    }
}

/// How a session's main loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// Deliver what is queued (a close frame, usually), then drop the connection.
    Flush,
    /// As `Flush`, then keep discarding the client's input for a moment (see `super::LINGER`).
    FlushAndLinger,
    /// The socket failed or stopped taking data: drop it now.
    Drop,
}

/// What a client sent, as far as the state is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FromClient {
    /// A message over the size limit.
    TooBig,
    /// A text message that is not UTF-8.
    InvalidUtf8,
    /// A close, a read error or the end of the stream.
    Gone,
    /// A ping (tungstenite queues its pong) with a payload of this many bytes.
    Ping(usize),
    /// A text message: a request.
    Text,
    /// Anything else (a pong, binary): a sign of life only.
    Other,
}

/// What the session task does after a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Continue,
    /// A client message within its budget: read the request (it may subscribe).
    Read,
    /// A client message over its budget, the first of a row: tell the client it was ignored.
    Refused,
    /// The close frame is queued: end as [`Why::end`] says.
    Close(Why),
    /// End with no close frame of the session's own.
    End(End),
}

/// One dashboard session's state; see the module doc.
pub(super) struct SessionState {
    out: Outbox,
    view: View,
    /// Recent resynchronisations, at most `--ws-max-resyncs` a minute.
    resyncs: Resyncs,
    /// How many messages the client may still send now.
    budget: MessageBudget,
    write_timeout: Duration,
    pong_timeout: Duration,
    /// Set while the outbox holds data: the socket must take some before it passes.
    write_deadline: Option<Instant>,
    /// Set when a ping is out and nothing has been heard since; reaching it means the peer is
    /// gone (a pulled cable never sends a FIN).
    pong_deadline: Option<Instant>,
    /// The end of the rest after the last complete write (see [`COALESCE`]).
    resting_until: Option<Instant>,
    last_write: Option<Instant>,
}

impl SessionState {
    pub(super) fn new(config: &WsConfig, now: Instant) -> Self {
        Self {
            out: Outbox::new(config.queue_bytes),
            view: View::Live,
            resyncs: Resyncs::new(config.max_resyncs),
            budget: MessageBudget::new(now),
            write_timeout: config.write_timeout,
            pong_timeout: config.pong_timeout,
            write_deadline: None,
            pong_deadline: None,
            resting_until: None,
            last_write: None,
        }
    }

    /// The outbox, for the session to write from and to queue replies in.
    pub(super) fn outbox(&mut self) -> &mut Outbox {
        &mut self.out
    }

    /// Before each wait, at `now`: the snapshot to take first, if one is due (the session takes
    /// it, calls [`Self::start_view`] and asks again); otherwise the deadlines are brought up
    /// to date for the wait.
    pub(super) fn prepare(&mut self, now: Instant) -> Option<Need> {
        if self.out.is_idle() {
            match self.view {
                View::Behind => return Some(Need::Resync),
                View::Resubscribing => return Some(Need::Snapshot),
                View::Live => {}
            }
            self.write_deadline = None;
        } else if self.write_deadline.is_none() {
            self.write_deadline = Some(now + self.write_timeout);
        }
        self.resting_until = self
            .resting_until
            .filter(|at| *at > now && self.out.bytes() < COALESCE_BYTES);
        None
    }

    /// A snapshot (or a resume's replay) to start the client's view with: it replaces whatever
    /// of the old view is still queued, and changes are taken again.
    pub(super) fn start_view(&mut self, frames: impl IntoIterator<Item = Utf8Bytes>) {
        self.out.drop_queued_view();
        for frame in frames {
            self.out.push(Outgoing::Start(frame));
        }
        self.view = View::Live;
    }

    /// Whether the session should write now: something is queued and it is not resting.
    pub(super) fn may_write(&self) -> bool {
        !self.out.is_idle() && self.resting_until.is_none()
    }

    /// Whether the session should take changes now.
    pub(super) fn takes_changes(&self) -> bool {
        self.view == View::Live && self.resting_until.is_none()
    }

    pub(super) fn resting_until(&self) -> Option<Instant> {
        self.resting_until
    }

    pub(super) fn write_deadline(&self) -> Option<Instant> {
        self.write_deadline
    }

    pub(super) fn pong_deadline(&self) -> Option<Instant> {
        self.pong_deadline
    }

    /// A write returned: `Ok(true)` all flushed, `Ok(false)` progress with more to write,
    /// `Err` the socket failed.
    pub(super) fn written(&mut self, wrote: Result<bool, ()>, now: Instant) -> Step {
        match wrote {
            Ok(true) => {
                self.write_deadline = None;
                if self
                    .last_write
                    .is_some_and(|last| now - last < STREAMING_GAP)
                {
                    self.resting_until = Some(now + COALESCE);
                }
                self.last_write = Some(now);
                Step::Continue
            }
            Ok(false) => {
                self.write_deadline = Some(now + self.write_timeout);
                Step::Continue
            }
            Err(()) => Step::End(End::Drop),
        }
    }

    /// A change the client's filter wants, taken from the broadcast.
    pub(super) fn change(&mut self, frame: Utf8Bytes, now: Instant) -> Step {
        if self.out.offer(Outgoing::View(frame)) {
            Step::Continue
        } else {
            self.fall_behind(now)
        }
    }

    /// Changes were missed: the receiver lagged, or a change was evicted from the ring.
    pub(super) fn missed(&mut self, now: Instant) -> Step {
        self.fall_behind(now)
    }

    /// A stats frame. Stats are only a heartbeat: skipped for a client that is behind.
    pub(super) fn stats(&mut self, frame: Utf8Bytes, now: Instant) -> Step {
        if self.view == View::Behind || self.out.offer(Outgoing::Frame(frame)) {
            Step::Continue
        } else {
            self.fall_behind(now)
        }
    }

    /// A `metrics` frame (live values; at most one waits, see `live_values`). Like stats, it
    /// counts against the byte budget, and is skipped for a client that is behind (its
    /// snapshot will carry every current value).
    pub(super) fn metrics(&mut self, frame: Utf8Bytes, now: Instant) -> Step {
        if self.view == View::Behind || self.out.offer(Outgoing::Metrics(frame)) {
            Step::Continue
        } else {
            self.fall_behind(now)
        }
    }

    /// Falling behind is judged when it happens, not when the outbox drains: a client that
    /// stopped reading altogether never drains, and must not linger until the ping timeout. The
    /// close frame queues behind what the client has yet to read; the write timeout drops the
    /// connection if it never reads again.
    fn fall_behind(&mut self, now: Instant) -> Step {
        if self.view == View::Behind {
            return Step::Continue;
        }
        if !self.resyncs.allow(now) {
            return self.close(Why::SlowConsumer);
        }
        self.view = View::Behind;
        Step::Continue
    }

    /// Something from the client. Any sign of life answers an outstanding ping.
    pub(super) fn heard(&mut self, message: FromClient, now: Instant) -> Step {
        match message {
            FromClient::TooBig => return self.close(Why::MessageTooBig),
            FromClient::InvalidUtf8 => return self.close(Why::InvalidUtf8),
            FromClient::Gone => return Step::End(End::Flush),
            FromClient::Ping(_) | FromClient::Text | FromClient::Other => {}
        }
        self.pong_deadline = None;
        match message {
            FromClient::Ping(payload) if !self.out.pong_queued(payload) => {
                self.close(Why::TooManyPings)
            }
            FromClient::Text => match self.budget.admit(now) {
                Admission::Accept => Step::Read,
                Admission::Refuse { tell: true } => Step::Refused,
                Admission::Refuse { tell: false } => Step::Continue,
                Admission::Close => self.close(Why::TooManySubscribes),
            },
            _ => Step::Continue,
        }
    }

    /// The client subscribed with a new filter: it starts over with a fresh snapshot at a new
    /// seq, so whatever of the old view is still queued will never be needed.
    pub(super) fn resubscribe(&mut self) {
        self.out.drop_queued_view();
        self.view = View::Resubscribing;
    }

    /// The ping interval came round: a ping is queued, and the client must answer (with
    /// anything) within the pong timeout of the first unanswered one.
    pub(super) fn ping_due(&mut self, now: Instant) {
        self.out.push(Outgoing::Ping);
        self.pong_deadline.get_or_insert(now + self.pong_timeout);
    }

    /// The pong deadline passed.
    pub(super) fn pong_overdue(&mut self) -> Step {
        self.close(Why::PingTimeout)
    }

    /// The write deadline passed: the socket took no data for the write timeout.
    pub(super) fn write_stalled(&self) -> Step {
        Step::End(End::Drop)
    }

    /// The server is shutting down (or the broadcast closed).
    pub(super) fn shutting_down(&mut self) -> Step {
        self.close(Why::ShuttingDown)
    }

    /// Queues the close frame behind what is already queued.
    fn close(&mut self, why: Why) -> Step {
        let (code, reason) = why.frame();
        self.out.push(Outgoing::Close(code, reason));
        Step::Close(why)
    }
}

/// A token bucket over client messages: [`MESSAGE_BURST`] at once, [`MESSAGES_PER_SECOND`] after.
///
/// Refusals are counted per episode: from the first refusal until the bucket is full again (the
/// client has kept within the rate for `MESSAGE_BURST / MESSAGES_PER_SECOND` seconds). Why not
/// "in a row": a flood that the server reads slowly (a loaded machine, a starved task) sees the
/// bucket refill between its messages, and an accepted one would restart the count every half
/// second, so the flooder would never be closed and would get a snapshot built every time.
struct MessageBudget {
    tokens: f64,
    updated: Instant,
    /// Messages refused in this episode (0 when none is under way).
    refused: u32,
}

/// What to do with a client message, by the budget.
#[derive(Debug, PartialEq, Eq)]
enum Admission {
    Accept,
    /// Ignore it; `true` for the first refusal of an episode (the one that gets an error frame).
    Refuse {
        tell: bool,
    },
    /// Too many refused in one episode: close the client.
    Close,
}

impl MessageBudget {
    fn new(now: Instant) -> Self {
        Self {
            tokens: MESSAGE_BURST,
            updated: now,
            refused: 0,
        }
    }

    fn admit(&mut self, now: Instant) -> Admission {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * MESSAGES_PER_SECOND).min(MESSAGE_BURST);
        self.updated = now;
        if self.tokens >= MESSAGE_BURST {
            // Quiet for long enough: whatever was refused before is forgiven.
            self.refused = 0;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Admission::Accept;
        }
        self.refused += 1;
        if self.refused > MAX_REFUSED_MESSAGES {
            Admission::Close
        } else {
            Admission::Refuse {
                tell: self.refused == 1,
            }
        }
    }
}

#[cfg(test)]
mod tests;
