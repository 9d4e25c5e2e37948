//! A session's rules as scenarios: a table of events, each with what the state answers, and what
//! the client then receives. No socket, no engine, no sleeps: time is data.

use std::task::{Context, Waker};

use axum::extract::ws::Message;

use super::*;

/// `--ws-queue-bytes 100`, `--ws-max-resyncs 2`, `--ws-write-timeout 10s`, `--ws-pong-timeout 3s`.
fn config() -> WsConfig {
    WsConfig {
        queue_bytes: 100,
        max_resyncs: 2,
        write_timeout: Duration::from_secs(10),
        ping_interval: Duration::from_secs(5),
        pong_timeout: Duration::from_secs(3),
    }
}

/// A frame of `len` bytes named `tag`: `tag` padded with dots.
fn frame(tag: &str, len: usize) -> Utf8Bytes {
    format!("{tag}{}", ".".repeat(len.saturating_sub(tag.len()))).into()
}

/// What happens, `ms` milliseconds into the scenario.
#[derive(Debug, Clone, Copy)]
enum Ev {
    /// A snapshot (or replay) of this many bytes starts the view.
    Snapshot(usize),
    /// A wanted change of this many bytes.
    Change(usize),
    Missed,
    Stats(usize),
    /// A `metrics` frame of this many bytes.
    Metrics(usize),
    Client(FromClient),
    /// The client's request was a valid subscribe.
    Subscribed,
    PingDue,
    PongOverdue,
    WriteStalled,
    Shutdown,
    /// A write's result.
    Wrote(Result<bool, ()>),
    /// The session's question before a wait.
    Prepare,
    /// The socket takes everything queued.
    Drain,
    /// Observations.
    Seen,
    TakesChanges,
    PongDeadline,
    WriteDeadline,
}

/// What the state answered.
#[derive(Debug, PartialEq)]
enum Got {
    Step(Step),
    Need(Option<Need>),
    /// What the client received, one word per message: a frame's tag, `ping`, `close CODE REASON`.
    Sent(Vec<String>),
    View(View),
    Bool(bool),
    /// A deadline, in ms from the start.
    At(Option<u64>),
    Nothing,
}

use Ev::*;
use Got::Step as S;

fn sent(words: &[&str]) -> Got {
    Got::Sent(words.iter().map(|w| w.to_string()).collect())
}

struct Run {
    state: SessionState,
    start: Instant,
}

impl Run {
    fn new() -> Self {
        let start = Instant::now();
        Self {
            state: SessionState::new(&config(), start),
            start,
        }
    }

    fn apply(&mut self, ms: u64, ev: Ev) -> Got {
        let now = self.start + Duration::from_millis(ms);
        let state = &mut self.state;
        match ev {
            Snapshot(len) => {
                state.start_view([frame("snap", len)]);
                Got::Nothing
            }
            Change(len) => Got::Step(state.change(frame("change", len), now)),
            Missed => Got::Step(state.missed(now)),
            Stats(len) => Got::Step(state.stats(frame("stats", len), now)),
            Metrics(len) => Got::Step(state.metrics(frame("metrics", len), now)),
            Client(message) => Got::Step(state.heard(message, now)),
            Subscribed => {
                state.resubscribe();
                Got::Nothing
            }
            PingDue => {
                state.ping_due(now);
                Got::Nothing
            }
            PongOverdue => Got::Step(state.pong_overdue()),
            WriteStalled => Got::Step(state.write_stalled()),
            Shutdown => Got::Step(state.shutting_down()),
            Wrote(result) => Got::Step(state.written(result, now)),
            Prepare => Got::Need(state.prepare(now)),
            Drain => {
                let mut socket: Vec<Message> = Vec::new();
                let mut cx = Context::from_waker(Waker::noop());
                let wrote = state.outbox().poll_write(&mut socket, &mut cx);
                assert!(wrote.is_ready(), "a socket with room takes everything");
                Got::Sent(socket.iter().map(word).collect())
            }
            Seen => Got::View(state.view),
            TakesChanges => Got::Bool(state.takes_changes()),
            PongDeadline => Got::At(ms_since(self.start, state.pong_deadline())),
            WriteDeadline => Got::At(ms_since(self.start, state.write_deadline())),
        }
    }
}

fn ms_since(start: Instant, at: Option<Instant>) -> Option<u64> {
    at.map(|at| (at - start).as_millis() as u64)
}

fn word(message: &Message) -> String {
    match message {
        Message::Text(text) => text.as_str().trim_end_matches('.').to_owned(),
        Message::Ping(_) => "ping".to_owned(),
        Message::Close(Some(close)) => format!("close {} {}", close.code, close.reason),
        other => format!("{other:?}"),
    }
}

/// A name, and events each at a time (ms) with the answer expected.
type Scenario = (&'static str, Vec<(u64, Ev, Got)>);

#[test]
fn session_scenarios() {
    let scenarios: Vec<Scenario> = vec![
        (
            "a snapshot being written does not count: changes queue behind it up to the limit",
            vec![
                (0, Snapshot(500), Got::Nothing),
                (0, Change(60), S(Step::Continue)),
                (0, Seen, Got::View(View::Live)),
                // 60 + 60 > 100: the client fell behind; it is not sent the change.
                (1, Change(60), S(Step::Continue)),
                (1, Seen, Got::View(View::Behind)),
                (1, TakesChanges, Got::Bool(false)),
                // Nothing is built while the outbox holds data.
                (2, Prepare, Got::Need(None)),
                (3, Drain, sent(&["snap", "change"])),
                (4, Prepare, Got::Need(Some(Need::Resync))),
                (5, Snapshot(500), Got::Nothing),
                (5, Prepare, Got::Need(None)),
                (5, Seen, Got::View(View::Live)),
                (6, Change(60), S(Step::Continue)),
                (7, Drain, sent(&["snap", "change"])),
            ],
        ),
        (
            "falling behind more than --ws-max-resyncs times a minute closes with 1008",
            vec![
                (0, Missed, S(Step::Continue)),
                (0, Prepare, Got::Need(Some(Need::Resync))),
                (0, Snapshot(10), Got::Nothing),
                (1_000, Missed, S(Step::Continue)),
                // Stats are skipped for a client that is behind.
                (1_000, Stats(10), S(Step::Continue)),
                (1_000, Drain, sent(&["snap"])),
                (1_000, Prepare, Got::Need(Some(Need::Resync))),
                (1_000, Snapshot(10), Got::Nothing),
                (2_000, Missed, S(Step::Close(Why::SlowConsumer))),
                (2_000, Drain, sent(&["snap", "close 1008 slow consumer"])),
            ],
        ),
        (
            "resynchronisations older than a minute no longer count",
            vec![
                (0, Missed, S(Step::Continue)),
                (0, Snapshot(10), Got::Nothing),
                (1, Missed, S(Step::Continue)),
                (1, Snapshot(10), Got::Nothing),
                (60_002, Missed, S(Step::Continue)),
                (60_002, Seen, Got::View(View::Behind)),
            ],
        ),
        (
            "a stats frame over the limit makes the client fall behind",
            vec![
                (0, Change(90), S(Step::Continue)),
                (0, Stats(20), S(Step::Continue)),
                (0, Seen, Got::View(View::Behind)),
            ],
        ),
        (
            "a metrics frame queues like stats; over the limit the client falls behind",
            vec![
                (0, Change(50), S(Step::Continue)),
                (0, Metrics(30), S(Step::Continue)),
                (0, Drain, sent(&["change", "metrics"])),
                (1, Change(90), S(Step::Continue)),
                (1, Metrics(20), S(Step::Continue)),
                (1, Seen, Got::View(View::Behind)),
                // Behind: skipped (the snapshot will carry every current value).
                (2, Metrics(20), S(Step::Continue)),
                (2, Drain, sent(&["change"])),
                (3, Prepare, Got::Need(Some(Need::Resync))),
            ],
        ),
        (
            "a client that does not answer a ping within the pong timeout is closed",
            vec![
                (0, PingDue, Got::Nothing),
                (0, PongDeadline, Got::At(Some(3_000))),
                // The first unanswered ping sets the deadline.
                (1_000, PingDue, Got::Nothing),
                (1_000, PongDeadline, Got::At(Some(3_000))),
                // Any sign of life answers it.
                (2_000, Client(FromClient::Other), S(Step::Continue)),
                (2_000, PongDeadline, Got::At(None)),
                (5_000, PingDue, Got::Nothing),
                (5_000, PongDeadline, Got::At(Some(8_000))),
                (8_000, PongOverdue, S(Step::Close(Why::PingTimeout))),
                (
                    8_000,
                    Drain,
                    sent(&["ping", "ping", "ping", "close 1008 ping timeout"]),
                ),
            ],
        ),
        (
            "a client's close ends the session once what is queued is delivered",
            vec![
                (0, Change(10), S(Step::Continue)),
                (1, Client(FromClient::Gone), S(Step::End(End::Flush))),
                (1, Drain, sent(&["change"])),
            ],
        ),
        (
            "a subscribe drops the queued view; its snapshot waits for the outbox to drain",
            vec![
                (0, Snapshot(500), Got::Nothing),
                (0, Change(10), S(Step::Continue)),
                (0, Stats(10), S(Step::Continue)),
                (1, Client(FromClient::Text), S(Step::Read)),
                (1, Subscribed, Got::Nothing),
                (1, Seen, Got::View(View::Resubscribing)),
                (1, TakesChanges, Got::Bool(false)),
                (1, Prepare, Got::Need(None)),
                (2, Drain, sent(&["stats"])),
                (3, Prepare, Got::Need(Some(Need::Snapshot))),
            ],
        ),
        (
            "a subscribe while behind gets the new filter's snapshot, not a reset",
            vec![
                (0, Missed, S(Step::Continue)),
                (0, Client(FromClient::Text), S(Step::Read)),
                (0, Subscribed, Got::Nothing),
                (0, Prepare, Got::Need(Some(Need::Snapshot))),
            ],
        ),
        (
            "falling behind while resubscribing makes it a resync",
            vec![
                (0, Change(90), S(Step::Continue)),
                (0, Subscribed, Got::Nothing),
                (0, Stats(20), S(Step::Continue)),
                (0, Stats(90), S(Step::Continue)),
                (0, Seen, Got::View(View::Behind)),
                (0, Drain, sent(&["stats"])),
                (0, Prepare, Got::Need(Some(Need::Resync))),
            ],
        ),
        (
            "a socket that takes no data within the write timeout is dropped",
            vec![
                (0, Change(10), S(Step::Continue)),
                (0, Prepare, Got::Need(None)),
                (0, WriteDeadline, Got::At(Some(10_000))),
                // Progress restarts the clock; a complete write stops it.
                (4_000, Wrote(Ok(false)), S(Step::Continue)),
                (4_000, WriteDeadline, Got::At(Some(14_000))),
                (14_000, WriteStalled, S(Step::End(End::Drop))),
                (14_000, Wrote(Err(())), S(Step::End(End::Drop))),
                (14_000, Wrote(Ok(true)), S(Step::Continue)),
                (14_000, WriteDeadline, Got::At(None)),
            ],
        ),
        (
            "writes close together rest 2 ms; a quiet client does not rest",
            vec![
                (0, Wrote(Ok(true)), S(Step::Continue)),
                (0, TakesChanges, Got::Bool(true)),
                (5, Wrote(Ok(true)), S(Step::Continue)),
                (5, TakesChanges, Got::Bool(false)),
                (6, Prepare, Got::Need(None)),
                (6, TakesChanges, Got::Bool(false)),
                (7, Prepare, Got::Need(None)),
                (7, TakesChanges, Got::Bool(true)),
                (20, Wrote(Ok(true)), S(Step::Continue)),
                (20, TakesChanges, Got::Bool(true)),
            ],
        ),
        (
            "a rest ends early once 16 KiB are queued",
            vec![
                (0, Wrote(Ok(true)), S(Step::Continue)),
                (1, Wrote(Ok(true)), S(Step::Continue)),
                (1, Snapshot(16 * 1024), Got::Nothing),
                (1, Prepare, Got::Need(None)),
                (1, TakesChanges, Got::Bool(true)),
            ],
        ),
        (
            "bad input closes with a reason, and the input is read a moment longer",
            vec![
                (
                    0,
                    Client(FromClient::TooBig),
                    S(Step::Close(Why::MessageTooBig)),
                ),
                (
                    0,
                    Client(FromClient::InvalidUtf8),
                    S(Step::Close(Why::InvalidUtf8)),
                ),
                // Nothing follows a close frame.
                (0, Drain, sent(&["close 1009 message too big"])),
            ],
        ),
        (
            "shutdown closes with 1001 behind what is queued",
            vec![
                (0, Change(10), S(Step::Continue)),
                (0, Shutdown, S(Step::Close(Why::ShuttingDown))),
                (
                    0,
                    Drain,
                    sent(&["change", "close 1001 server shutting down"]),
                ),
            ],
        ),
    ];
    for (name, events) in scenarios {
        let mut run = Run::new();
        for (i, (ms, ev, expected)) in events.into_iter().enumerate() {
            let got = run.apply(ms, ev);
            assert_eq!(got, expected, "{name}: event {i} ({ev:?} at {ms} ms)");
        }
    }
}

#[test]
fn the_ends_of_each_close() {
    assert_eq!(Why::MessageTooBig.end(), End::FlushAndLinger);
    assert_eq!(Why::InvalidUtf8.end(), End::FlushAndLinger);
    assert_eq!(Why::TooManySubscribes.end(), End::FlushAndLinger);
    // Reading on would queue more pongs.
    assert_eq!(Why::TooManyPings.end(), End::Flush);
    assert_eq!(Why::SlowConsumer.end(), End::Flush);
    assert_eq!(Why::ShuttingDown.end(), End::Flush);
}

#[test]
fn a_ping_flood_closes_once_its_pongs_pass_their_bound() {
    let mut run = Run::new();
    let mut steps = Vec::new();
    for _ in 0..520 {
        steps.push(run.apply(0, Client(FromClient::Ping(125))));
    }
    // Each pong is 127 bytes on the wire: 516 fit in 64 KiB.
    assert!(steps[..516].iter().all(|s| *s == S(Step::Continue)));
    assert_eq!(steps[516], S(Step::Close(Why::TooManyPings)));
}

#[test]
fn client_messages_past_the_budget_are_refused_then_close_the_client() {
    let mut run = Run::new();
    let text = Client(FromClient::Text);
    for _ in 0..MESSAGE_BURST as usize {
        assert_eq!(run.apply(0, text), S(Step::Read));
    }
    assert_eq!(run.apply(0, text), S(Step::Refused));
    assert_eq!(run.apply(0, text), S(Step::Continue));
    for _ in 2..MAX_REFUSED_MESSAGES {
        assert_eq!(run.apply(0, text), S(Step::Continue));
    }
    assert_eq!(run.apply(0, text), S(Step::Close(Why::TooManySubscribes)));
    assert_eq!(
        run.apply(0, Drain),
        sent(&["close 1008 too many subscribes"])
    );
}

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
    // The episode goes on (the bucket was not full again): not told again, and past the limit
    // of refusals in the episode, close.
    for _ in 2..MAX_REFUSED_MESSAGES {
        assert_eq!(budget.admit(later), Admission::Refuse { tell: false });
    }
    assert_eq!(budget.admit(later), Admission::Close);
}

/// A flood read slowly (10 messages a second, five times the rate) sees the bucket refill between
/// its messages. It must still be closed after the episode's refusals, not accepted every half
/// second for as long as it floods (the old "in a row" count restarted at each accepted one).
#[test]
fn a_flood_read_slowly_is_still_closed() {
    let start = Instant::now();
    let mut budget = MessageBudget::new(start);
    let (mut accepted, mut errors) = (0, 0);
    let mut closed_at = None;
    for i in 0..10_000u64 {
        let now = start + Duration::from_millis(100 * i);
        match budget.admit(now) {
            Admission::Accept => accepted += 1,
            Admission::Refuse { tell } => errors += u32::from(tell),
            Admission::Close => {
                closed_at = Some(i);
                break;
            }
        }
    }
    let closed_at = closed_at.expect("a slow flood is closed");
    // One error frame for the episode; what was accepted is the burst plus the rate meanwhile.
    assert_eq!(errors, 1);
    let seconds = closed_at as f64 / 10.0;
    assert!(
        f64::from(accepted) <= MESSAGE_BURST + MESSAGES_PER_SECOND * seconds + 1.0,
        "{accepted} accepted in {seconds} s"
    );
}

/// A client that keeps within the rate long enough to refill its burst starts a new episode:
/// told again, and its old refusals forgotten.
#[test]
fn a_full_bucket_ends_the_episode() {
    let start = Instant::now();
    let mut budget = MessageBudget::new(start);
    for _ in 0..MESSAGE_BURST as usize {
        budget.admit(start);
    }
    for _ in 0..MAX_REFUSED_MESSAGES {
        assert!(matches!(budget.admit(start), Admission::Refuse { .. }));
    }
    let refilled = start + Duration::from_secs_f64(MESSAGE_BURST / MESSAGES_PER_SECOND);
    for _ in 0..MESSAGE_BURST as usize {
        assert_eq!(budget.admit(refilled), Admission::Accept);
    }
    assert_eq!(budget.admit(refilled), Admission::Refuse { tell: true });
}
