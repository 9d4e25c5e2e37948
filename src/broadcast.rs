//! Fan-out of changes to every dashboard, serialized once.
//!
//! The engine publishes each [`Change`] into a `tokio::sync::broadcast` ring; the broadcaster never
//! waits on a receiver. Each change carries its websocket frame, built lazily by whichever client
//! needs it first and then shared by reference count: 1,000 clients cost one `serde_json` call.
//! A receiver that falls behind the ring gets `Lagged` and is resynchronised by its client task —
//! handled on purpose, never a silent gap. The ring is bounded in bytes as well as in count
//! ([`RING_MAX_BYTES`]): past it the oldest changes' payloads are evicted, and a receiver that
//! reaches one resynchronises as if it had lagged.
//!
//! Frames are `Bytes` (UTF-8 JSON, written by [`crate::protocol`]): what a websocket library
//! wants of them is `web`'s business. Depends on [`crate::change`], [`crate::event`] and
//! [`crate::protocol`] only: the engine publishes into it, it never reaches back into the engine.

use std::any::Any;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, Weak};

use bytes::Bytes;

use crate::change::{ByKey, Change, ChangeKind, MetricBatch, SharedFrame, Snapshot};
use crate::event::Event;
use crate::protocol::{self, Ack, EventItem, Frame, Items, SilenceItem, SnapshotFrame};

/// Bytes the ring may hold, besides its count (`--broadcast-capacity`): past it the oldest
/// changes are evicted (their payload dropped; a receiver that reaches one resynchronises, as
/// when it lags by count). Without it 16k large frames — a silence set of 5 MB, events of
/// 1 MiB — pinned gigabytes for one slow dashboard.
pub const RING_MAX_BYTES: usize = 64 * 1024 * 1024;

/// What the ring holds of one change: the change and its frame, until evicted.
#[derive(Debug)]
pub struct Payload {
    pub change: Change,
    frame: OnceLock<Bytes>,
    /// The frame in the form a transport sends it, made from `frame` once by the first client
    /// that needs it (see [`Payload::frame_as`]).
    sent_as: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl Payload {
    /// The change's frame (see [`protocol::change_frame`]), serialized once and shared.
    pub fn frame(&self) -> Bytes {
        self.frame
            .get_or_init(|| change_frame(&self.change))
            .clone()
    }

    /// The frame as `make` turns it into what a transport sends, made once and shared like the
    /// frame. Why: the websocket library wants its own text type, whose constructor checks the
    /// bytes are UTF-8 — once per change here rather than once per client and change (as much
    /// as copying the frame into each client's buffer again: ~100 ns for a 400-byte change).
    /// Type-erased so that this module names no transport's type; a second, different `T`
    /// (none today) is made afresh each time.
    pub fn frame_as<T: Clone + Send + Sync + 'static>(&self, make: impl Fn(Bytes) -> T) -> T {
        let made = self
            .sent_as
            .get_or_init(|| Box::new(make(self.frame())))
            .downcast_ref::<T>()
            .cloned();
        made.unwrap_or_else(|| make(self.frame()))
    }
}

/// A change as published to clients: its `seq`, and its payload unless the ring evicted it.
#[derive(Debug)]
pub struct Published {
    seq: u64,
    /// What the payload is counted as against [`RING_MAX_BYTES`].
    bytes: usize,
    payload: RwLock<Option<Arc<Payload>>>,
}

impl Published {
    fn new(change: Change) -> Arc<Self> {
        let payload = Payload {
            frame: OnceLock::new(),
            sent_as: OnceLock::new(),
            change,
        };
        let bytes = approx_bytes(&payload);
        Arc::new(Self {
            seq: payload.change.seq,
            bytes,
            payload: RwLock::new(Some(Arc::new(payload))),
        })
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The change and its frame; `None` once evicted for bytes: the receiver missed it.
    pub fn payload(&self) -> Option<Arc<Payload>> {
        self.payload
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn evict(&self) {
        *self.payload.write().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// What a change costs the ring, estimated without serializing it: its event and the event it
/// replaced (the ring may be all that keeps them), and the frame built from them. An
/// operator-action record is serialized now (its frame is needed anyway, and records are rare).
fn approx_bytes(payload: &Payload) -> usize {
    match &payload.change.kind {
        ChangeKind::State(change) => {
            2 * event_bytes(&change.event) + change.previous.as_deref().map_or(0, event_bytes)
        }
        ChangeKind::Action(_) => 2 * payload.frame().len(),
    }
}

fn event_bytes(event: &Event) -> usize {
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let tags: usize = event.tags.iter().map(|t| t.len() + 4).sum();
    let attributes: usize = event
        .attributes
        .iter()
        .map(|(k, v)| k.len() + v.len() + 8)
        .sum();
    128 + text(&event.host)
        + text(&event.service)
        + text(&event.state)
        + text(&event.description)
        + tags
        + attributes
}

/// The changes the ring may hold, in order, with their bytes. Weak: a change every receiver has
/// read is dropped by tokio's ring, and then pins nothing (it leaves this list as it ages).
#[derive(Debug)]
struct Ring {
    entries: VecDeque<(Weak<Published>, usize)>,
    bytes: usize,
    capacity: usize,
    max_bytes: usize,
}

impl Ring {
    /// Adds `published`; evicts what falls out by count (tokio's ring drops it) or by bytes
    /// (the oldest, never the newest).
    fn push(&mut self, published: &Arc<Published>) {
        self.bytes += published.bytes;
        self.entries
            .push_back((Arc::downgrade(published), published.bytes));
        while self.entries.len() > self.capacity {
            if let Some((_, bytes)) = self.entries.pop_front() {
                self.bytes -= bytes;
            }
        }
        while self.bytes > self.max_bytes && self.entries.len() > 1 {
            if let Some((old, bytes)) = self.entries.pop_front() {
                self.bytes -= bytes;
                if let Some(old) = old.upgrade() {
                    old.evict();
                }
            }
        }
    }
}

/// The publishing end: a `tokio::sync::broadcast` ring of `capacity` changes, bounded in bytes
/// too ([`RING_MAX_BYTES`]).
#[derive(Debug, Clone)]
pub struct Sender {
    tx: tokio::sync::broadcast::Sender<Arc<Published>>,
    ring: Arc<Mutex<Ring>>,
}

impl Sender {
    pub fn new(capacity: usize) -> Self {
        Self::with_max_bytes(capacity, RING_MAX_BYTES)
    }

    pub fn with_max_bytes(capacity: usize, max_bytes: usize) -> Self {
        let capacity = capacity.max(1);
        let (tx, _) = tokio::sync::broadcast::channel(capacity);
        Self {
            tx,
            ring: Arc::new(Mutex::new(Ring {
                entries: VecDeque::new(),
                bytes: 0,
                capacity,
                max_bytes,
            })),
        }
    }

    /// Publishes a change; nobody listening is fine. Never waits on a receiver.
    pub fn send(&self, change: Change) {
        let published = Published::new(change);
        // Under the lock, so the ring and tokio's ring see changes in the same order.
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.push(&published);
        let _ = self.tx.send(published);
    }

    pub fn subscribe(&self) -> Receiver {
        self.tx.subscribe()
    }
}

/// Metric batches ([`MetricBatch`], one per `--metrics-interval`) kept for a dashboard that has
/// yet to read them. A session takes each as it comes, whether or not its client reads (it merges
/// them into the one frame it holds), so only a session that falls behind for this many
/// intervals misses one; it is then resynchronised like one that missed changes.
pub const METRIC_BATCHES_KEPT: usize = 8;

/// The publishing end of the metric batches: shared (`Arc`), never waits on a receiver.
pub type MetricsSender = tokio::sync::broadcast::Sender<Arc<MetricBatch>>;
pub type MetricsReceiver = tokio::sync::broadcast::Receiver<Arc<MetricBatch>>;

/// A new metrics channel keeping [`METRIC_BATCHES_KEPT`] batches.
pub fn metrics_channel() -> MetricsSender {
    tokio::sync::broadcast::channel(METRIC_BATCHES_KEPT).0
}

/// `--metrics-max-bytes` unless set: 64 KiB, about 1,600 typical values a frame, so 1,000
/// dashboards take at most 64 MB/s at the default 1 s interval however many keys move.
pub const DEFAULT_METRICS_MAX_BYTES: usize = 64 * 1024;

/// The `metrics` frame of as many of `values` as fit in `max_bytes`, in order (see
/// [`protocol::MetricsFrameWriter`]: a first value larger than that goes alone), built at
/// `time_ms`; and how many it took.
pub fn metrics_frame<'a>(
    time_ms: i64,
    max_bytes: usize,
    values: impl IntoIterator<Item = &'a Arc<Event>>,
) -> (Bytes, usize) {
    let mut writer = protocol::MetricsFrameWriter::new(time_ms, max_bytes);
    for value in values {
        if !writer.push(value) {
            break;
        }
    }
    let values = writer.values();
    (Bytes::from(writer.finish()), values)
}

/// The frame every dashboard without a query takes of `batch`: the first values of its
/// `queue` that fit in its `max_bytes`, serialized by the first caller and shared after (the
/// engine asks too, to carry the rest into the next batch).
pub fn shared_metrics_frame(batch: &MetricBatch) -> &SharedFrame {
    batch.shared_frame.get_or_init(|| {
        let (frame, values) = metrics_frame(batch.time_ms, batch.max_bytes, &batch.queue);
        SharedFrame::new(frame, values)
    })
}

/// What `last`'s shared frame could not carry, in the order it waited, each at the value
/// `current` gives its key now (the engine's index: a key that left it, or lost its state, is
/// dropped): the head of the next batch's queue.
pub fn carried(
    last: &MetricBatch,
    current: impl Fn(&Event) -> Option<Arc<Event>>,
) -> Vec<Arc<Event>> {
    let sent = shared_metrics_frame(last).values;
    let rest = last.queue.get(sent..).unwrap_or_default();
    rest.iter().filter_map(|e| current(e)).collect()
}

/// A batch's queue: `carried` in its order, then the keys of `moved` not among them (whose
/// latest values `carried` holds already).
pub fn carried_then_moved(carried: Vec<Arc<Event>>, moved: &[Arc<Event>]) -> Vec<Arc<Event>> {
    if carried.is_empty() {
        return moved.to_vec();
    }
    let waiting: hashbrown::HashSet<ByKey> = carried.iter().cloned().map(ByKey).collect();
    let mut queue = carried;
    queue.extend(
        (moved.iter())
            .filter(|e| !waiting.contains(&ByKey(Arc::clone(e))))
            .cloned(),
    );
    queue
}

/// The frame of a change, serialized (what `Payload::frame` caches; history uses it directly).
pub fn change_frame(change: &Change) -> Bytes {
    Bytes::from(protocol::change_frame(change).to_text())
}

pub type Receiver = tokio::sync::broadcast::Receiver<Arc<Published>>;

/// The (host, service) of an event or an ack, borrowed.
type KeyRef<'a> = (Option<&'a str>, Option<&'a str>);

/// The keys of the events `keep` accepts: what a subscriber with a filter can see, to pick
/// the acks and silenced keys that belong in its view.
pub fn visible_keys<'a>(
    events: &'a [Arc<Event>],
    keep: impl Fn(&Event) -> bool,
) -> HashSet<KeyRef<'a>> {
    events
        .iter()
        .filter(|e| keep(e))
        .map(|e| (e.host.as_deref(), e.service.as_deref()))
        .collect()
}

/// Whether an ack (or a silenced key) is of a key in `visible`; `None` sees everything.
pub fn is_visible(
    visible: Option<&HashSet<KeyRef<'_>>>,
    host: &Option<String>,
    service: &Option<String>,
) -> bool {
    visible.is_none_or(|keys| keys.contains(&(host.as_deref(), service.as_deref())))
}

/// The snapshot frame (see [`SnapshotFrame`]): the events with a state that `filter` accepts
/// (`None`: all of them), and the acks and silenced keys of those events only — a subscriber
/// sees what its filter sees, and a filter that matches nothing gets no acks. Silences are all
/// sent: there are at most 1,000, and the page manages them from any view. `reset` tells a
/// client that asked to resume (or fell behind) that it missed changes and must replace its
/// view.
pub fn snapshot_frame(
    snapshot: &Snapshot,
    epoch: &str,
    reset: bool,
    filter: Option<impl Fn(&Event) -> bool>,
) -> Bytes {
    let with_state = |e: &Event| e.state.is_some() && filter.as_ref().is_none_or(|f| f(e));
    let actions = &snapshot.actions;
    let narrowed = filter.is_some() && !(actions.acks.is_empty() && actions.silenced.is_empty());
    let visible = narrowed.then(|| visible_keys(&snapshot.events, with_state));
    let visible = visible.as_ref();
    let frame = Frame::Snapshot(SnapshotFrame {
        seq: snapshot.seq,
        epoch,
        reset,
        events: Items::new(
            snapshot
                .events
                .iter()
                .filter(|e| with_state(e))
                .map(|e| EventItem(e)),
        ),
        acks: Items::new(
            actions
                .acks
                .iter()
                .filter(move |a| is_visible(visible, &a.host, &a.service))
                .map(Ack),
        ),
        silences: Items::new(actions.silences.iter().map(SilenceItem)),
        silenced: Items::new(
            actions
                .silenced
                .iter()
                .filter(move |(h, s)| is_visible(visible, h, s)),
        ),
    });
    let mut out = Vec::new();
    frame.write(&mut out);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: u64, description_bytes: usize) -> Change {
        let event = Event {
            host: Some("h".into()),
            service: Some("s".into()),
            state: Some("critical".into()),
            description: Some("d".repeat(description_bytes)),
            ..Default::default()
        };
        Change::state(
            seq,
            crate::change::StateChange {
                previous_state: "ok".into(),
                event: Arc::new(event),
                previous: None,
                removed: false,
                silenced: false,
                cleared_by: None,
            },
        )
    }

    /// Issue 20 item 5: a receiver that does not read keeps the ring's changes only up to the
    /// byte bound; past it the oldest are evicted (it sees them as missed), the newest kept.
    #[test]
    fn the_ring_is_bounded_in_bytes_and_evicts_the_oldest() {
        let tx = Sender::with_max_bytes(1000, 100_000);
        let mut stalled = tx.subscribe();
        for seq in 1..=100 {
            tx.send(change(seq, 10_000));
        }
        let ring = tx.ring.lock().unwrap();
        assert!(ring.bytes <= 100_000, "{} bytes held", ring.bytes);
        drop(ring);
        let mut kept = Vec::new();
        let mut missed = 0;
        while let Ok(published) = stalled.try_recv() {
            match published.payload() {
                Some(payload) => kept.push(payload.change.seq),
                None => missed += 1,
            }
        }
        assert_eq!(missed + kept.len(), 100, "every change is still announced");
        assert!(kept.len() >= 3 && kept.len() < 10, "{kept:?}");
        assert_eq!(kept.last(), Some(&100), "the newest is kept");
        assert!(
            kept.windows(2).all(|w| w[0] + 1 == w[1]),
            "the newest, in a row"
        );
    }

    /// A transport's form of the frame is made once per change, however many clients take it,
    /// and holds the very bytes serialized once.
    #[test]
    fn a_transports_form_of_the_frame_is_made_once() {
        let tx = Sender::new(16);
        let mut rx = tx.subscribe();
        tx.send(change(1, 10));
        let payload = rx.try_recv().unwrap().payload().unwrap();
        let made = std::sync::atomic::AtomicUsize::new(0);
        let make = |bytes: Bytes| {
            made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            String::from_utf8(bytes.to_vec()).unwrap()
        };
        let first = payload.frame_as(make);
        for _ in 0..1000 {
            assert_eq!(payload.frame_as(make), first);
        }
        assert_eq!(made.into_inner(), 1);
        assert_eq!(first.as_bytes(), &payload.frame()[..]);
        let value: serde_json::Value = serde_json::from_str(&first).unwrap();
        assert_eq!(value["type"], "change");
        assert_eq!(value["seq"], 1);
    }

    /// Changes every receiver has read pin nothing, and never cause an eviction.
    #[test]
    fn changes_read_by_every_receiver_are_not_held() {
        let tx = Sender::with_max_bytes(1000, 100_000);
        let mut reader = tx.subscribe();
        for seq in 1..=100 {
            tx.send(change(seq, 10_000));
            let published = reader.try_recv().expect("published");
            assert!(published.payload().is_some(), "read before any eviction");
        }
        // Only a weak trace remains: no payload is alive for the ring to evict.
        let ring = tx.ring.lock().unwrap();
        assert!(ring
            .entries
            .iter()
            .all(|(weak, _)| weak.upgrade().is_none()));
    }
}
