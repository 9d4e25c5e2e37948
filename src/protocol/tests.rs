//! One example of every frame and answer, written to `tests/fixtures/frames/` (the page's model
//! tests read them: `tests/browser/model/fixtures.test.mjs`), and the README's frame list
//! checked against them.
//!
//! The checked-in fixtures must equal what the code writes now: a change to the wire format
//! fails here until the fixtures are written again with `UPDATE_FIXTURES=1 cargo test --lib
//! protocol::` — and then the page's tests run against the new examples.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::answers::{
    Accepted, ActionDone, Alive, BatchAnswer, Failed, Gap, HistoryPage, Rates, Readiness,
    SeriesAnswer, SeriesItem, SeriesPoint, SilenceDone, SilenceList,
};
use super::*;
use crate::action::{Actions, Silence};
use crate::change::Snapshot;
use crate::event::Metric;

/// 2026-12-01T12:00:00Z, in µs.
const T: i64 = 1_796_126_400_000_000;
const MINUTE: i64 = 60_000_000;

fn event(host: &str, service: &str, state: &str) -> Event {
    Event {
        host: Some(host.into()),
        service: Some(service.into()),
        state: Some(state.into()),
        description: Some("load 12".into()),
        metric: Some(Metric::Float(0.97)),
        tags: vec!["prod".into()],
        time_micros: T,
        ttl: Some(60.0),
        attributes: vec![("team".into(), "db".into())],
    }
}

fn key(host: &str, service: &str) -> KeyName {
    (Some(host.into()), Some(service.into()))
}

fn ack() -> AckInfo {
    AckInfo {
        host: Some("web1".into()),
        service: Some("cpu".into()),
        note: "on it".into(),
        by: "ann".into(),
        at: T,
        expires_at: Some(T + 60 * MINUTE),
    }
}

fn silence(id: u64, active: bool) -> Silence {
    Silence {
        id,
        query: "host =~ \"db%\"".into(),
        comment: "maintenance".into(),
        by: "bob".into(),
        created_at: T,
        starts_at: T,
        ends_at: T + 120 * MINUTE,
        active,
    }
}

fn state_change(seq: u64, change: StateChange) -> Change {
    Change::state(seq, change)
}

/// Every `/ws` frame the server sends, by fixture name: each variant of [`Frame`] at least
/// once, and each optional part of a change.
fn ws_examples() -> Vec<(&'static str, String)> {
    let web1 = Arc::new(event("web1", "cpu", "critical"));
    let was_ok = Arc::new(Event {
        state: Some("ok".into()),
        ..event("web1", "cpu", "ok")
    });
    let db1 = Arc::new(event("db1", "disk", "warning"));
    let snapshot = Snapshot {
        seq: 41,
        events: vec![Arc::clone(&web1), Arc::clone(&db1)],
        actions: Actions {
            acks: vec![ack()],
            silences: vec![silence(40, true)],
            silenced: vec![key("db1", "disk")],
            clock: T,
        },
    };
    let no_filter: Option<fn(&Event) -> bool> = None;
    let snapshot_text = |reset| {
        String::from_utf8(
            crate::broadcast::snapshot_frame(&snapshot, "6b04e1f2", reset, no_filter).to_vec(),
        )
        .unwrap()
    };
    let change = state_change(
        42,
        StateChange {
            previous_state: "ok".into(),
            event: Arc::clone(&web1),
            previous: Some(Arc::clone(&was_ok)),
            ..StateChange::default()
        },
    );
    let silenced = state_change(
        43,
        StateChange {
            previous_state: "ok".into(),
            event: Arc::clone(&db1),
            previous: None,
            silenced: true,
            ..StateChange::default()
        },
    );
    let expired = Arc::new(Event {
        state: Some("expired".into()),
        ..event("web2", "cpu", "expired")
    });
    let removed = state_change(
        44,
        StateChange {
            previous_state: "expired".into(),
            event: Arc::clone(&expired),
            previous: Some(Arc::clone(&expired)),
            removed: true,
            ..StateChange::default()
        },
    );
    let cleared = state_change(
        45,
        StateChange {
            previous_state: "critical".into(),
            event: Arc::clone(&web1),
            previous: Some(Arc::clone(&web1)),
            removed: true,
            cleared_by: Some("ann".into()),
            ..StateChange::default()
        },
    );
    let records = [
        ("ws-ack", Change::action(46, ActionRecord::Ack(ack()))),
        (
            "ws-unack",
            Change::action(
                47,
                ActionRecord::Unack {
                    host: Some("web1".into()),
                    service: Some("cpu".into()),
                    reason: UnackReason::Deleted,
                    by: Some("ann".into()),
                },
            ),
        ),
        (
            "ws-unack-resolved",
            Change::action(
                48,
                ActionRecord::Unack {
                    host: Some("web1".into()),
                    service: Some("cpu".into()),
                    reason: UnackReason::Resolved,
                    by: None,
                },
            ),
        ),
        (
            "ws-silence",
            Change::action(
                49,
                ActionRecord::Silence {
                    id: 49,
                    change: SilenceChange::Created,
                    silence: Some(silence(49, true)),
                    silenced: vec![key("db1", "disk")],
                    unsilenced: Vec::new(),
                },
            ),
        ),
        (
            "ws-silence-ended",
            Change::action(
                50,
                ActionRecord::Silence {
                    id: 40,
                    change: SilenceChange::Ended,
                    silence: None,
                    silenced: Vec::new(),
                    unsilenced: vec![key("db1", "disk")],
                },
            ),
        ),
        (
            "ws-silences",
            Change::action(
                51,
                ActionRecord::Silences {
                    silences: vec![silence(49, true)],
                    silenced: vec![key("db1", "disk")],
                },
            ),
        ),
    ];
    let text = |change: &Change| change_frame(change).to_text();
    let mut out = vec![
        ("ws-snapshot", snapshot_text(false)),
        ("ws-snapshot-reset", snapshot_text(true)),
        ("ws-change", text(&change)),
        ("ws-change-silenced", text(&silenced)),
        ("ws-change-removed", text(&removed)),
        ("ws-change-cleared", text(&cleared)),
    ];
    out.extend(records.iter().map(|(name, c)| (*name, text(c))));
    out.push((
        "ws-stats",
        Frame::Stats(Stats {
            time: 1_796_126_400_000,
            interval_ms: 2000,
            clients: 3,
            events: 182_734,
            changes: 42,
        })
        .to_text(),
    ));
    let batch = |frames: &[&str]| {
        format!(
            "{}{}{}",
            super::BATCH_OPEN,
            frames.join(","),
            super::BATCH_CLOSE
        )
    };
    let batched: Vec<String> = out
        .iter()
        .filter(|(name, _)| *name == "ws-change" || *name == "ws-ack")
        .map(|(_, text)| text.clone())
        .collect();
    out.push((
        "ws-batch",
        batch(&batched.iter().map(String::as_str).collect::<Vec<_>>()),
    ));
    // Two keys of the snapshot example (one without metric and description) and one it lacks.
    let value =
        |host: &str, service: &str, metric: Option<f64>, description: Option<&str>, ms: i64| {
            Event {
                host: Some(host.into()),
                service: Some(service.into()),
                state: Some("critical".into()),
                metric: metric.map(Metric::Float),
                description: description.map(Into::into),
                time_micros: 1_796_126_400_000_000 + ms * 1000,
                ..Event::default()
            }
        };
    let live = [
        value("web1", "cpu", Some(0.99), Some("load 14"), 1000),
        value("db1", "disk", None, None, 2000),
        value("web2", "ping", Some(12.5), Some("12.5 ms"), 2000),
    ]
    .map(Arc::new);
    out.push((
        "ws-metrics",
        Frame::Metrics(MetricsFrame {
            time: 1_796_126_402_250,
            values: &live,
        })
        .to_text(),
    ));
    out.push((
        "ws-error",
        Frame::Error {
            error: "parse error: expected a value after '=' at column 9",
        }
        .to_text(),
    ));
    out
}

/// What a client sends, and every other answer: `/ws` client messages, the `/events` acks,
/// `/index` frames and the HTTP JSON answers.
fn other_examples() -> Vec<(&'static str, String)> {
    let json = |value: &dyn erased::Serialize| value.text();
    let web1 = event("web1", "cpu", "critical");
    let id = RawValue::from_string("\"b1\"".into()).unwrap();
    let change = state_change(
        42,
        StateChange {
            previous_state: "ok".into(),
            event: Arc::new(web1.clone()),
            ..StateChange::default()
        },
    );
    let silences = [silence(49, true)];
    let silenced = [key("db1", "disk")];
    // Bound before it is returned: the examples' temporaries borrow the locals above.
    let examples = vec![
        (
            "ws-client-subscribe",
            json(&ClientMessage::Subscribe {
                query: Some("state != \"ok\"".into()),
            }),
        ),
        (
            "events-accepted",
            BatchAnswer::new(Some(&id), Ok(1)).to_text(),
        ),
        (
            "events-refused",
            BatchAnswer::new(
                None,
                Err("event at index 0: \"metric\" must be a number, got a string"),
            )
            .to_text(),
        ),
        ("index-event", EventItem(&web1).to_text()),
        ("http-accepted", json(&Accepted::new(1))),
        (
            "http-failed",
            json(&Failed::new("there is no silence \"x\"")),
        ),
        ("http-action-done", json(&ActionDone::new(46))),
        ("http-silence-done", json(&SilenceDone::new(49, 49))),
        (
            "http-silences",
            json(&SilenceList {
                silences: Items::new(silences.iter().map(SilenceItem)),
                silenced: &silenced,
            }),
        ),
        (
            "http-history",
            json(&HistoryPage {
                epoch: "6b04e1f2",
                oldest_seq: Some(1),
                changes: vec![answers::raw_frame(&change_frame(&change)).unwrap()],
                more: true,
                gap: Some(Gap { from: 43, to: 45 }),
            }),
        ),
        (
            "http-rates",
            json(&Rates {
                interval_ms: 2000,
                stride: 1,
                samples: vec![(1_796_126_400_000, 100, 1), (1_796_126_402_000, 300, 3)],
            }),
        ),
        (
            "http-series",
            json(&SeriesAnswer {
                from: 1_796_126_400_000,
                to: 1_796_130_000_000,
                step: 10_000,
                series: &[SeriesItem {
                    host: Some("web1"),
                    service: Some("disk"),
                    points: vec![
                        SeriesPoint(1_796_126_400_000, 0.5, 0.9, 0.7, 0.6, 12),
                        SeriesPoint(1_796_126_410_000, 0.25, 0.25, 0.25, 0.25, 1),
                    ],
                }],
            }),
        ),
        ("http-healthz", json(&Alive { ok: true })),
        (
            "http-readyz",
            json(&Readiness {
                ready: true,
                reasons: Vec::new(),
            }),
        ),
        (
            "http-readyz-not",
            json(&Readiness {
                ready: false,
                reasons: vec!["shutting down".into()],
            }),
        ),
    ];
    examples
}

/// Serializing through a `&dyn`, so the examples can be listed in one table.
mod erased {
    pub trait Serialize {
        fn text(&self) -> String;
    }
    impl<T: serde::Serialize> Serialize for T {
        fn text(&self) -> String {
            serde_json::to_string(self).unwrap()
        }
    }
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/frames")
}

/// The fixtures are what the code writes; `UPDATE_FIXTURES=1` writes them again.
#[test]
fn the_fixtures_are_what_the_code_writes() {
    let dir = fixtures_dir();
    let update = std::env::var_os("UPDATE_FIXTURES").is_some_and(|v| v == "1");
    let examples: Vec<_> = ws_examples().into_iter().chain(other_examples()).collect();
    let mut names = BTreeSet::new();
    let mut stale = Vec::new();
    for (name, text) in &examples {
        assert!(names.insert(format!("{name}.json")), "{name} twice");
        // Every example is JSON (an object, but for /index's events an object too).
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert!(value.is_object(), "{name}: {text}");
        let path = dir.join(format!("{name}.json"));
        let wanted = format!("{text}\n");
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &wanted).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(wanted.as_str()) {
            stale.push(name.to_string());
        }
    }
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    if update {
        for extra in on_disk.difference(&names) {
            std::fs::remove_file(dir.join(extra)).unwrap();
        }
        return;
    }
    assert!(
        stale.is_empty(),
        "fixtures differ from what the code writes: {stale:?}; if the change is meant, run \
         UPDATE_FIXTURES=1 cargo test --lib protocol:: and let the page's tests check them"
    );
    assert_eq!(on_disk, names, "fixtures nobody writes any more");
}

/// Every frame type the server sends has an example, and the README's `/ws` frame list names
/// exactly those types.
#[test]
fn the_readme_lists_exactly_the_frame_types() {
    let sent: BTreeSet<String> = ws_examples()
        .iter()
        .map(|(_, text)| frame_type(text))
        .collect();
    let all = [
        "snapshot", "change", "ack", "unack", "silence", "silences", "stats", "metrics", "error",
        "batch",
    ];
    // A new variant of `Frame` must get a name here, an example above and a README line.
    let named = |frame: &Frame<'_>| match frame {
        Frame::Snapshot(_) => "snapshot",
        Frame::Change(_) => "change",
        Frame::Ack { .. } => "ack",
        Frame::Unack { .. } => "unack",
        Frame::Silence { .. } => "silence",
        Frame::Silences { .. } => "silences",
        Frame::Stats(_) => "stats",
        Frame::Metrics(_) => "metrics",
        Frame::Error { .. } => "error",
    };
    assert_eq!(named(&Frame::Error { error: "" }), "error");
    let all: BTreeSet<String> = all.iter().map(|s| s.to_string()).collect();
    assert_eq!(sent, all, "every frame type has an example");

    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let section = readme
        .split("\n## Websocket `/ws`\n")
        .nth(1)
        .expect("README has a section \"Websocket `/ws`\"");
    let block = section
        .split("```json\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the section starts with a ```json frame list");
    let listed: BTreeSet<String> = block
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let at = line.find("\"type\":\"").expect("each line is a frame") + 8;
            line[at..].split('"').next().unwrap().to_owned()
        })
        .collect();
    assert_eq!(listed, all, "README's frame list");
}

fn frame_type(text: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(text).unwrap();
    value["type"].as_str().unwrap().to_owned()
}

/// A subscribe decodes as the page sends it, with or without a query.
#[test]
fn client_messages_decode() {
    let with: ClientMessage =
        serde_json::from_str(r#"{"type":"subscribe","query":"state = \"ok\""}"#).unwrap();
    assert_eq!(
        with,
        ClientMessage::Subscribe {
            query: Some("state = \"ok\"".into())
        }
    );
    let without: ClientMessage = serde_json::from_str(r#"{"type":"subscribe"}"#).unwrap();
    assert_eq!(without, ClientMessage::Subscribe { query: None });
    assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"nope"}"#).is_err());
}

/// `GET /api/series` is streamed: its opening, the series joined by commas and its closing must
/// be the answer serialized whole.
#[test]
fn the_streamed_series_answer_is_the_answer_serialized_whole() {
    let item = |host| SeriesItem {
        host: Some(host),
        service: None,
        points: vec![SeriesPoint(10_000, 1.0, 2.0, 1.5, 2.0, 2)],
    };
    let items = [item("a"), item("b")];
    let whole = serde_json::to_string(&SeriesAnswer {
        from: 1,
        to: 2,
        step: 10_000,
        series: &items,
    })
    .unwrap();
    let mut streamed = SeriesAnswer::opening(1, 2, 10_000);
    streamed.extend(serde_json::to_vec(&items[0]).unwrap());
    streamed.push(b',');
    streamed.extend(serde_json::to_vec(&items[1]).unwrap());
    streamed.extend_from_slice(SeriesAnswer::CLOSING);
    assert_eq!(String::from_utf8(streamed).unwrap(), whole);
    let empty = [
        SeriesAnswer::opening(1, 2, 3),
        SeriesAnswer::CLOSING.to_vec(),
    ]
    .concat();
    assert_eq!(
        String::from_utf8(empty).unwrap(),
        r#"{"from":1,"to":2,"step":3,"series":[]}"#
    );
}

/// Issue 23: a `metrics` frame written a value at a time is the frame serialized whole, byte
/// for byte, and never passes its bound (but for a first value larger than it, alone).
#[test]
fn a_metrics_frame_written_a_value_at_a_time_is_the_whole_frame_within_its_bound() {
    let value = |host: Option<&str>, service: &str, description: &str| {
        Arc::new(Event {
            host: host.map(Into::into),
            service: Some(service.into()),
            metric: Some(Metric::Float(1.5)),
            description: Some(description.into()),
            time_micros: 1_796_126_400_000_000,
            ..Event::default()
        })
    };
    let values: Vec<_> = (0..200)
        .map(|i| {
            let host = format!("h\"{}", i % 7);
            let host = (i % 11 != 0).then_some(host.as_str()).map(str::to_owned);
            value(host.as_deref(), &format!("s{i}\n"), &"d".repeat(i))
        })
        .collect();
    for max in [0, 100, 1000, 4096, 1 << 20] {
        let mut writer = MetricsFrameWriter::new(-1_796_126_400_250, max);
        let taken = values.iter().take_while(|v| writer.push(v)).count();
        assert_eq!(writer.values(), taken);
        let len = writer.len();
        let written = writer.finish();
        assert_eq!(written.len(), len);
        let whole = Frame::Metrics(MetricsFrame {
            time: -1_796_126_400_250,
            values: &values[..taken],
        })
        .to_text();
        assert_eq!(String::from_utf8(written).unwrap(), whole, "max {max}");
        assert!(
            taken == 1 || whole.len() <= max,
            "max {max}: {}",
            whole.len()
        );
        if taken < values.len() {
            let one_more = Frame::Metrics(MetricsFrame {
                time: -1_796_126_400_250,
                values: &values[..=taken],
            });
            assert!(
                one_more.to_text().len() > max,
                "max {max}: room for one more"
            );
        }
    }
}
