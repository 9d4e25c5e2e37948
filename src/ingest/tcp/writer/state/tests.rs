//! The writer's rules as scenarios: reply slots, what the engine answers, and the replies that
//! come out, in order. No socket and no engine; the last test runs the writer task over an
//! in-memory pipe to check that it answers what is queued at shutdown, then closes.

use std::sync::Arc;

use prost::Message;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::super::{write_replies, Link};
use super::*;
use crate::ingest::frame::FrameDecoder;
use crate::metrics::Counters;
use crate::proto::Msg;

/// What happens to the writer.
#[derive(Debug, Clone, Copy)]
enum In {
    /// The next reply slot: `ok` now.
    Ready,
    /// An error reply now (bad input that does not close).
    Refused(&'static str),
    /// An error reply, then close.
    Fatal(&'static str),
    /// Raw bytes, then close (a client of another protocol).
    Foreign(&'static [u8]),
    /// A batch of Msgs of these sizes, waiting for the engine.
    Batch(&'static [usize]),
    /// The engine's answer to the batch waited for.
    Applied(Answer),
    /// The first change of the batch waited for is durable (or not).
    Durable(Answer),
    /// The engine went away while the reply waited.
    EngineGone,
}

#[derive(Debug, Clone, Copy)]
enum Answer {
    Ok,
    IndexFull,
    StorageFailed,
    /// Something else: the engine is shutting down.
    Closed,
    /// The batch's first change is this event.
    ChangedAt(usize),
}

impl Answer {
    fn ack(self) -> Ack {
        match self {
            Answer::Ok | Answer::ChangedAt(_) => Ok(()),
            Answer::IndexFull => Err(EngineError::IndexFull { max_keys: 2 }),
            Answer::StorageFailed => Err(EngineError::Storage("disk full".to_owned())),
            Answer::Closed => Err(EngineError::Closed),
        }
    }
}

fn error(text: &str) -> Msg {
    error_msg(text.to_owned())
}

/// One word per reply written: `ok`, `error: …`, or `N raw bytes` for what is not a frame.
fn written(out: &mut BytesMut) -> Vec<String> {
    let decoder = FrameDecoder::new(1 << 20);
    let mut words = Vec::new();
    if out.starts_with(b"HTTP") {
        words.push(format!("{} raw bytes", out.len()));
        out.clear();
    }
    while let Ok(Some(body)) = decoder.decode(out) {
        let msg = Msg::decode(body).expect("a reply decodes");
        words.push(match (msg.ok, msg.error) {
            (Some(true), _) => "ok".to_owned(),
            (_, Some(error)) => format!("error: {error}"),
            other => format!("{other:?}"),
        });
    }
    words
}

fn describe(step: &Step) -> String {
    match step {
        Step::Wait(what) => format!("wait {what:?}"),
        Step::Done { acked: None } => "done".to_owned(),
        Step::Done { acked: Some(_) } => "done, timed".to_owned(),
        Step::Close { acked: None } => "close".to_owned(),
        Step::Close { acked: Some(_) } => "close, timed".to_owned(),
    }
}

/// A `RecvError`: what waiting on an engine that went away gets.
async fn gone<T>() -> RecvError {
    let (tx, rx) = oneshot::channel::<T>();
    drop(tx);
    match rx.await {
        Err(error) => error,
        Ok(_) => unreachable!("the sender was dropped"),
    }
}

/// A name, what happens with the step each gives, and the replies written.
type Scenario = (&'static str, Vec<(In, &'static str)>, Vec<&'static str>);

#[tokio::test]
async fn writer_scenarios() {
    let scenarios: Vec<Scenario> = vec![
        (
            "replies leave in request order",
            vec![
                (In::Ready, "done"),
                (In::Batch(&[1, 1]), "wait Applied(2 msgs)"),
                (In::Applied(Answer::Ok), "done, timed"),
                (In::Refused("parse error"), "done"),
                (In::Batch(&[3]), "wait Applied(1 msgs)"),
                (In::Applied(Answer::Ok), "done, timed"),
            ],
            vec!["ok", "ok", "ok", "error: parse error", "ok"],
        ),
        (
            "Msgs before a batch's first change are answered before it is durable",
            vec![
                (In::Batch(&[2, 2, 2]), "wait Applied(3 msgs)"),
                (In::Applied(Answer::ChangedAt(3)), "wait Durable(2 msgs owed)"),
                (In::Durable(Answer::Ok), "done, timed"),
            ],
            vec!["ok", "ok", "ok"],
        ),
        (
            "a refused batch gets one error per Msg and the connection goes on",
            vec![
                (In::Batch(&[1, 1]), "wait Applied(2 msgs)"),
                (In::Applied(Answer::IndexFull), "done, timed"),
                (In::Batch(&[1, 2]), "wait Applied(2 msgs)"),
                (In::Applied(Answer::ChangedAt(0)), "wait Durable(2 msgs owed)"),
                (In::Durable(Answer::StorageFailed), "done, timed"),
                (In::Ready, "done"),
            ],
            vec![
                "error: index full: it holds the limit of 2 (host, service) keys (--max-keys); events for new keys are refused",
                "error: index full: it holds the limit of 2 (host, service) keys (--max-keys); events for new keys are refused",
                "error: not stored: disk full",
                "error: not stored: disk full",
                "ok",
            ],
        ),
        (
            "an engine that stops answers once with an error and closes",
            vec![
                (In::Batch(&[1, 1, 1]), "wait Applied(3 msgs)"),
                (In::Applied(Answer::Closed), "close, timed"),
            ],
            vec!["error: server is shutting down"],
        ),
        (
            "an engine gone while a batch waits closes the connection",
            vec![
                (In::Batch(&[1]), "wait Applied(1 msgs)"),
                (In::EngineGone, "close, timed"),
            ],
            vec!["error: server is shutting down"],
        ),
        (
            "bad input is answered, then the connection closes",
            vec![(In::Ready, "done"), (In::Fatal("invalid protobuf Msg"), "close")],
            vec!["ok", "error: invalid protobuf Msg"],
        ),
        (
            "a client of another protocol gets raw bytes, then the connection closes",
            vec![(In::Foreign(b"HTTP/1.1 400 Bad Request\r\n\r\n"), "close")],
            vec!["28 raw bytes"],
        ),
    ];
    let now = Instant::now();
    for (name, events, expected) in scenarios {
        let mut state = ReplyState::new(1024);
        let mut waiting = None;
        for (i, (event, step)) in events.into_iter().enumerate() {
            let got = match event {
                In::Ready => state.begin(Reply::Ready(ok_msg())).0,
                In::Refused(text) => state.begin(Reply::Ready(error(text))).0,
                In::Fatal(text) => state.begin(Reply::Fatal(error(text))).0,
                In::Foreign(bytes) => state.begin(Reply::Foreign(bytes)).0,
                In::Batch(sizes) => {
                    let mut msgs = MsgSizes::default();
                    for &size in sizes {
                        msgs.push(size);
                    }
                    let (_, rx) = oneshot::channel();
                    state.begin(Reply::Pending(rx, msgs, now)).0
                }
                In::Applied(answer) => {
                    let Some(Wait::Applied(_, msgs, at)) = waiting.take() else {
                        panic!("{name}: no batch waits for the engine");
                    };
                    let applied = match answer {
                        Answer::ChangedAt(first_change) => Applied::Changed {
                            first_change,
                            durable: oneshot::channel().1,
                        },
                        other => Applied::Done(other.ack()),
                    };
                    state.came(Came::Applied(Ok(applied), msgs, at))
                }
                In::Durable(answer) => {
                    let Some(Wait::Durable(_, owed, at)) = waiting.take() else {
                        panic!("{name}: no change waits to be durable");
                    };
                    state.came(Came::Durable(Ok(answer.ack()), owed, at))
                }
                In::EngineGone => match waiting.take() {
                    Some(Wait::Applied(_, msgs, at)) => {
                        state.came(Came::Applied(Err(gone::<Applied>().await), msgs, at))
                    }
                    Some(Wait::Durable(_, owed, at)) => {
                        state.came(Came::Durable(Err(gone::<Ack>().await), owed, at))
                    }
                    Some(Wait::Snapshot(_, query)) => {
                        state.came(Came::Snapshot(Err(gone::<Snapshot>().await), query))
                    }
                    None => panic!("{name}: nothing waits"),
                },
            };
            assert_eq!(describe(&got), step, "{name}: event {i} ({event:?})");
            if let Step::Wait(what) = got {
                waiting = Some(what);
            }
        }
        assert_eq!(written(state.out()), expected, "{name}");
    }
}

#[tokio::test]
async fn a_query_is_answered_from_its_snapshot_or_told_it_is_too_large() {
    let mut state = ReplyState::new(64);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(1));
    let permit = Arc::clone(&semaphore).try_acquire_owned().ok();
    let query = Query::parse("true").ok();
    let (Some(permit), Some(query)) = (permit, query) else {
        panic!("a permit and a query");
    };
    let (_, rx) = oneshot::channel();
    let (step, held) = state.begin(Reply::Query(rx, query.clone(), permit));
    assert_eq!(describe(&step), "wait Snapshot");
    assert!(
        held.is_some(),
        "the writer holds the permit until the reply is written"
    );
    let empty = Snapshot {
        seq: 1,
        events: Vec::new(),
        actions: Default::default(),
    };
    let step = state.came(Came::Snapshot(Ok(empty), query.clone()));
    assert_eq!(describe(&step), "done");
    let many = Snapshot {
        seq: 2,
        events: (0..10)
            .map(|i| {
                Arc::new(crate::event::Event {
                    service: Some(format!("service {i}")),
                    ..Default::default()
                })
            })
            .collect(),
        actions: Default::default(),
    };
    let step = state.came(Came::Snapshot(Ok(many), query));
    assert_eq!(describe(&step), "done");
    let words = written(state.out());
    assert_eq!(words.len(), 2);
    assert_eq!(words[0], "ok");
    assert!(
        words[1].starts_with("error: query result of ") && words[1].contains("64-byte frame limit"),
        "{words:?}"
    );
}

#[tokio::test]
async fn at_shutdown_the_writer_answers_what_is_queued_then_closes() {
    let (client, server) = tokio::io::duplex(1 << 16);
    let (replies, queue) = mpsc::channel(8);
    let link = Link {
        peer: ([127, 0, 0, 1], 5555).into(),
        write_timeout: std::time::Duration::from_secs(30),
        counters: Arc::new(Counters::default()),
    };
    let writer = tokio::spawn(write_replies(
        server,
        queue,
        link,
        1024,
        Arc::new(Counters::default()),
    ));
    // A batch whose answer comes only after the reader has ended (shutdown), and a reply
    // behind it.
    let (applied, rx) = oneshot::channel();
    let mut msgs = MsgSizes::default();
    msgs.push(1);
    msgs.push(1);
    let queued = replies.send(Reply::Pending(rx, msgs, Instant::now())).await;
    assert!(queued.is_ok());
    assert!(replies.send(Reply::Ready(error("later"))).await.is_ok());
    drop(replies);
    assert!(applied.send(Applied::Done(Ok(()))).is_ok());
    let mut client = client;
    let mut bytes = Vec::new();
    // The writer closes its end once everything is written: the read ends.
    let read = client.read_to_end(&mut bytes).await;
    assert!(read.is_ok());
    assert!(writer.await.is_ok());
    let mut out = BytesMut::from(&bytes[..]);
    assert_eq!(written(&mut out), ["ok", "ok", "error: later"]);
}
