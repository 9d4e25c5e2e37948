//! The wire contract: every JSON frame and answer statecast sends, as one type each, and the
//! messages a client sends, as the types they decode into. Nothing else in the crate builds a
//! frame or an answer by hand (no `json!`), so what the page reads is written down here once;
//! `tests` writes one example of each to `tests/fixtures/frames/`, which the page's own model
//! tests (`tests/browser/model/fixtures.test.mjs`) read, and checks the README's frame list
//! (section "Websocket `/ws`") against them: server, page and documentation cannot drift apart
//! silently.
//!
//! What it never does: decide anything. Types borrow what the engine, store and handlers hold
//! and say how it looks on the wire; times go out as ISO-8601 (see [`crate::event`]), ids of
//! silences as strings, keys as `[host, service]`.
//!
//! Depends on [`crate::event`], [`crate::action`] and [`crate::change`] only (plain data):
//! `broadcast` and `web` serialize through it, it never reaches into them.

pub mod answers;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use serde::ser::{SerializeStruct, SerializeTuple};
use serde::{Deserialize, Serialize, Serializer};

use crate::action::{AckInfo, ActionRecord, KeyName, SilenceChange, UnackReason};
use crate::change::{Change, ChangeKind, StateChange};
use crate::event::{format_time, Event, Metric};

/// A `/ws` frame, server → client: `{"type":"…",…}`. One variant per frame type; the README
/// lists exactly these (checked by `tests`).
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame<'a> {
    /// The view a client starts from (or restarts from, `reset`), valid at `seq`.
    Snapshot(SnapshotFrame<'a>),
    /// One state transition.
    Change(ChangeFrame<'a>),
    /// An ack set or replaced.
    Ack { seq: u64, ack: Ack<'a> },
    /// An ack ended: `by` only for an operator's end (`deleted`).
    Unack {
        seq: u64,
        host: &'a Option<String>,
        service: &'a Option<String>,
        reason: UnackReason,
        #[serde(skip_serializing_if = "Option::is_none")]
        by: &'a Option<String>,
    },
    /// One silence changed (`silence` is `null` once it is gone), with the keys that changed.
    Silence {
        seq: u64,
        change: SilenceChange,
        #[serde(serialize_with = "as_string")]
        id: u64,
        silence: Option<SilenceItem<'a>>,
        silenced: &'a [KeyName],
        unsilenced: &'a [KeyName],
    },
    /// The whole silence set: what servers before silence deltas sent and stored. Never made
    /// now; history written by them replays as it was.
    Silences {
        seq: u64,
        silences: Items<'a, SilenceItem<'a>>,
        silenced: &'a [KeyName],
    },
    /// The heartbeat with the cumulative counters.
    Stats(Stats),
    /// Live values: the latest metric and description of keys that moved within their state.
    /// Written by [`MetricsFrameWriter`] (a value at a time, within a bound); this variant is
    /// the frame's definition, which the tests check the writer's bytes against.
    #[cfg_attr(not(test), allow(dead_code))]
    Metrics(MetricsFrame<'a>),
    /// A client message that could not be used (a bad query, over the budget).
    Error { error: &'a str },
}

impl Frame<'_> {
    /// The frame as JSON text. Serializing plain data into a `Vec` cannot fail, and serde_json
    /// writes UTF-8 only.
    pub fn to_text(&self) -> String {
        let mut out = Vec::with_capacity(256);
        self.write(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the frame's JSON to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let _ = serde_json::to_writer(out, self);
    }
}

/// `{"type":"batch","frames":[F, …]}`: several view frames (snapshot, changes, operator
/// actions) in one websocket message, in order, for a client that asked with `/ws?batch=true`.
/// Written by joining the frames' own text between these two pieces (each frame is serialized
/// once for every client; a batch never re-serializes it), so it has no `Frame` variant.
pub const BATCH_OPEN: &str = r#"{"type":"batch","frames":["#;
pub const BATCH_CLOSE: &str = "]}";

/// `{"type":"snapshot","seq":S,"epoch":E,"reset":R,"events":[E…],"acks":[ACK…],
/// "silences":[SILENCE…],"silenced":[[H,S]…]}`. Its arrays are written an item at a time from
/// iterators: the frame is as large as the index, and a JSON tree of it first cost several
/// times that.
#[derive(Serialize)]
pub struct SnapshotFrame<'a> {
    pub seq: u64,
    pub epoch: &'a str,
    /// The client missed changes (it resumed from too far back, or fell behind) and must
    /// replace its view.
    pub reset: bool,
    pub events: Items<'a, EventItem<'a>>,
    pub acks: Items<'a, Ack<'a>>,
    pub silences: Items<'a, SilenceItem<'a>>,
    pub silenced: Items<'a, &'a KeyName>,
}

/// `{"type":"change","seq":N,"previous_state":"ok","event":E}`: the one definition of a change
/// on the wire, shared by the websocket and `/api/history`. A key that left the index (expired
/// for longer than `--expired-keep`, or cleared: then with `"cleared_by"`) has `"removed":true`,
/// `event` its last event; a change an active silence matched has `"silenced":true`.
#[derive(Serialize)]
pub struct ChangeFrame<'a> {
    pub seq: u64,
    pub previous_state: &'a str,
    pub event: EventItem<'a>,
    #[serde(skip_serializing_if = "is_false")]
    pub removed: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub silenced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleared_by: Option<&'a str>,
}

/// `{"type":"stats","time":T,"interval_ms":I,"clients":C,"events":N,"changes":K}`: `time` (unix
/// ms) is when it was built; a page rates the cumulative counters by it, not by arrival.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub time: u64,
    pub interval_ms: u64,
    pub clients: u64,
    pub events: u64,
    pub changes: u64,
}

/// `{"type":"metrics","time":T,"hosts":[H…],"values":[[h,S,M,D,A]…]}`: the latest metric and
/// description of keys whose values moved without a change of state. Not a change: no `seq`,
/// never in history. `time` (unix ms) is when the server took the values.
///
/// Compact, because every dashboard gets one each interval (1,000 dashboards watching 10,000
/// moving keys took 127–197 MB/s of websocket output as one object per value, and ingest down
/// to 8 %): each host once in `hosts`, each value an array `[h, service, metric, description,
/// age]` — `h` indexes `hosts` (`null`: the event has no host), `metric` and `description` are
/// `null` when the event has none, and the value's time (its event's, to the millisecond) is
/// `time − age`.
pub struct MetricsFrame<'a> {
    pub time: i64,
    pub values: &'a [Arc<Event>],
}

impl Serialize for MetricsFrame<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut hosts: Vec<&str> = Vec::new();
        let hosts_of: Vec<Option<usize>> = (self.values.iter())
            .map(|event| {
                let host = event.host.as_deref()?;
                Some(*index.entry(host).or_insert_with(|| {
                    hosts.push(host);
                    hosts.len() - 1
                }))
            })
            .collect();
        let rows = self
            .values
            .iter()
            .zip(hosts_of)
            .map(|(event, host)| MetricRow {
                host,
                event,
                frame_ms: self.time,
            });
        let mut frame = serializer.serialize_struct("MetricsFrame", 3)?;
        frame.serialize_field("time", &self.time)?;
        frame.serialize_field("hosts", &hosts)?;
        frame.serialize_field("values", &Items::new(rows))?;
        frame.end()
    }
}

/// A [`MetricsFrame`] written a value at a time within a bound on its bytes: each value is
/// serialized once, straight into the frame, and one that would take the frame past `max_bytes`
/// is refused (nothing of it kept), so a frame's size is exact, not estimated. The first value
/// is always taken: one larger than the bound goes alone in its frame rather than never.
///
/// The bytes are the same as [`Frame::Metrics`] writes (checked by `tests`): the hosts table
/// comes first on the wire, so rows and hosts are written apart and joined by
/// [`MetricsFrameWriter::finish`].
pub struct MetricsFrameWriter {
    time: i64,
    max_bytes: usize,
    /// Each host's index in `hosts`.
    index: HashMap<String, usize>,
    /// The hosts' JSON strings, comma-separated.
    hosts: Vec<u8>,
    /// The rows' JSON arrays, comma-separated.
    rows: Vec<u8>,
    values: usize,
}

/// `{"type":"metrics","time":` … `,"hosts":[` … `],"values":[` … `]}` less the time: what a
/// frame costs besides its time, hosts and rows.
const METRICS_FRAME_FRAMING: usize = r#"{"type":"metrics","time":,"hosts":[],"values":[]}"#.len();

impl MetricsFrameWriter {
    pub fn new(time: i64, max_bytes: usize) -> Self {
        Self {
            time,
            max_bytes,
            index: HashMap::new(),
            hosts: Vec::new(),
            rows: Vec::with_capacity(max_bytes.min(64 * 1024)),
            values: 0,
        }
    }

    /// Values taken so far.
    pub fn values(&self) -> usize {
        self.values
    }

    /// The frame's bytes so far.
    fn len(&self) -> usize {
        METRICS_FRAME_FRAMING + decimal_len(self.time) + self.hosts.len() + self.rows.len()
    }

    /// Adds `event`'s value, unless that would take the frame past its bound (and it is not
    /// the first): false then, and the frame is as it was.
    pub fn push(&mut self, event: &Event) -> bool {
        let (hosts_len, rows_len) = (self.hosts.len(), self.rows.len());
        let (host, new_host) = match event.host.as_deref() {
            None => (None, false),
            Some(name) => match self.index.get(name) {
                Some(at) => (Some(*at), false),
                None => {
                    if !self.index.is_empty() {
                        self.hosts.push(b',');
                    }
                    let _ = serde_json::to_writer(&mut self.hosts, name);
                    (Some(self.index.len()), true)
                }
            },
        };
        if self.values > 0 {
            self.rows.push(b',');
        }
        let row = MetricRow {
            host,
            event,
            frame_ms: self.time,
        };
        let _ = serde_json::to_writer(&mut self.rows, &row);
        if self.values > 0 && self.len() > self.max_bytes {
            self.hosts.truncate(hosts_len);
            self.rows.truncate(rows_len);
            return false;
        }
        if let (true, Some(name)) = (new_host, event.host.as_ref()) {
            self.index.insert(name.clone(), self.index.len());
        }
        self.values += 1;
        true
    }

    /// The frame's JSON.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        out.extend_from_slice(br#"{"type":"metrics","time":"#);
        out.extend_from_slice(self.time.to_string().as_bytes());
        out.extend_from_slice(br#","hosts":["#);
        out.extend_from_slice(&self.hosts);
        out.extend_from_slice(br#"],"values":["#);
        out.extend_from_slice(&self.rows);
        out.extend_from_slice(b"]}");
        out
    }
}

/// How many bytes `n` takes in decimal (with its sign).
fn decimal_len(n: i64) -> usize {
    let digits = n
        .unsigned_abs()
        .checked_ilog10()
        .map_or(1, |d| d as usize + 1);
    digits + usize::from(n < 0)
}

/// One key's live value in a [`MetricsFrame`]: `[h, service, metric, description, age]`.
struct MetricRow<'a> {
    host: Option<usize>,
    event: &'a Event,
    frame_ms: i64,
}

impl Serialize for MetricRow<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let event = self.event;
        let age = (self.frame_ms).saturating_sub(event.time_micros.div_euclid(1000));
        let mut row = serializer.serialize_tuple(5)?;
        row.serialize_element(&self.host)?;
        row.serialize_element(&event.service)?;
        row.serialize_element(&event.metric.map(WireMetric))?;
        row.serialize_element(&event.description)?;
        row.serialize_element(&age)?;
        row.end()
    }
}

/// A metric as in `E`: an integer one as an integer, a float as JSON writes it (`12.0`), NaN and
/// infinities as `null` (they have no JSON form).
struct WireMetric(Metric);

impl Serialize for WireMetric {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Metric::Int(i) => serializer.serialize_i64(i),
            Metric::Float(f) if !f.is_finite() => serializer.serialize_none(),
            Metric::Float(f) => serializer.serialize_f64(f),
        }
    }
}

/// The frame of a [`Change`] of either kind.
pub fn change_frame(change: &Change) -> Frame<'_> {
    match &change.kind {
        ChangeKind::State(state) => Frame::Change(state_frame(change.seq, state)),
        ChangeKind::Action(record) => record_frame(change.seq, record),
    }
}

fn state_frame(seq: u64, change: &StateChange) -> ChangeFrame<'_> {
    ChangeFrame {
        seq,
        previous_state: &change.previous_state,
        event: EventItem(&change.event),
        removed: change.removed,
        silenced: change.silenced,
        cleared_by: change.cleared_by.as_deref(),
    }
}

/// The frame of an operator-action record at `seq`.
pub fn record_frame(seq: u64, record: &ActionRecord) -> Frame<'_> {
    match record {
        ActionRecord::Ack(ack) => Frame::Ack { seq, ack: Ack(ack) },
        ActionRecord::Unack {
            host,
            service,
            reason,
            by,
        } => Frame::Unack {
            seq,
            host,
            service,
            reason: *reason,
            by,
        },
        ActionRecord::Silence {
            id,
            change,
            silence,
            silenced,
            unsilenced,
        } => Frame::Silence {
            seq,
            change: *change,
            id: *id,
            silence: silence.as_ref().map(SilenceItem),
            silenced,
            unsilenced,
        },
        ActionRecord::Silences { silences, silenced } => Frame::Silences {
            seq,
            silences: Items::new(silences.iter().map(SilenceItem)),
            silenced,
        },
    }
}

/// Messages a dashboard sends on `/ws`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// `{"type":"subscribe","query":"state != \"ok\""}`; no query means everything. Answered
    /// with a fresh snapshot, or an `error` frame (the old subscription stays).
    Subscribe { query: Option<String> },
}

/// `E`: Riemann's JSON event form (see [`Event::to_json_value`]); alone, it is each frame of
/// `/index` (websocket and server-sent events).
#[derive(Clone, Copy)]
pub struct EventItem<'a>(pub &'a Event);

impl EventItem<'_> {
    pub fn to_text(self) -> String {
        self.0.to_json_value().to_string()
    }
}

impl Serialize for EventItem<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.to_json_value().serialize(serializer)
    }
}

/// `ACK`: `{"host","service","note","by","at":T,"expires_at":T|null}`.
#[derive(Clone, Copy)]
pub struct Ack<'a>(pub &'a AckInfo);

impl Serialize for Ack<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            host: &'a Option<String>,
            service: &'a Option<String>,
            note: &'a str,
            by: &'a str,
            at: String,
            expires_at: Option<String>,
        }
        let ack = self.0;
        Wire {
            host: &ack.host,
            service: &ack.service,
            note: &ack.note,
            by: &ack.by,
            at: format_time(ack.at),
            expires_at: ack.expires_at.map(format_time),
        }
        .serialize(serializer)
    }
}

/// `SILENCE`: `{"id":"42","query","comment","by","created_at":T,"starts_at":T,"ends_at":T,
/// "active"}` (the id as a string: it is a `seq`, and the page keeps it as a key).
#[derive(Clone, Copy)]
pub struct SilenceItem<'a>(pub &'a crate::action::Silence);

impl Serialize for SilenceItem<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            id: String,
            query: &'a str,
            comment: &'a str,
            by: &'a str,
            created_at: String,
            starts_at: String,
            ends_at: String,
            active: bool,
        }
        let silence = self.0;
        Wire {
            id: silence.id.to_string(),
            query: &silence.query,
            comment: &silence.comment,
            by: &silence.by,
            created_at: format_time(silence.created_at),
            starts_at: format_time(silence.starts_at),
            ends_at: format_time(silence.ends_at),
            active: silence.active,
        }
        .serialize(serializer)
    }
}

/// A JSON array written from an iterator as it is serialized (once: a second serialization
/// writes `[]`), so that a large frame needs no collection of its items first.
pub struct Items<'a, T>(RefCell<Option<Box<dyn Iterator<Item = T> + 'a>>>);

impl<'a, T> Items<'a, T> {
    pub fn new(items: impl Iterator<Item = T> + 'a) -> Self {
        Items(RefCell::new(Some(Box::new(items))))
    }
}

impl<T: Serialize> Serialize for Items<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let items = self.0.borrow_mut().take();
        serializer.collect_seq(items.into_iter().flatten())
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn as_string<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}
