//! One dashboard's live values: the metric batches it has taken and not yet handed to its socket,
//! merged per key (the latest wins), so that however long the client takes to read, it holds at
//! most one `metrics` frame and the values still to go — never a queue of frames.
//!
//! The session merges every batch it takes ([`LiveValues::merge`], through its query), then
//! asks for the one frame to queue ([`LiveValues::next_frame`]). A frame still queued in the
//! outbox when the next interval comes was not read: the session takes it back out, and its
//! values go back under the ones merged since ([`LiveValues::unsent`]), so the frame that
//! replaces it carries the latest value of every key of both. What this holds is bounded by the
//! keys the client's query matches (at most `--max-keys`), however many intervals pass.
//!
//! A client without a query that holds nothing else takes a batch whole: its frames are the
//! batch's shared ones ([`MetricBatch::shared_frames`], serialized once for every such client),
//! queued one after the other as each leaves — a batch larger than one frame reaches the client
//! whole, across frames. A client slower than the batches stays on them: a batch that follows
//! the one it is sending ([`MetricBatch::follows`]: every key of it, newer) replaces what is left
//! of that one, and picks up at the frame where it left off (batches are in key order, so the
//! same keys make the same frames), so every key's latest value comes in turn, with no work per
//! client but the writing. Anything merged meanwhile (another batch) turns what is left of a
//! batch into pending values.
//!
//! Pure: no socket, no clock, no engine; the batches and the query come in as data.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use hashbrown::HashSet;

use crate::broadcast;
use crate::change::{BatchFrame, ByKey, MetricBatch};
use crate::event::Event;

/// Values one `metrics` frame carries at most, and the bytes it is built up to (estimated; the
/// value that crosses it is the last): well within `--ws-queue-bytes` (1 MiB), so that a frame
/// never makes a client that reads fall behind. Past either the rest wait, latest value kept,
/// for the next frame.
pub(super) const MAX_VALUES_PER_FRAME: usize = 10_000;
pub(super) const MAX_FRAME_BYTES: usize = 256 * 1024;

/// What a value costs a frame, estimated: its names and description and the rest of its JSON
/// (`[h,"service",metric,"description",age],`; the host, when new to the frame's table).
fn value_bytes(event: &Event) -> usize {
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    48 + text(&event.host) + text(&event.service) + text(&event.description)
}

/// The values of the frame last queued: picked from pending, or one of a batch's shared frames.
enum Queued {
    Values(Vec<Arc<Event>>),
    Shared(Arc<MetricBatch>, usize),
}

#[cfg(test)]
impl Queued {
    fn len(&self) -> usize {
        match self {
            Queued::Values(values) => values.len(),
            Queued::Shared(batch, at) => shared_frames(batch)[*at].values.len(),
        }
    }
}

impl Default for Queued {
    fn default() -> Self {
        Queued::Values(Vec::new())
    }
}

/// A batch taken whole, and which of its shared frames are still to be queued: `left` of them
/// from `next` on, wrapping round to the first.
struct Whole {
    batch: Arc<MetricBatch>,
    next: usize,
    left: usize,
}

impl Whole {
    /// The values of the frames not yet queued.
    fn rest(&self) -> impl Iterator<Item = &Arc<Event>> {
        let frames = shared_frames(&self.batch);
        (0..self.left)
            .map(move |i| &frames[(self.next + i) % frames.len()])
            .flat_map(|frame| &self.batch.events[frame.values.clone()])
    }

    /// How many values [`Whole::rest`] holds.
    fn rest_len(&self) -> usize {
        let frames = shared_frames(&self.batch);
        (0..self.left)
            .map(|i| frames[(self.next + i) % frames.len()].values.len())
            .sum()
    }
}

/// See the module doc.
#[derive(Default)]
pub(super) struct LiveValues {
    /// Values taken and not in any frame yet, one per key.
    pending: HashSet<ByKey>,
    /// A batch taken whole (see [`LiveValues::take_whole`]) with frames not yet queued; while
    /// it is here `pending` is empty.
    whole: Option<Whole>,
    /// The batches taken whole one after the other, each following the last
    /// ([`MetricBatch::follows`]): the newest, and the `seq` of the first. Unsent values of any
    /// of them but the newest are older than the newest's; merging ends the run.
    run: Option<(Arc<MetricBatch>, u64)>,
    /// The shared frame after the last one queued: where the next batch taken whole starts.
    resume_at: usize,
    /// The values of the frame last queued, until the session says it was handed to the socket
    /// ([`LiveValues::sent`]) or taken back ([`LiveValues::unsent`]).
    queued: Queued,
    /// When the newest batch merged was taken (unix ms): the frame's `time`.
    time_ms: i64,
}

impl LiveValues {
    /// Takes a batch: each value `wants` accepts (the client's query) replaces that key's
    /// pending one.
    pub(super) fn merge(&mut self, batch: &MetricBatch, wants: impl Fn(&Event) -> bool) {
        self.expand_whole();
        self.run = None;
        for event in batch.events.iter().filter(|e| wants(e)) {
            self.pending.replace(ByKey(Arc::clone(event)));
        }
        self.time_ms = self.time_ms.max(batch.time_ms);
    }

    /// Takes a batch as it is, for a client without a query, when nothing else waits (or what
    /// waits is the rest of a batch this one follows): its frames are then the ones shared by
    /// every such client, serialized once. False: merge it instead.
    pub(super) fn take_whole(&mut self, batch: &Arc<MetricBatch>) -> bool {
        let run_from = (self.run.as_ref())
            .filter(|(last, _)| batch.follows(last))
            .map(|(_, first)| *first);
        if self.whole.is_some() && run_from.is_none() {
            return false;
        }
        if !self.pending.is_empty() && !self.supersede_pending(batch) {
            return false;
        }
        let first = run_from.unwrap_or(batch.seq);
        let frames = shared_frames(batch).len();
        self.whole = Some(Whole {
            batch: Arc::clone(batch),
            next: self.resume_at % frames.max(1),
            left: frames,
        });
        self.run = Some((Arc::clone(batch), first));
        self.time_ms = self.time_ms.max(batch.time_ms);
        true
    }

    /// When `batch` holds every key pending and the one of the frame queued, it has newer
    /// values of them all: they are dropped (a frame taken back unsent then carries nothing),
    /// and a client that had fallen back on frames of its own goes back to the shared ones.
    fn supersede_pending(&mut self, batch: &MetricBatch) -> bool {
        let queued_held = match &self.queued {
            Queued::Values(values) => {
                (values.iter()).all(|e| batch.holds_key(&ByKey(Arc::clone(e))))
            }
            Queued::Shared(..) => false,
        };
        if self.pending.len() > batch.events.len()
            || !queued_held
            || !self.pending.iter().all(|key| batch.holds_key(key))
        {
            return false;
        }
        self.pending = HashSet::new();
        self.queued = Queued::default();
        true
    }

    /// What is left of a batch taken whole goes into `pending` after all (something is merged
    /// with it).
    fn expand_whole(&mut self) {
        if let Some(whole) = self.whole.take() {
            for event in whole.rest() {
                self.pending.replace(ByKey(Arc::clone(event)));
            }
        }
    }

    /// The frame last queued was handed to the socket: its values are the client's.
    pub(super) fn sent(&mut self) {
        self.queued = Queued::default();
    }

    /// The frame last queued was taken back unsent: its values go back to pending, under any
    /// newer value of the same key merged since — or, a shared frame, back among the frames
    /// still to go (of its batch, or none at all when a batch that follows it is taken whole).
    pub(super) fn unsent(&mut self) {
        match std::mem::take(&mut self.queued) {
            Queued::Values(values) if values.is_empty() => {}
            Queued::Values(values) => {
                self.expand_whole();
                for event in values {
                    self.pending.get_or_insert(ByKey(event));
                }
            }
            Queued::Shared(batch, at) => self.unsent_shared(batch, at),
        }
    }

    fn unsent_shared(&mut self, batch: Arc<MetricBatch>, at: usize) {
        let newest = self
            .run
            .as_ref()
            .map(|(last, first)| (Arc::clone(last), *first));
        match newest {
            // Frames go in order, so the one taken back is the one before those left.
            Some((last, _)) if Arc::ptr_eq(&last, &batch) && self.pending.is_empty() => {
                let whole = self.whole.get_or_insert_with(|| Whole {
                    batch,
                    next: at,
                    left: 0,
                });
                (whole.next, whole.left) = (at, whole.left + 1);
                self.resume_at = at;
            }
            Some((last, first)) if first <= batch.seq && batch.seq < last.seq => {}
            _ => {
                self.expand_whole();
                self.run = None;
                let values = shared_frames(&batch)[at].values.clone();
                for event in &batch.events[values] {
                    self.pending.get_or_insert(ByKey(Arc::clone(event)));
                }
            }
        }
    }

    /// Forgets everything: a snapshot (a new view) carries every current value.
    pub(super) fn clear(&mut self) {
        self.pending = HashSet::new();
        self.whole = None;
        self.run = None;
        self.queued = Queued::default();
    }

    /// Values waiting for a frame.
    pub(super) fn pending(&self) -> usize {
        self.pending.len() + self.whole.as_ref().map_or(0, Whole::rest_len)
    }

    /// The frame of up to `max` pending values (their latest), which become the queued ones;
    /// `None` when nothing is pending (a frame with no values is never sent).
    pub(super) fn next_frame(&mut self, max: usize) -> Option<(Bytes, usize)> {
        if max == 0 {
            return None;
        }
        if let Some(frame) = self.next_shared_frame(max) {
            return Some(frame);
        }
        if self.pending.is_empty() {
            return None;
        }
        self.sent();
        let taken = self.take_pending(max);
        let frame = broadcast::metrics_frame(self.time_ms, &taken);
        let values = taken.len();
        self.queued = Queued::Values(taken);
        Some((frame, values))
    }

    /// The next shared frame of the batch taken whole, if it holds at most `max` values
    /// (otherwise what is left of the batch becomes pending values).
    fn next_shared_frame(&mut self, max: usize) -> Option<(Bytes, usize)> {
        let whole = self.whole.take()?;
        let frames = shared_frames(&whole.batch);
        let at = whole.next % frames.len().max(1);
        let shared = frames
            .get(at)
            .filter(|_| whole.left > 0)
            .map(|BatchFrame { frame, values }| (frame.clone(), values.len()))?;
        if shared.1 > max {
            self.whole = Some(whole);
            self.expand_whole();
            self.run = None;
            return None;
        }
        self.resume_at = at + 1;
        if whole.left > 1 {
            self.whole = Some(Whole {
                batch: Arc::clone(&whole.batch),
                next: at + 1,
                left: whole.left - 1,
            });
        }
        self.queued = Queued::Shared(whole.batch, at);
        Some(shared)
    }

    /// Up to `max` pending values, and about [`MAX_FRAME_BYTES`] of them, out of pending.
    fn take_pending(&mut self, max: usize) -> Vec<Arc<Event>> {
        let mut bytes = 0;
        let fits_all = self.pending.len() <= max
            && self
                .pending
                .iter()
                .map(|v| value_bytes(&v.0))
                .sum::<usize>()
                <= MAX_FRAME_BYTES;
        let taken: Vec<Arc<Event>> = if fits_all {
            self.pending.drain().map(|ByKey(event)| event).collect()
        } else {
            let taken: Vec<Arc<Event>> = self
                .pending
                .iter()
                .take_while(|value| {
                    let more = bytes < MAX_FRAME_BYTES;
                    bytes += value_bytes(&value.0);
                    more
                })
                .take(max)
                .map(|value| Arc::clone(&value.0))
                .collect();
            for event in &taken {
                self.pending.remove(&ByKey(Arc::clone(event)));
            }
            taken
        };
        // A burst must not leave its room behind on every connection.
        if self.pending.is_empty() && self.pending.capacity() > 1024 {
            self.pending = HashSet::new();
        }
        taken
    }
}

/// The frames of every value of `batch`, in order, each within the bounds of one frame:
/// serialized by the first caller and shared after (see [`MetricBatch::shared_frames`]).
fn shared_frames(batch: &MetricBatch) -> &[BatchFrame] {
    batch.shared_frames.get_or_init(|| {
        frame_ranges(&batch.events)
            .into_iter()
            .map(|values| BatchFrame {
                frame: broadcast::metrics_frame(batch.time_ms, &batch.events[values.clone()]),
                values,
            })
            .collect()
    })
}

/// `events` cut into the runs that make one frame each, in order: up to
/// [`MAX_VALUES_PER_FRAME`] values and about [`MAX_FRAME_BYTES`] (the value that crosses it is
/// the last of its frame).
fn frame_ranges(events: &[Arc<Event>]) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (at, event) in events.iter().enumerate() {
        if at > start && (at - start == MAX_VALUES_PER_FRAME || bytes >= MAX_FRAME_BYTES) {
            ranges.push(start..at);
            (start, bytes) = (at, 0);
        }
        bytes += value_bytes(event);
    }
    if start < events.len() {
        ranges.push(start..events.len());
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Metric;

    fn value(host: &str, service: &str, metric: f64) -> Arc<Event> {
        Arc::new(Event {
            host: Some(host.into()),
            service: Some(service.into()),
            state: Some("critical".into()),
            metric: Some(Metric::Float(metric)),
            description: Some(format!("at {metric}")),
            time_micros: 1_796_126_400_000_000,
            ..Event::default()
        })
    }

    fn batch(time_ms: i64, values: &[Arc<Event>]) -> Arc<MetricBatch> {
        Arc::new(MetricBatch::new(time_ms as u64, time_ms, values.to_vec()))
    }

    /// The frame's values as objects `{host, service, metric, description, time}`: its
    /// compact rows decoded (see `protocol::MetricsFrame`), `time` as an event's.
    fn rows(frame: &Bytes) -> Vec<serde_json::Value> {
        let frame: serde_json::Value = serde_json::from_slice(frame).unwrap();
        assert_eq!(frame["type"], "metrics");
        let time = frame["time"].as_i64().unwrap();
        let hosts = &frame["hosts"];
        (frame["values"].as_array().unwrap().iter())
            .map(|row| {
                let host = row[0]
                    .as_u64()
                    .map_or(serde_json::Value::Null, |h| hosts[h as usize].clone());
                let at = time - row[4].as_i64().unwrap();
                serde_json::json!({"host": host, "service": row[1], "metric": row[2],
                    "description": row[3], "time": crate::event::format_time(at * 1000)})
            })
            .collect()
    }

    /// The frame's values as (host, service, metric), sorted.
    fn values(frame: &Bytes) -> Vec<(String, String, f64)> {
        let mut out: Vec<_> = rows(frame)
            .iter()
            .map(|v| {
                (
                    v["host"].as_str().unwrap().to_owned(),
                    v["service"].as_str().unwrap().to_owned(),
                    v["metric"].as_f64().unwrap(),
                )
            })
            .collect();
        out.sort_by(|a, b| a.partial_cmp(b).unwrap());
        out
    }

    fn all(_: &Event) -> bool {
        true
    }

    #[test]
    fn batches_merge_into_one_frame_with_the_latest_value_per_key() {
        let mut live = LiveValues::default();
        live.merge(
            &batch(
                1,
                &[value("web1", "disk", 91.0), value("web2", "disk", 50.0)],
            ),
            all,
        );
        live.merge(&batch(2, &[value("web1", "disk", 99.0)]), all);
        let (frame, count) = live.next_frame(MAX_VALUES_PER_FRAME).unwrap();
        assert_eq!(count, 2);
        assert_eq!(
            values(&frame),
            [
                ("web1".into(), "disk".into(), 99.0),
                ("web2".into(), "disk".into(), 50.0)
            ]
        );
        let json: serde_json::Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(json["time"], 2, "the newest batch's time");
        assert!(
            live.next_frame(MAX_VALUES_PER_FRAME).is_none(),
            "nothing left: no empty frame"
        );
    }

    #[test]
    fn the_query_picks_the_keys() {
        let mut live = LiveValues::default();
        let disk_only = |e: &Event| e.service.as_deref() == Some("disk");
        live.merge(
            &batch(1, &[value("web1", "disk", 1.0), value("web1", "cpu", 2.0)]),
            disk_only,
        );
        let (frame, _) = live.next_frame(MAX_VALUES_PER_FRAME).unwrap();
        assert_eq!(values(&frame), [("web1".into(), "disk".into(), 1.0)]);
        live.merge(&batch(2, &[value("web1", "cpu", 3.0)]), disk_only);
        assert!(live.next_frame(MAX_VALUES_PER_FRAME).is_none());
    }

    /// A client that does not read: each interval's frame replaces the unsent one, which
    /// carries every key of both, each at its latest value.
    #[test]
    fn an_unsent_frame_is_replaced_by_one_with_every_latest_value() {
        let mut live = LiveValues::default();
        live.merge(
            &batch(1, &[value("a", "s", 1.0), value("b", "s", 1.0)]),
            all,
        );
        live.next_frame(MAX_VALUES_PER_FRAME).unwrap();
        for interval in 2..1000 {
            live.merge(&batch(interval, &[value("a", "s", interval as f64)]), all);
            live.unsent();
            live.next_frame(MAX_VALUES_PER_FRAME).unwrap();
            assert!(
                live.pending() == 0 && live.queued.len() == 2,
                "bounded by the keys"
            );
        }
        live.merge(&batch(1000, &[value("c", "s", 7.0)]), all);
        live.unsent();
        let (frame, _) = live.next_frame(MAX_VALUES_PER_FRAME).unwrap();
        assert_eq!(
            values(&frame),
            [
                ("a".into(), "s".into(), 999.0),
                ("b".into(), "s".into(), 1.0),
                ("c".into(), "s".into(), 7.0)
            ]
        );
    }

    /// An unsent frame's value never overwrites a newer one merged since.
    #[test]
    fn taking_back_an_unsent_frame_keeps_the_newer_values() {
        let mut live = LiveValues::default();
        live.merge(&batch(1, &[value("a", "s", 1.0)]), all);
        live.next_frame(MAX_VALUES_PER_FRAME).unwrap();
        live.merge(&batch(2, &[value("a", "s", 2.0)]), all);
        live.unsent();
        let (frame, _) = live.next_frame(MAX_VALUES_PER_FRAME).unwrap();
        assert_eq!(values(&frame), [("a".into(), "s".into(), 2.0)]);
    }

    #[test]
    fn a_frame_holds_at_most_max_values_and_the_rest_wait() {
        let mut live = LiveValues::default();
        let many: Vec<_> = (0..25).map(|i| value(&format!("h{i}"), "s", 1.0)).collect();
        live.merge(&batch(1, &many), all);
        let (_, first) = live.next_frame(10).unwrap();
        live.sent();
        let (_, second) = live.next_frame(10).unwrap();
        live.sent();
        let (_, third) = live.next_frame(10).unwrap();
        assert_eq!((first, second, third), (10, 10, 5));
        assert!(live.next_frame(10).is_none());
    }

    #[test]
    fn a_frame_is_bounded_in_bytes_too() {
        let mut live = LiveValues::default();
        let long = "d".repeat(100 * 1024);
        let many: Vec<_> = (0..5)
            .map(|i| {
                Arc::new(Event {
                    description: Some(long.clone()),
                    ..(*value(&format!("h{i}"), "s", 1.0)).clone()
                })
            })
            .collect();
        live.merge(&batch(1, &many), all);
        let (frame, count) = live.next_frame(MAX_VALUES_PER_FRAME).unwrap();
        assert_eq!(count, 3, "the value that crosses the bound is the last");
        assert!(
            frame.len() < MAX_FRAME_BYTES + 110 * 1024,
            "{}",
            frame.len()
        );
        live.sent();
        assert_eq!(live.next_frame(MAX_VALUES_PER_FRAME).unwrap().1, 2);
    }

    #[test]
    fn a_new_view_forgets_what_waited() {
        let mut live = LiveValues::default();
        live.merge(&batch(1, &[value("a", "s", 1.0)]), all);
        live.clear();
        assert!(live.next_frame(MAX_VALUES_PER_FRAME).is_none());
    }

    #[test]
    fn metric_and_description_are_null_when_absent() {
        let mut live = LiveValues::default();
        let bare = Arc::new(Event {
            host: Some("a".into()),
            state: Some("ok".into()),
            ..Event::default()
        });
        live.merge(&batch(1, &[bare]), all);
        let (frame, _) = live.next_frame(MAX_VALUES_PER_FRAME).unwrap();
        let v = &rows(&frame)[0];
        assert!(v["metric"].is_null() && v["description"].is_null() && v["service"].is_null());
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
    }
    #[test]
    fn clients_without_a_query_share_one_serialized_frame() {
        let shared = batch(5, &[value("a", "s", 1.0), value("b", "s", 2.0)]);
        let (mut one, mut two) = (LiveValues::default(), LiveValues::default());
        assert!(one.take_whole(&shared) && two.take_whole(&shared));
        let (first, n) = one.next_frame(MAX_VALUES_PER_FRAME).unwrap();
        let (second, _) = two.next_frame(MAX_VALUES_PER_FRAME).unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            first.as_ptr(),
            second.as_ptr(),
            "the same bytes, serialized once"
        );
        assert_eq!(
            values(&first),
            [("a".into(), "s".into(), 1.0), ("b".into(), "s".into(), 2.0)]
        );
        assert_eq!(one.pending(), 0);
    }

    #[test]
    fn a_whole_frame_taken_back_merges_under_newer_values() {
        let mut live = LiveValues::default();
        assert!(live.take_whole(&batch(1, &[value("a", "s", 1.0), value("b", "s", 1.0)])));
        live.next_frame(MAX_VALUES_PER_FRAME).unwrap();
        // The next batch arrives while that frame is still queued: taken whole too, then the
        // old frame comes back unsent.
        assert!(live.take_whole(&batch(2, &[value("a", "s", 2.0)])));
        live.unsent();
        assert_eq!(live.pending(), 2);
        let (frame, _) = live.next_frame(MAX_VALUES_PER_FRAME).unwrap();
        assert_eq!(
            values(&frame),
            [("a".into(), "s".into(), 2.0), ("b".into(), "s".into(), 1.0)]
        );
        // Something waiting means a batch is merged, not taken whole.
        live.merge(&batch(3, &[value("c", "s", 3.0)]), all);
        assert!(!live.take_whole(&batch(4, &[value("c", "s", 4.0)])));
    }

    /// A batch larger than one frame, taken whole: its shared frames go one after the other,
    /// the same bytes for every client, and together carry every value once.
    #[test]
    fn a_batch_larger_than_a_frame_reaches_a_client_whole_across_shared_frames() {
        let many: Vec<_> = (0..2 * MAX_VALUES_PER_FRAME + 1)
            .map(|i| value("h", &format!("s{i}"), i as f64))
            .collect();
        let shared = batch(1, &many);
        let (mut one, mut two) = (LiveValues::default(), LiveValues::default());
        assert!(one.take_whole(&shared) && two.take_whole(&shared));
        let mut seen = Vec::new();
        while let Some((frame, count)) = one.next_frame(MAX_VALUES_PER_FRAME) {
            let (theirs, _) = two.next_frame(MAX_VALUES_PER_FRAME).unwrap();
            assert_eq!(frame.as_ptr(), theirs.as_ptr(), "shared, serialized once");
            assert!(count <= MAX_VALUES_PER_FRAME && frame.len() < 2 * MAX_FRAME_BYTES);
            assert_eq!(values(&frame).len(), count);
            seen.extend(values(&frame));
            one.sent();
            two.sent();
        }
        assert!(two.next_frame(MAX_VALUES_PER_FRAME).is_none());
        seen.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let mut all: Vec<_> = (0..many.len())
            .map(|i| ("h".to_owned(), format!("s{i}"), i as f64))
            .collect();
        all.sort_by(|a, b| a.partial_cmp(b).unwrap());
        assert_eq!(seen, all, "every value once");
        assert!(shared_frames(&shared).len() >= 3);
    }

    /// Something merged while a batch's shared frames are still going: what is left of the
    /// batch, and a frame taken back unsent, go on as pending values under the newer ones.
    #[test]
    fn a_merge_midway_through_shared_frames_keeps_every_latest_value() {
        let many: Vec<_> = (0..MAX_VALUES_PER_FRAME + 1)
            .map(|i| value("h", &format!("s{i}"), 1.0))
            .collect();
        let mut live = LiveValues::default();
        assert!(live.take_whole(&batch(1, &many)));
        let (_, first) = live.next_frame(MAX_VALUES_PER_FRAME).unwrap();
        live.sent();
        live.next_frame(MAX_VALUES_PER_FRAME).unwrap();
        live.merge(
            &batch(2, &[value("h", "s0", 2.0), value("h", "new", 2.0)]),
            all,
        );
        live.unsent();
        assert_eq!(live.pending(), many.len() - first + 1 + 1);
        let mut seen = std::collections::BTreeMap::new();
        while let Some((frame, _)) = live.next_frame(MAX_VALUES_PER_FRAME) {
            seen.extend(values(&frame).into_iter().map(|(_, s, m)| (s, m)));
            live.sent();
        }
        assert_eq!(seen.len(), many.len() - first + 2);
        assert_eq!(seen["s0"], 2.0);
        assert_eq!(seen["new"], 2.0);
        assert!(seen.values().filter(|m| **m == 1.0).count() == many.len() - first);
    }

    /// Batches of the same `keys` keys (in key order, as the engine makes them), each value
    /// `interval`.
    fn same_keys(interval: i64, keys: usize) -> Arc<MetricBatch> {
        let values: Vec<_> = (0..keys)
            .map(|i| value("h", &format!("s{i:05}"), interval as f64))
            .collect();
        batch(interval, &values)
    }

    /// A client that reads one frame an interval, of batches several frames long that each
    /// follow the last: it stays on the shared frames (no frame of its own, nothing pending
    /// past one batch) and gets every key in turn, the frame after the one it had.
    #[test]
    fn a_client_slower_than_the_batches_gets_every_key_in_turn_from_shared_frames() {
        let keys = 2 * MAX_VALUES_PER_FRAME + 1;
        let mut live = LiveValues::default();
        let mut latest = std::collections::BTreeMap::new();
        let frames = shared_frames(&same_keys(0, keys)).len() as i64;
        assert!(frames >= 3, "{frames}");
        for interval in 1..=frames {
            let batch = same_keys(interval, keys);
            assert!(live.take_whole(&batch), "interval {interval}");
            live.sent();
            let (frame, _) = live.next_frame(MAX_VALUES_PER_FRAME).unwrap();
            let shared = &shared_frames(&batch)[interval as usize - 1].frame;
            assert_eq!(
                frame.as_ptr(),
                shared.as_ptr(),
                "the batch's own frame, in turn"
            );
            latest.extend(values(&frame).into_iter().map(|(_, s, m)| (s, m)));
            assert!(live.pending() < keys, "the rest of one batch only");
        }
        assert_eq!(latest.len(), keys, "every key once the frames went round");
    }

    /// A shared frame taken back unsent: when a batch that follows its own was taken, that
    /// batch's frames carry newer values of its keys and it is dropped; when its own batch is
    /// the newest, it goes back to its place among the frames still to go.
    #[test]
    fn an_unsent_shared_frame_is_dropped_for_a_newer_batch_or_goes_back_in_place() {
        let keys = MAX_VALUES_PER_FRAME + 1;
        let mut live = LiveValues::default();
        let first = same_keys(1, keys);
        assert!(live.take_whole(&first));
        let (frame, _) = live.next_frame(MAX_VALUES_PER_FRAME).unwrap();
        live.unsent();
        assert_eq!(live.pending(), keys, "back in place");
        let (again, _) = live.next_frame(MAX_VALUES_PER_FRAME).unwrap();
        assert_eq!(frame.as_ptr(), again.as_ptr());

        let second = same_keys(2, keys);
        assert!(
            live.take_whole(&second),
            "it follows the first: taken whole"
        );
        live.unsent();
        assert_eq!(
            live.pending(),
            keys,
            "the first's frame dropped: the second's are newer"
        );
        let mut seen = std::collections::BTreeMap::new();
        while let Some((frame, _)) = live.next_frame(MAX_VALUES_PER_FRAME) {
            seen.extend(values(&frame).into_iter().map(|(_, s, m)| (s, m)));
            live.sent();
        }
        assert_eq!(seen.len(), keys);
        assert!(seen.values().all(|m| *m == 2.0), "every value the second's");
    }

    /// A client that fell back on frames of its own (a batch merged) goes back to the shared
    /// ones with a batch that holds every key it has waiting — newer values of them all — and
    /// not with one that lacks any.
    #[test]
    fn a_batch_holding_every_key_waiting_brings_a_client_back_to_shared_frames() {
        let mut live = LiveValues::default();
        live.merge(
            &batch(1, &[value("a", "s", 1.0), value("b", "s", 1.0)]),
            all,
        );
        assert!(
            !live.take_whole(&batch(2, &[value("a", "s", 2.0)])),
            "b lacks"
        );
        live.merge(&batch(2, &[value("a", "s", 2.0)]), all);
        let (_, queued) = live.next_frame(1).unwrap();
        assert_eq!(queued, 1);
        let all_keys = batch(
            3,
            &[
                value("a", "s", 3.0),
                value("b", "s", 3.0),
                value("c", "s", 3.0),
            ],
        );
        assert!(live.take_whole(&all_keys));
        live.unsent();
        assert_eq!(live.pending(), 3, "only the batch's values");
        let (frame, _) = live.next_frame(MAX_VALUES_PER_FRAME).unwrap();
        assert_eq!(frame.as_ptr(), shared_frames(&all_keys)[0].frame.as_ptr());
        assert_eq!(values(&frame).len(), 3);
    }

    /// The compact shape: hosts once, values as arrays, the age in ms.
    #[test]
    fn values_are_compact_rows() {
        let mut live = LiveValues::default();
        let at = |ms: i64, e: Arc<Event>| {
            Arc::new(Event {
                time_micros: ms * 1000 + 999,
                ..(*e).clone()
            })
        };
        live.merge(
            &batch(
                10_000,
                &[
                    at(9_750, value("web1", "cpu", 12.0)),
                    at(10_000, value("web1", "disk", 0.5)),
                ],
            ),
            all,
        );
        let (frame, _) = live.next_frame(MAX_VALUES_PER_FRAME).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(json["hosts"], serde_json::json!(["web1"]));
        let mut rows: Vec<String> = (json["values"].as_array().unwrap().iter())
            .map(|row| row.to_string())
            .collect();
        rows.sort();
        assert_eq!(
            rows,
            [
                r#"[0,"cpu",12.0,"at 12",250]"#,
                r#"[0,"disk",0.5,"at 0.5",0]"#
            ]
        );
    }
}
