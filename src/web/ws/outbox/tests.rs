//! The outbox against a socket the test controls: fast, slow (takes a few frames, or does not
//! flush), failing.

use std::pin::Pin;
use std::task::Waker;

use super::*;

/// Where the mock socket fails, when it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    Ready,
    Send,
    Flush,
}

/// A socket whose readiness, flushes and failures the test decides.
#[derive(Default)]
struct MockSink {
    /// Messages it takes before `poll_ready` is pending; `None`: any number.
    room: Option<usize>,
    /// `poll_flush` is pending while set.
    flush_blocked: bool,
    fail: Option<Fail>,
    /// Messages taken, in order.
    taken: Vec<Message>,
    /// Of `taken`, how many a completed flush wrote out.
    flushed: usize,
    flushes: usize,
}

impl Sink<Message> for MockSink {
    type Error = &'static str;

    fn poll_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        if this.fail == Some(Fail::Ready) {
            return Poll::Ready(Err("not ready"));
        }
        if this.room == Some(0) {
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        let this = self.get_mut();
        if this.fail == Some(Fail::Send) {
            return Err("send failed");
        }
        if let Some(room) = &mut this.room {
            *room -= 1;
        }
        this.taken.push(item);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        if this.fail == Some(Fail::Flush) {
            return Poll::Ready(Err("flush failed"));
        }
        if this.flush_blocked {
            return Poll::Pending;
        }
        this.flushed = this.taken.len();
        this.flushes += 1;
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_flush(cx)
    }
}

impl MockSink {
    /// What it was handed, readably: the text of text frames, `ping`, `close CODE REASON`.
    fn log(&self) -> Vec<String> {
        self.taken
            .iter()
            .map(|message| match message {
                Message::Text(text) => text.to_string(),
                Message::Ping(payload) if payload.is_empty() => "ping".to_owned(),
                Message::Close(Some(frame)) => format!("close {} {}", frame.code, frame.reason),
                other => format!("unexpected {other:?}"),
            })
            .collect()
    }
}

fn write(out: &mut Outbox, sink: &mut MockSink) -> Poll<Result<bool, ()>> {
    out.poll_write(sink, &mut Context::from_waker(Waker::noop()))
}

fn view(text: &'static str) -> Outgoing {
    Outgoing::View(Utf8Bytes::from_static(text))
}

fn frame(text: &'static str) -> Outgoing {
    Outgoing::Frame(Utf8Bytes::from_static(text))
}

#[test]
fn a_fast_socket_takes_everything_with_one_flush() {
    let mut out = Outbox::new(1000);
    out.push(view("snapshot"));
    assert!(out.offer(view("change")));
    assert!(out.offer(frame("stats")));
    out.push(Outgoing::Ping);
    assert_eq!(out.bytes(), 19);
    let mut sink = MockSink::default();
    assert_eq!(write(&mut out, &mut sink), Poll::Ready(Ok(true)));
    assert_eq!(sink.log(), ["snapshot", "change", "stats", "ping"]);
    assert_eq!((sink.flushes, sink.flushed), (1, 4));
    assert_eq!(out.bytes(), 0);
    assert!(out.is_idle());
    // Nothing queued, nothing to flush: no call on the socket.
    assert_eq!(write(&mut out, &mut sink), Poll::Ready(Ok(true)));
    assert_eq!(sink.flushes, 1);
}

#[test]
fn a_slow_socket_takes_what_it_can_and_the_rest_stays_queued() {
    let mut out = Outbox::new(1000);
    for text in ["a", "bb", "ccc"] {
        out.push(frame(text));
    }
    let mut sink = MockSink {
        room: Some(2),
        ..Default::default()
    };
    // Progress, then a full socket: the caller restarts its write deadline.
    assert_eq!(write(&mut out, &mut sink), Poll::Ready(Ok(false)));
    assert_eq!(sink.log(), ["a", "bb"]);
    assert_eq!(sink.flushes, 0);
    // Handed over but not flushed still counts against the budget.
    assert_eq!(out.bytes(), 6);
    // No progress possible: pending, and nothing lost (cancel-safe).
    assert_eq!(write(&mut out, &mut sink), Poll::Pending);
    assert!(!out.is_idle());
    assert_eq!(out.bytes(), 6);
    sink.room = None;
    assert_eq!(write(&mut out, &mut sink), Poll::Ready(Ok(true)));
    assert_eq!(sink.log(), ["a", "bb", "ccc"]);
    assert_eq!((sink.flushes, sink.flushed), (1, 3));
    assert_eq!(out.bytes(), 0);
    assert!(out.is_idle());
}

#[test]
fn bytes_count_until_the_socket_has_flushed_them() {
    let mut out = Outbox::new(10);
    out.push(view("12345678"));
    let mut sink = MockSink {
        flush_blocked: true,
        ..Default::default()
    };
    assert_eq!(write(&mut out, &mut sink), Poll::Ready(Ok(false)));
    assert_eq!(sink.log(), ["12345678"]);
    assert_eq!(write(&mut out, &mut sink), Poll::Pending);
    assert_eq!(out.bytes(), 8);
    assert!(
        !out.offer(view("12345")),
        "the unflushed frame fills the budget"
    );
    sink.flush_blocked = false;
    assert_eq!(write(&mut out, &mut sink), Poll::Ready(Ok(true)));
    assert_eq!(out.bytes(), 0);
    assert!(out.offer(view("12345")));
}

#[test]
fn a_failing_socket_is_reported_wherever_it_fails() {
    for fail in [Fail::Ready, Fail::Send, Fail::Flush] {
        let mut out = Outbox::new(1000);
        out.push(frame("x"));
        let mut sink = MockSink {
            fail: Some(fail),
            ..Default::default()
        };
        assert_eq!(write(&mut out, &mut sink), Poll::Ready(Err(())), "{fail:?}");
    }
    // A flush owed for a pong alone fails too.
    let mut out = Outbox::new(1000);
    assert!(out.pong_queued(0));
    let mut sink = MockSink {
        fail: Some(Fail::Flush),
        ..Default::default()
    };
    assert_eq!(write(&mut out, &mut sink), Poll::Ready(Err(())));
}

#[test]
fn nothing_follows_a_close_frame() {
    let mut out = Outbox::new(1000);
    out.push(frame("last words"));
    out.push(Outgoing::Close(1008, "slow consumer"));
    out.push(view("never sent"));
    out.push(Outgoing::Ping);
    let mut sink = MockSink::default();
    assert_eq!(write(&mut out, &mut sink), Poll::Ready(Ok(true)));
    assert_eq!(sink.log(), ["last words", "close 1008 slow consumer"]);
    assert_eq!(out.bytes(), 0);
    assert!(out.is_idle());
}

#[test]
fn the_byte_budget_refuses_changes_but_an_empty_outbox_takes_any_size() {
    let mut out = Outbox::new(10);
    assert!(out.offer(view("larger than the limit")), "empty: taken");
    assert!(!out.offer(view("x")), "over the limit: fell behind");
    assert!(!out.offer(frame("x")), "stats too");
    // Replies and snapshots are queued whatever the budget.
    out.push(frame("reply"));
    assert_eq!(out.bytes(), 26);
    let mut sink = MockSink::default();
    assert_eq!(write(&mut out, &mut sink), Poll::Ready(Ok(true)));
    assert!(out.offer(view("0123456789")), "exactly the limit");
    assert!(!out.offer(view("x")));
}

#[test]
fn a_new_view_drops_queued_snapshots_and_changes_but_keeps_replies() {
    let mut out = Outbox::new(1000);
    out.push(view("snapshot!"));
    out.push(frame("stats"));
    out.push(view("change"));
    out.drop_queued_view();
    assert_eq!(out.bytes(), 5);
    assert_eq!(out.items.len(), 1);
    assert!(matches!(&out.items[0], Outgoing::Frame(f) if f.as_str() == "stats"));
}

#[test]
fn a_new_view_keeps_what_the_socket_already_has() {
    let mut out = Outbox::new(1000);
    out.push(view("old snapshot"));
    let mut sink = MockSink {
        flush_blocked: true,
        ..Default::default()
    };
    assert_eq!(write(&mut out, &mut sink), Poll::Ready(Ok(false)));
    out.push(view("old change"));
    out.drop_queued_view();
    out.push(view("new"));
    sink.flush_blocked = false;
    assert_eq!(write(&mut out, &mut sink), Poll::Ready(Ok(true)));
    assert_eq!(sink.log(), ["old snapshot", "new"]);
    assert_eq!(out.bytes(), 0);
}

#[test]
fn unflushed_pongs_are_bounded() {
    let mut out = Outbox::new(1000);
    let mut pings = 0;
    while out.pong_queued(125) {
        pings += 1;
    }
    assert_eq!(pings, MAX_UNSENT_PONG_BYTES / 127);
    assert!(out.needs_flush);
}

#[test]
fn a_flush_sends_pending_pongs_even_with_nothing_queued() {
    let mut out = Outbox::new(1000);
    assert!(out.pong_queued(10));
    assert!(!out.is_idle(), "the pong must leave");
    let mut sink = MockSink::default();
    assert_eq!(write(&mut out, &mut sink), Poll::Ready(Ok(true)));
    assert_eq!(sink.flushes, 1);
    assert!(sink.taken.is_empty());
    assert!(out.is_idle());
    assert_eq!(out.unsent_pong_bytes, 0, "the flush wrote them");
}

#[test]
fn a_closing_session_flushes_with_nothing_queued() {
    let mut out = Outbox::new(1000);
    out.flush_on_next_write();
    let mut sink = MockSink::default();
    assert_eq!(write(&mut out, &mut sink), Poll::Ready(Ok(true)));
    assert_eq!(sink.flushes, 1);
}

#[test]
fn a_drained_outbox_gives_back_its_room() {
    let mut out = Outbox::new(usize::MAX);
    for _ in 0..10 * SHRINK_ABOVE {
        out.push(view("change"));
    }
    assert!(out.items.capacity() > SHRINK_ABOVE);
    assert_eq!(
        write(&mut out, &mut MockSink::default()),
        Poll::Ready(Ok(true))
    );
    assert!(out.items.capacity() <= SHRINK_ABOVE);
}

#[test]
fn resyncs_are_limited_per_window() {
    let start = Instant::now();
    let mut resyncs = Resyncs::new(2);
    assert!(resyncs.allow(start));
    assert!(resyncs.allow(start + Duration::from_secs(1)));
    assert!(!resyncs.allow(start + Duration::from_secs(2)));
    // The first one has left the window: room for one more.
    let later = start + RESYNC_WINDOW + Duration::from_millis(500);
    assert!(resyncs.allow(later));
    assert!(!resyncs.allow(later));
    assert!(!Resyncs::new(0).allow(start), "0: the first lag closes");
}

fn start(text: &'static str) -> Outgoing {
    Outgoing::Start(Utf8Bytes::from_static(text))
}

/// Issue 20 item 1: a snapshot larger than the budget, queued or being written, does not make
/// the changes behind it "fall behind"; the changes behind it are still bounded by the budget.
#[test]
fn a_snapshot_being_written_does_not_count_against_the_budget() {
    let mut out = Outbox::new(10);
    out.push(start("a snapshot far larger than the budget"));
    assert!(out.offer(view("change-1")), "queued behind the snapshot");
    assert!(!out.offer(view("change-2")), "past the budget behind it");
    // Handed to the socket but not flushed: still apart from the budget.
    let mut sink = MockSink {
        flush_blocked: true,
        ..Default::default()
    };
    assert_eq!(write(&mut out, &mut sink), Poll::Ready(Ok(false)));
    assert!(
        !out.offer(view("change-2")),
        "change-1 is unflushed: still counted"
    );
    sink.flush_blocked = false;
    assert_eq!(write(&mut out, &mut sink), Poll::Ready(Ok(true)));
    assert_eq!(out.bytes(), 0);
    assert!(out.offer(view("change-2")));
    // A new snapshot replaces the queued view, and its bytes leave the count with it.
    out.push(start("another snapshot"));
    out.drop_queued_view();
    assert_eq!(out.bytes(), 0);
    assert!(out.offer(view("change-3")));
    assert!(!out.offer(view("change-4")));
}

fn start_owned(text: String) -> Outgoing {
    Outgoing::Start(Utf8Bytes::from(text))
}

#[test]
fn a_batching_client_gets_views_queued_together_as_one_batch() {
    let mut out = Outbox::new(1000);
    out.batch_views(true);
    out.push(start(r#"{"type":"snapshot"}"#));
    assert!(out.offer(view(r#"{"type":"change","seq":1}"#)));
    assert!(out.offer(view(r#"{"type":"ack","seq":2}"#)));
    assert!(out.offer(frame(r#"{"type":"stats"}"#)));
    assert!(out.offer(view(r#"{"type":"change","seq":3}"#)));
    let mut sink = MockSink::default();
    assert_eq!(write(&mut out, &mut sink), Poll::Ready(Ok(true)));
    assert_eq!(
        sink.log(),
        [
            r#"{"type":"batch","frames":[{"type":"snapshot"},{"type":"change","seq":1},{"type":"ack","seq":2}]}"#,
            r#"{"type":"stats"}"#,
            // One view alone is sent as it is.
            r#"{"type":"change","seq":3}"#,
        ]
    );
    // Every frame's bytes, snapshot ones included, leave the count once flushed.
    assert_eq!(out.bytes(), 0);
    assert!(out.is_idle());
}

#[test]
fn a_client_that_did_not_ask_gets_one_message_per_frame() {
    let mut out = Outbox::new(1000);
    assert!(out.offer(view("a")));
    assert!(out.offer(view("b")));
    let mut sink = MockSink::default();
    assert_eq!(write(&mut out, &mut sink), Poll::Ready(Ok(true)));
    assert_eq!(sink.log(), ["a", "b"]);
}

#[test]
fn a_batch_stops_at_its_byte_bound_and_a_large_frame_leaves_alone() {
    let mut out = Outbox::new(usize::MAX);
    out.batch_views(true);
    let large = "x".repeat(MAX_BATCH_BYTES + 1);
    out.push(start_owned(large.clone()));
    let piece = "y".repeat(MAX_BATCH_BYTES / 3);
    for _ in 0..4 {
        out.push(Outgoing::View(Utf8Bytes::from(piece.clone())));
    }
    let mut sink = MockSink::default();
    assert_eq!(write(&mut out, &mut sink), Poll::Ready(Ok(true)));
    let log = sink.log();
    assert_eq!(log.len(), 3, "the large one, then two batches");
    assert_eq!(log[0], large);
    // Two of the pieces fit under the bound with their separators, the third does not.
    let two = format!(r#"{{"type":"batch","frames":[{piece},{piece}]}}"#);
    assert_eq!(log[1], two);
    assert_eq!(log[2], two);
    assert_eq!(out.bytes(), 0);
}

#[test]
fn a_batch_on_a_slow_socket_is_one_message_and_its_bytes_count_until_flushed() {
    let mut out = Outbox::new(1000);
    out.batch_views(true);
    assert!(out.offer(view("a")));
    assert!(out.offer(view("b")));
    assert!(out.offer(frame("c")));
    let mut sink = MockSink {
        room: Some(1),
        flush_blocked: true,
        ..Default::default()
    };
    assert_eq!(write(&mut out, &mut sink), Poll::Ready(Ok(false)));
    assert_eq!(sink.log(), [r#"{"type":"batch","frames":[a,b]}"#]);
    assert_eq!(out.bytes(), 3, "handed over, not flushed: still counted");
    sink.room = None;
    sink.flush_blocked = false;
    assert_eq!(write(&mut out, &mut sink), Poll::Ready(Ok(true)));
    assert_eq!(sink.log().len(), 2);
    assert_eq!(out.bytes(), 0);
}

fn metrics(text: &'static str) -> Outgoing {
    Outgoing::Metrics(Utf8Bytes::from_static(text))
}

/// Issue 23: the one `metrics` frame can be taken back while it is queued (the session replaces
/// it), and is "in flight" from the moment the socket has it until a flush wrote it out.
#[test]
fn a_queued_metrics_frame_is_taken_back_and_one_in_flight_is_known_until_flushed() {
    let mut out = Outbox::new(1000);
    assert!(!out.take_queued_metrics(), "none queued");
    assert!(!out.holds_metrics());
    out.push(view("change"));
    assert!(out.offer(metrics("m1")));
    assert!(out.holds_metrics());
    assert!(out.offer(frame("stats")));
    assert_eq!(out.bytes(), 13);
    assert!(out.take_queued_metrics());
    assert_eq!(out.bytes(), 11, "its bytes go with it");
    assert!(out.offer(metrics("m2")));
    let mut sink = MockSink {
        flush_blocked: true,
        ..Default::default()
    };
    assert!(!out.metrics_in_flight());
    assert_eq!(write(&mut out, &mut sink), Poll::Ready(Ok(false)));
    assert_eq!(
        sink.log(),
        ["change", "stats", "m2"],
        "the replacement goes at the back"
    );
    assert!(
        !out.take_queued_metrics(),
        "handed to the socket: no longer queued"
    );
    assert!(out.metrics_in_flight(), "the client has not taken it yet");
    assert!(out.holds_metrics());
    sink.flush_blocked = false;
    assert_eq!(write(&mut out, &mut sink), Poll::Ready(Ok(true)));
    assert!(!out.metrics_in_flight() && !out.holds_metrics());
    assert!(out.is_idle());
}
