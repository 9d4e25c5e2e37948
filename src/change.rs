//! What the engine tells the rest of the server: state transitions and snapshots of the index.
//!
//! A leaf: it depends on [`crate::event`] and [`crate::action`] (plain data) only, so the engine (which makes these), the broadcaster
//! (which frames and fans them out) and the store (which keeps them as history) can all name them
//! without depending on each other.

use std::sync::Arc;

use crate::action::{ActionRecord, Actions};
use crate::event::Event;

/// One numbered output of the engine: a state transition or an operator-action record. Both
/// take their `seq` from the same counter and travel the same way (published, logged, kept in
/// history), so that their order is the engine's order everywhere.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Strictly increasing, never reused while the process runs.
    pub seq: u64,
    pub kind: ChangeKind,
}

/// What a [`Change`] is. An enum rather than a struct with an optional record, so that every
/// consumer (framing, storing, filtering, counting) says by a `match` what it does with each
/// kind; a record has no key, no event and no previous state to misread.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeKind {
    /// A (host, service) changed state or left the index: what dashboards watch.
    State(StateChange),
    /// An operator-action record (an ack, an unack, a silence change).
    Action(Arc<ActionRecord>),
}

/// A state transition of one key.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StateChange {
    pub previous_state: String,
    /// The event that caused the change, as now indexed.
    pub event: Arc<Event>,
    /// The event it replaced, if the key was indexed: a filtered watcher needs it to see a
    /// service leave its filter.
    pub previous: Option<Arc<Event>>,
    /// The key left the index (it stayed expired past the keep time): `event` is its last
    /// (expired) event, and there is no current one.
    pub removed: bool,
    /// An active silence matched the key's event when the change was made.
    pub silenced: bool,
    /// The removal was an operator's clear, by this name.
    pub cleared_by: Option<String>,
}

impl Change {
    /// A state transition at `seq`.
    pub fn state(seq: u64, change: StateChange) -> Self {
        Change {
            seq,
            kind: ChangeKind::State(change),
        }
    }

    /// An operator-action record at `seq`.
    pub fn action(seq: u64, record: ActionRecord) -> Self {
        Change {
            seq,
            kind: ChangeKind::Action(Arc::new(record)),
        }
    }

    /// The state transition, if this is one (for tests and one-kind readers).
    pub fn as_state(&self) -> Option<&StateChange> {
        match &self.kind {
            ChangeKind::State(change) => Some(change),
            ChangeKind::Action(_) => None,
        }
    }

    /// The operator-action record, if this is one.
    pub fn as_action(&self) -> Option<&ActionRecord> {
        match &self.kind {
            ChangeKind::State(_) => None,
            ChangeKind::Action(record) => Some(record),
        }
    }
}

#[cfg(test)]
impl Change {
    /// The state transition this must be (tests only: panics on a record).
    pub fn st(&self) -> &StateChange {
        self.as_state()
            .expect("a state change, not an action record")
    }
}

/// Every indexed event (with or without a state), valid exactly at `seq`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub seq: u64,
    pub events: Vec<Arc<Event>>,
    /// Acks and silences, valid at the same `seq`.
    pub actions: Actions,
}

/// The latest event of every key whose metric or description moved within one
/// `--metrics-interval` without a change of state: what dashboards show live between changes.
///
/// Not a change: no `seq`, not in history. One batch per interval, shared by every dashboard
/// (each filters it by its own query), so its cost is the keys that moved, not the events that
/// moved them nor the dashboards that watch.
///
/// A dashboard gets at most one frame of at most `max_bytes` per interval. Dashboards without a
/// query share one frame per batch, serialized once: the first values of `queue` that fit (see
/// `broadcast::shared_metrics_frame`). The rest of `queue` is carried into the next batch's
/// `queue`, ahead of the keys that moved since, each at its latest value: the keys that waited
/// longest go first, so every moving key comes within ceil(moving keys ÷ values per frame)
/// intervals, whatever the event rate.
#[derive(Debug, Default)]
pub struct MetricBatch {
    /// The batch's number: one more than the batch before it (the engine's count).
    pub seq: u64,
    /// When the engine took the batch (unix ms).
    pub time_ms: i64,
    /// Each key that moved since the last batch once, with a state (the keys a dashboard
    /// shows), as now indexed, in key order: what a dashboard with a query merges.
    pub events: Vec<Arc<Event>>,
    /// The shared order: the keys the last batch's shared frame could not carry (oldest
    /// first), then the other keys of `events`, each at its latest value.
    pub queue: Vec<Arc<Event>>,
    /// The bound on a `metrics` frame's bytes (`--metrics-max-bytes`).
    pub max_bytes: usize,
    /// The shared frame (of `queue`'s first values): made by the first dashboard that needs it
    /// (or by the engine, for the next batch's carry) and shared by all that take the batch
    /// whole. Serializing once instead of per dashboard: at 1,000 dashboards and 10,000 moving
    /// keys, per-dashboard frames took ingest down to 1 %.
    pub shared_frame: std::sync::OnceLock<SharedFrame>,
}

/// A batch's shared `metrics` frame: the frame of `queue[..values]`, and the frame in the form a
/// transport sends it, made once (see [`SharedFrame::frame_as`]).
#[derive(Debug)]
pub struct SharedFrame {
    pub frame: bytes::Bytes,
    pub values: usize,
    sent_as: std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>,
    /// The frame's keys, for [`SharedFrame::holds_key`]: built by the first dashboard that asks.
    keys: std::sync::OnceLock<hashbrown::HashSet<ByKey>>,
}

impl SharedFrame {
    pub fn new(frame: bytes::Bytes, values: usize) -> Self {
        Self {
            frame,
            values,
            sent_as: std::sync::OnceLock::new(),
            keys: std::sync::OnceLock::new(),
        }
    }

    /// Whether the frame holds a value of `key`'s key; `queue` is its batch's.
    pub fn holds_key(&self, queue: &[Arc<Event>], key: &ByKey) -> bool {
        self.keys
            .get_or_init(|| queue.iter().take(self.values).cloned().map(ByKey).collect())
            .contains(key)
    }

    /// The frame as `make` turns it into what a transport sends, made once for every client:
    /// the websocket library's text type checks the bytes are UTF-8, ~3 % of the server's time
    /// at 1,000 dashboards when done per client. Type-erased, like `broadcast::Payload::frame_as`.
    pub fn frame_as<T: Clone + Send + Sync + 'static>(
        &self,
        make: impl Fn(bytes::Bytes) -> T,
    ) -> T {
        let made = self
            .sent_as
            .get_or_init(|| Box::new(make(self.frame.clone())))
            .downcast_ref::<T>()
            .cloned();
        made.unwrap_or_else(|| make(self.frame.clone()))
    }
}

/// An event that hashes and compares by its key (host, service): a set of these holds one value
/// per key, and inserting replaces.
#[derive(Debug, Clone)]
pub struct ByKey(pub Arc<Event>);

impl ByKey {
    fn key(&self) -> (Option<&str>, Option<&str>) {
        (self.0.host.as_deref(), self.0.service.as_deref())
    }
}

impl std::hash::Hash for ByKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialEq for ByKey {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for ByKey {}

impl MetricBatch {
    /// A batch with nothing carried: its `queue` is its `events`.
    pub fn new(seq: u64, time_ms: i64, events: Vec<Arc<Event>>, max_bytes: usize) -> MetricBatch {
        let queue = events.clone();
        MetricBatch::with_queue(seq, time_ms, events, queue, max_bytes)
    }

    pub fn with_queue(
        seq: u64,
        time_ms: i64,
        events: Vec<Arc<Event>>,
        queue: Vec<Arc<Event>>,
        max_bytes: usize,
    ) -> MetricBatch {
        MetricBatch {
            seq,
            time_ms,
            events,
            queue,
            max_bytes,
            shared_frame: std::sync::OnceLock::new(),
        }
    }
}
