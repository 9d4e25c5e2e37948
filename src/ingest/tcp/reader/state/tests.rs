//! The reader's rules as scenarios: bytes arrive at a time, and the state says what to do next.
//! No socket, no engine, no clock.

use super::*;
use crate::ingest::frame;
use crate::proto;

fn config() -> TcpConfig {
    TcpConfig {
        max_frame_bytes: 1024,
        max_connections: 1,
        max_tls_handshakes: 1,
        max_in_flight: 1,
        limits: EventLimits {
            max_events_per_msg: 5,
            ..EventLimits::DEFAULT
        },
        idle_timeout: Duration::from_secs(300),
        first_frame_timeout: Duration::from_secs(10),
        frame_timeout: Duration::from_secs(30),
        write_timeout: Duration::from_secs(30),
        queries: true,
    }
}

fn framed(msg: &Msg) -> Vec<u8> {
    let mut out = BytesMut::new();
    frame::encode(msg, &mut out);
    out.to_vec()
}

/// A Msg of `n` events.
fn events(n: usize) -> Vec<u8> {
    framed(&Msg {
        events: (0..n)
            .map(|i| proto::Event {
                service: Some(format!("s{i}")),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

fn query() -> Vec<u8> {
    framed(&Msg {
        query: Some(proto::Query {
            string: Some("true".to_owned()),
        }),
        ..Default::default()
    })
}

fn empty() -> Vec<u8> {
    framed(&Msg::default())
}

/// `n` copies of `bytes`, one after the other.
fn times(n: usize, bytes: Vec<u8>) -> Vec<u8> {
    bytes.repeat(n)
}

/// What happens in a scenario, `at` seconds in.
enum Do {
    /// A read brings these bytes.
    Arrive(u64, Vec<u8>),
    /// The reader asks what to do next, and is told this.
    Next(u64, &'static str),
}

use Do::{Arrive, Next};

/// One word for an action, with the read deadline in seconds from the start.
fn describe(action: &Action, start: tokio::time::Instant) -> String {
    match action {
        Action::Submit { events, msgs, .. } => {
            format!("submit {} msgs, {} events", msgs.count, events.len())
        }
        Action::Handle { msg, .. } if msg.query.is_some() => "handle query".to_owned(),
        Action::Handle { .. } => "handle empty".to_owned(),
        Action::Reply(reply) => {
            let close = if reply.closes() { " and close" } else { "" };
            match reply {
                Reply::Ready(msg) | Reply::Fatal(msg) => {
                    let error = msg.error.as_deref().unwrap_or("ok");
                    format!("reply{close}: {error}")
                }
                Reply::Foreign(bytes) => format!("reply{close}: {} raw bytes", bytes.len()),
                Reply::Pending(..) | Reply::Query(..) => "reply from the engine".to_owned(),
            }
        }
        Action::Read { deadline, timeout } => {
            format!(
                "read until {}s ({timeout:?})",
                (*deadline - start).as_secs()
            )
        }
    }
}

#[test]
fn reader_scenarios() {
    let scenarios: Vec<(&str, Vec<Do>)> = vec![
        (
            "a connection that sends nothing is closed at the first-frame timeout",
            vec![Next(0, "read until 10s (FirstFrame)")],
        ),
        (
            "half a first frame: the first-frame deadline still holds",
            vec![
                Arrive(1, events(1)[..5].to_vec()),
                Next(1, "read until 10s (FirstFrame)"),
            ],
        ),
        (
            "a frame must arrive whole within the frame timeout of its start",
            vec![
                Arrive(1, [events(1), events(1)[..5].to_vec()].concat()),
                Next(1, "submit 1 msgs, 1 events"),
                Next(2, "read until 32s (Frame)"),
                // More of the same frame: its clock does not restart.
                Arrive(20, events(1)[5..7].to_vec()),
                Next(20, "read until 32s (Frame)"),
                Arrive(25, events(1)[7..].to_vec()),
                Next(25, "submit 1 msgs, 1 events"),
                Next(25, "read until 325s (Idle)"),
            ],
        ),
        (
            "the event-only Msgs of one read are one batch; the reads' deadlines restart after",
            vec![
                Arrive(1, times(3, events(2))),
                Next(1, "submit 3 msgs, 6 events"),
                // The reply queue was full for a minute: that time counts against no deadline.
                Next(61, "read until 361s (Idle)"),
            ],
        ),
        (
            "a full batch is sent at once, and decoding goes on",
            vec![
                Arrive(1, times(1030, events(1))),
                Next(1, "submit 1024 msgs, 1024 events"),
                Next(1, "submit 6 msgs, 6 events"),
                Next(1, "read until 301s (Idle)"),
            ],
        ),
        (
            "what is batched goes before a query, an empty Msg, or an error",
            vec![
                Arrive(
                    1,
                    [events(1), query(), events(1), empty(), events(1), events(6)].concat(),
                ),
                Next(1, "submit 1 msgs, 1 events"),
                Next(1, "handle query"),
                Next(1, "submit 1 msgs, 1 events"),
                Next(1, "handle empty"),
                Next(1, "submit 1 msgs, 1 events"),
                // Over a limit: answered, and the connection goes on.
                Next(
                    1,
                    "reply: message has more than 5 events (--max-events-per-msg)",
                ),
                Next(1, "read until 301s (Idle)"),
            ],
        ),
        (
            "an oversize frame is answered and closes the connection, after the batch",
            vec![
                Arrive(1, [events(1), vec![0, 0, 4, 1, 0]].concat()),
                Next(1, "submit 1 msgs, 1 events"),
                Next(
                    1,
                    "reply and close: frame of 1025 bytes exceeds the 1024 byte limit",
                ),
            ],
        ),
        (
            "an HTTP client on the Riemann port is told where the dashboard is",
            vec![
                Arrive(1, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
                Next(1, "reply and close: 178 raw bytes"),
            ],
        ),
    ];
    for (name, steps) in scenarios {
        let start = tokio::time::Instant::now();
        let wall = Instant::now();
        let counters = Arc::new(Counters::default());
        let peer: SocketAddr = ([127, 0, 0, 1], 5555).into();
        let mut state = ReadState::new(&config(), counters, peer, start, 0, wall);
        for (i, step) in steps.into_iter().enumerate() {
            match step {
                Arrive(at, bytes) => {
                    state.read_buffer().extend_from_slice(&bytes);
                    state.received(at as i64, wall + Duration::from_secs(at));
                }
                Next(at, expected) => {
                    let action = state.next(start + Duration::from_secs(at));
                    assert_eq!(describe(&action, start), expected, "{name}: step {i}");
                }
            }
        }
    }
}

#[test]
fn events_get_the_arrival_time_of_the_read_that_brought_them() {
    let start = tokio::time::Instant::now();
    let wall = Instant::now();
    let peer: SocketAddr = ([127, 0, 0, 1], 5555).into();
    let mut state = ReadState::new(&config(), Arc::default(), peer, start, 0, wall);
    state.read_buffer().extend_from_slice(&events(2));
    let read_at = wall + Duration::from_secs(3);
    state.received(1_234_567, read_at);
    match state.next(start) {
        Action::Submit {
            events,
            read_at: submitted_at,
            ..
        } => {
            assert!(events.iter().all(|e| e.time_micros == 1_234_567));
            assert_eq!(submitted_at, read_at);
        }
        other => panic!("expected a batch, got {}", describe(&other, start)),
    }
}

#[test]
fn bad_frames_are_counted() {
    let start = tokio::time::Instant::now();
    let counters = Arc::new(Counters::default());
    let peer: SocketAddr = ([127, 0, 0, 1], 5555).into();
    let mut state = ReadState::new(
        &config(),
        Arc::clone(&counters),
        peer,
        start,
        0,
        Instant::now(),
    );
    state.read_buffer().extend_from_slice(&events(6));
    let _ = state.next(start);
    state.read_buffer().extend_from_slice(&[0, 0, 4, 1]);
    let _ = state.next(start);
    assert_eq!(
        counters
            .tcp_bad_frames
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[test]
fn a_new_connection_has_the_first_frame_deadline_then_the_idle_one() {
    let t0 = tokio::time::Instant::now();
    let s = Duration::from_secs;
    let mut deadlines = Deadlines::new(t0, &config());
    deadlines.before_read(t0, false, false);
    assert_eq!(deadlines.next(), (t0 + s(10), TcpTimeout::FirstFrame));
    // Half a first frame: the first-frame deadline is still the nearest.
    deadlines.before_read(t0 + s(1), false, true);
    assert_eq!(deadlines.next(), (t0 + s(10), TcpTimeout::FirstFrame));
    // A whole frame: only the idle deadline, from then on.
    deadlines.before_read(t0 + s(5), true, false);
    assert_eq!(deadlines.next(), (t0 + s(305), TcpTimeout::Idle));
}

#[test]
fn a_started_frame_must_finish_within_the_frame_timeout_of_its_start() {
    let t0 = tokio::time::Instant::now();
    let s = Duration::from_secs;
    let mut deadlines = Deadlines::new(t0, &config());
    deadlines.before_read(t0 + s(1), true, false);
    // A frame starts at 100 s; more bytes of it keep arriving, one at a time.
    deadlines.before_read(t0 + s(100), false, true);
    deadlines.before_read(t0 + s(120), false, true);
    assert_eq!(deadlines.next(), (t0 + s(130), TcpTimeout::Frame));
    // It completes, with the start of the next one behind it: that one's clock starts now.
    deadlines.before_read(t0 + s(125), true, true);
    assert_eq!(deadlines.next(), (t0 + s(155), TcpTimeout::Frame));
    // Nothing buffered: idle again.
    deadlines.before_read(t0 + s(126), true, false);
    assert_eq!(deadlines.next(), (t0 + s(426), TcpTimeout::Idle));
}
