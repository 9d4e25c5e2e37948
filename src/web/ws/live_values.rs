//! One dashboard's live values: what it has yet to be sent of the metric batches it took, and
//! the one `metrics` frame each `--metrics-interval` that sends some of it.
//!
//! Bounded per interval: the session asks for one frame per batch ([`LiveValues::next_frame`]),
//! of at most the batch's `max_bytes` (`--metrics-max-bytes`); what does not fit waits for the
//! next intervals, the keys that waited longest first, each at its latest value. So a dashboard
//! costs the server one bounded frame an interval however many keys move, and every moving key
//! still comes within ceil(moving keys ÷ values per frame) intervals.
//!
//! A dashboard without a query takes each batch whole ([`LiveValues::take_whole`]): its frame is
//! the batch's shared one (`broadcast::shared_metrics_frame`, serialized once for every such
//! dashboard), the first values of the batch's `queue`; the engine carries the rest of the
//! queue into the next batch's, ahead of what moved since. Nothing per dashboard but the writing.
//!
//! A dashboard with a query merges each batch's moved keys through it into values of its own
//! ([`LiveValues::merge`]), one per key, in the order they came (a key keeps its place when a
//! newer value replaces its own), and its frames take them oldest first.
//!
//! A frame still queued in the outbox when the next interval comes was not read: the session
//! takes it back out ([`LiveValues::unsent`]) and the values go back ahead of the others, under
//! any newer value of the same key, so the frame that replaces it carries the latest. A shared
//! frame that did not leave makes its dashboard hold its values as its own, together with the
//! rest of the queue it was promised, until a batch whose queue holds every one of those keys
//! (newer values of them all) takes it back to the shared frames. What this holds is bounded by
//! the keys the client's query matches (at most `--max-keys`), however many intervals pass.
//!
//! Pure: no socket, no clock, no engine; the batches and the query come in as data.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use hashbrown::HashSet;

use crate::broadcast::{self, DEFAULT_METRICS_MAX_BYTES};
use crate::change::{ByKey, MetricBatch};
use crate::event::Event;
use crate::protocol::MetricsFrameWriter;

/// The values of the frame last queued: of the dashboard's own, or a batch's shared frame.
enum Queued {
    Values(Vec<Arc<Event>>),
    Shared(Arc<MetricBatch>),
}

impl Default for Queued {
    fn default() -> Self {
        Queued::Values(Vec::new())
    }
}

/// On the shared frames: the newest batch taken whole, and whether its frame was queued. The
/// dashboard is owed that batch's whole `queue`: its frame, then (carried by the engine) the
/// next batches'.
struct Shared {
    batch: Arc<MetricBatch>,
    queued: bool,
}

/// A dashboard's own values, one per key (the latest), in the order they came.
#[derive(Default)]
struct Held {
    latest: HashSet<ByKey>,
    /// The keys in order, oldest first. An entry whose key `latest` no longer holds (sent),
    /// or holds again by a later entry, is stale and skipped; [`Held::compact`] bounds them.
    order: VecDeque<ByKey>,
}

impl Held {
    fn len(&self) -> usize {
        self.latest.len()
    }

    fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// A newer value: it replaces the key's, which keeps its place; a new key goes last.
    fn put(&mut self, event: &Arc<Event>) {
        if self.latest.replace(ByKey(Arc::clone(event))).is_none() {
            self.order.push_back(ByKey(Arc::clone(event)));
        }
    }

    /// Older values (a frame taken back unsent, or a shared frame that did not leave): they
    /// waited longest and go first, under any newer value of their key.
    fn put_first(&mut self, values: &[Arc<Event>]) {
        for event in values.iter().rev() {
            let key = ByKey(Arc::clone(event));
            if !self.latest.contains(&key) {
                self.latest.insert(key.clone());
            }
            self.order.push_front(key);
        }
        self.compact();
    }

    fn clear(&mut self) {
        *self = Held::default();
    }

    /// The frame of the oldest values that fit in `max_bytes`, taken out; `None` when nothing
    /// is held.
    fn take_frame(&mut self, time_ms: i64, max_bytes: usize) -> Option<(Bytes, Vec<Arc<Event>>)> {
        let mut writer = MetricsFrameWriter::new(time_ms, max_bytes);
        let mut taken = Vec::new();
        while let Some(key) = self.order.pop_front() {
            let Some(ByKey(value)) = self.latest.take(&key) else {
                continue;
            };
            if !writer.push(&value) {
                self.latest.insert(ByKey(Arc::clone(&value)));
                self.order.push_front(ByKey(value));
                break;
            }
            taken.push(value);
        }
        // A burst must not leave its room behind on every connection.
        if self.latest.is_empty() && self.latest.capacity() > 1024 {
            self.clear();
        }
        (!taken.is_empty()).then(|| (Bytes::from(writer.finish()), taken))
    }

    /// Drops stale entries once they outnumber the live ones (each `put_first` may leave one
    /// per value): the order stays within twice the keys held.
    fn compact(&mut self) {
        if self.order.len() <= 2 * self.latest.len() + 64 {
            return;
        }
        let mut seen = HashSet::with_capacity(self.latest.len());
        let latest = &self.latest;
        self.order
            .retain(|key| latest.contains(key) && seen.insert(key.clone()));
    }
}

/// See the module doc.
#[derive(Default)]
pub(super) struct LiveValues {
    /// Values taken and not in any frame yet (own frames), one per key, oldest first.
    held: Held,
    /// On the shared frames (see [`Shared`]); while it is here `held` is empty.
    shared: Option<Shared>,
    /// The values of the frame last queued, until the session says it was handed to the socket
    /// ([`LiveValues::sent`]) or taken back ([`LiveValues::unsent`]).
    queued: Queued,
    /// When the newest batch taken was (unix ms): an own frame's `time`.
    time_ms: i64,
    /// The newest batch's `max_bytes`: an own frame's bound (0: none taken yet).
    max_bytes: usize,
    /// Left the shared frames without taking a batch since: the next batch's whole queue is
    /// due (the engine carried the rest of the last shared one into it), not only its moved keys.
    owes_queue: bool,
    /// A batch was taken since the last frame was made: this interval's frame is still to
    /// come (the engine sends a batch every interval, empty when nothing moved, so a
    /// dashboard's own values go on a frame an interval after the keys stop moving).
    due: bool,
}

impl LiveValues {
    /// Takes a batch for a dashboard with a query: each moved value `wants` accepts replaces
    /// that key's own (or joins them, last).
    pub(super) fn merge(&mut self, batch: &MetricBatch, wants: impl Fn(&Event) -> bool) {
        let values = if self.leave_shared() || std::mem::take(&mut self.owes_queue) {
            &batch.queue
        } else {
            &batch.events
        };
        for event in values.iter().filter(|e| wants(e)) {
            self.held.put(event);
        }
        self.took(batch);
    }

    /// Takes a batch for a dashboard without a query. True: it is on the batch's shared frame
    /// (nothing of its own held, or all of it in the batch's queue, newer). False: it holds
    /// values of its own and merged the batch into them — the whole queue when it was on the
    /// shared frames until now (the rest of the queue was its due), the moved keys otherwise.
    pub(super) fn take_whole(&mut self, batch: &Arc<MetricBatch>) -> bool {
        let was_shared = self.leave_shared() || std::mem::take(&mut self.owes_queue);
        self.took(batch);
        if self.supersedes_held(batch) {
            self.held.clear();
            self.queued = match std::mem::take(&mut self.queued) {
                Queued::Values(_) => Queued::default(),
                shared => shared,
            };
            self.shared = Some(Shared {
                batch: Arc::clone(batch),
                queued: false,
            });
            return true;
        }
        let values = if was_shared {
            &batch.queue
        } else {
            &batch.events
        };
        for event in values {
            self.held.put(event);
        }
        false
    }

    /// Whether `batch`'s shared frame holds a newer value of every key held, and of every key
    /// of the own frame queued (which may yet come back unsent): then nothing held is lost by
    /// taking it instead. Not merely its queue: a client that skips frames would then drop the
    /// keys of each skipped one to the queue's end again, and one that skips in step with the
    /// queue's turn could miss some keys for ever.
    fn supersedes_held(&self, batch: &MetricBatch) -> bool {
        let own_queued = matches!(&self.queued, Queued::Values(values) if !values.is_empty());
        if self.held.is_empty() && !own_queued {
            return true;
        }
        let frame = broadcast::shared_metrics_frame(batch);
        let holds = |e: &Arc<Event>| frame.holds_key(&batch.queue, &ByKey(Arc::clone(e)));
        let queued_in = match &self.queued {
            Queued::Values(values) => values.iter().all(holds),
            Queued::Shared(_) => true,
        };
        queued_in && self.held.len() <= frame.values && self.held.latest.iter().all(|k| holds(&k.0))
    }

    /// Off the shared frames: the values of one that did not leave become the dashboard's own.
    /// Whether it was on them.
    fn leave_shared(&mut self) -> bool {
        let Some(Shared { batch, queued }) = self.shared.take() else {
            return false;
        };
        if !queued {
            let frame = broadcast::shared_metrics_frame(&batch);
            self.held.put_first(&batch.queue[..frame.values]);
        }
        true
    }

    fn took(&mut self, batch: &MetricBatch) {
        self.due = true;
        self.time_ms = self.time_ms.max(batch.time_ms);
        self.max_bytes = batch.max_bytes;
    }

    /// The frame last queued was handed to the socket: its values are the client's.
    pub(super) fn sent(&mut self) {
        self.queued = Queued::default();
    }

    /// The frame last queued was taken back unsent: own values go back first, under any newer
    /// value of the same key; a shared frame goes back to be queued again — or, its batch no
    /// longer the newest taken, its values become the dashboard's own.
    pub(super) fn unsent(&mut self) {
        match std::mem::take(&mut self.queued) {
            Queued::Values(values) => self.held.put_first(&values),
            Queued::Shared(batch) => match &mut self.shared {
                Some(shared) if Arc::ptr_eq(&shared.batch, &batch) => shared.queued = false,
                _ => {
                    self.owes_queue |= self.leave_shared();
                    let frame = broadcast::shared_metrics_frame(&batch);
                    self.held.put_first(&batch.queue[..frame.values]);
                }
            },
        }
    }

    /// Forgets everything: a snapshot (a new view) carries every current value.
    pub(super) fn clear(&mut self) {
        self.held.clear();
        self.shared = None;
        self.queued = Queued::default();
        self.owes_queue = false;
        self.due = false;
    }

    /// Whether this interval's frame is still to be made (see [`LiveValues::next_frame`]).
    pub(super) fn due(&self) -> bool {
        self.due
    }

    /// Values still to be sent after the frames queued: the dashboard's own, or what its
    /// shared batch's queue holds besides its frame (and the frame, until queued).
    pub(super) fn pending(&self) -> usize {
        let shared = self.shared.as_ref().map_or(0, |shared| {
            let queue = shared.batch.queue.len();
            match shared.queued {
                true => queue - broadcast::shared_metrics_frame(&shared.batch).values,
                false => queue,
            }
        });
        self.held.len() + shared
    }

    /// This interval's frame, in the form `make` gives it (the shared frame's is made once for
    /// every dashboard), and how many values it carries; it becomes the queued one. `None`
    /// when there is nothing to send (a frame with no values is never sent), or this
    /// interval's frame was made already: one frame a batch taken, however fast the client
    /// reads.
    pub(super) fn next_frame<T: Clone + Send + Sync + 'static>(
        &mut self,
        make: impl Fn(Bytes) -> T,
    ) -> Option<(T, usize)> {
        if !std::mem::take(&mut self.due) {
            return None;
        }
        if let Some(shared) = &mut self.shared {
            let frame = broadcast::shared_metrics_frame(&shared.batch);
            if shared.queued || frame.values == 0 {
                return None;
            }
            shared.queued = true;
            self.queued = Queued::Shared(Arc::clone(&shared.batch));
            return Some((frame.frame_as(make), frame.values));
        }
        let max_bytes = match self.max_bytes {
            0 => DEFAULT_METRICS_MAX_BYTES,
            max => max,
        };
        let (frame, values) = self.held.take_frame(self.time_ms, max_bytes)?;
        let count = values.len();
        self.queued = Queued::Values(values);
        Some((make(frame), count))
    }
}

#[cfg(test)]
impl Queued {
    fn len(&self) -> usize {
        match self {
            Queued::Values(values) => values.len(),
            Queued::Shared(batch) => broadcast::shared_metrics_frame(batch).values,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Metric;

    /// Large enough for every frame of these tests unless one says otherwise.
    const MAX: usize = 256 * 1024;

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
        bounded(time_ms, values, MAX)
    }

    fn bounded(time_ms: i64, values: &[Arc<Event>], max_bytes: usize) -> Arc<MetricBatch> {
        Arc::new(MetricBatch::new(
            time_ms as u64,
            time_ms,
            values.to_vec(),
            max_bytes,
        ))
    }

    /// The batch the engine makes after `last` when `moved` moved: what `last`'s shared frame
    /// could not carry first (at the values `moved` holds, else as they were), then the rest.
    fn after(last: &MetricBatch, moved: &[Arc<Event>]) -> Arc<MetricBatch> {
        let moved_now: HashSet<ByKey> = moved.iter().cloned().map(ByKey).collect();
        let newest = |e: &Event| {
            let key = ByKey(Arc::new(e.clone()));
            Some(Arc::clone(&moved_now.get(&key).unwrap_or(&key).0))
        };
        let queue = broadcast::carried_then_moved(broadcast::carried(last, newest), moved);
        let seq = last.seq + 1;
        Arc::new(MetricBatch::with_queue(
            seq,
            seq as i64,
            moved.to_vec(),
            queue,
            last.max_bytes,
        ))
    }

    /// The next frame's bytes and values (the frame as it is serialized).
    fn next(live: &mut LiveValues) -> Option<(Bytes, usize)> {
        live.next_frame(|bytes| bytes)
    }

    /// The next interval's frame when nothing moved in it (the engine's batch is empty).
    fn next_interval(live: &mut LiveValues) -> Option<(Bytes, usize)> {
        live.due = true;
        next(live)
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
        let (frame, count) = next(&mut live).unwrap();
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
            next_interval(&mut live).is_none(),
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
        let (frame, _) = next(&mut live).unwrap();
        assert_eq!(values(&frame), [("web1".into(), "disk".into(), 1.0)]);
        live.merge(&batch(2, &[value("web1", "cpu", 3.0)]), disk_only);
        assert!(next(&mut live).is_none());
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
        next(&mut live).unwrap();
        for interval in 2..1000 {
            live.merge(&batch(interval, &[value("a", "s", interval as f64)]), all);
            live.unsent();
            next(&mut live).unwrap();
            assert!(
                live.pending() == 0 && live.queued.len() == 2,
                "bounded by the keys"
            );
            assert!(
                live.held.order.len() <= 2 * 2 + 64,
                "stale order entries bounded"
            );
        }
        live.merge(&batch(1000, &[value("c", "s", 7.0)]), all);
        live.unsent();
        let (frame, _) = next(&mut live).unwrap();
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
        next(&mut live).unwrap();
        live.merge(&batch(2, &[value("a", "s", 2.0)]), all);
        live.unsent();
        let (frame, _) = next(&mut live).unwrap();
        assert_eq!(values(&frame), [("a".into(), "s".into(), 2.0)]);
    }

    /// The bound is the batch's `max_bytes`: a frame holds what fits, the oldest values first,
    /// and the rest wait for the next frames.
    #[test]
    fn a_frame_holds_at_most_max_bytes_and_the_rest_wait_oldest_first() {
        let mut live = LiveValues::default();
        let many: Vec<_> = (0..25)
            .map(|i| value(&format!("h{i:02}"), "s", 1.0))
            .collect();
        let one = broadcast::metrics_frame(1, MAX, &many[..1]).0.len();
        let ten = broadcast::metrics_frame(1, MAX, &many[..10]).0.len();
        live.merge(&bounded(1, &many[..20], ten), all);
        live.merge(&bounded(2, &many[20..], ten), all);
        let mut hosts = Vec::new();
        let mut counts = Vec::new();
        while let Some((frame, count)) = next_interval(&mut live) {
            assert!(frame.len() <= ten && frame.len() > one, "{}", frame.len());
            hosts.extend(values(&frame).into_iter().map(|(h, _, _)| h));
            counts.push(count);
            live.sent();
        }
        assert_eq!(counts, [10, 10, 5]);
        let expected: Vec<_> = (0..25).map(|i| format!("h{i:02}")).collect();
        assert_eq!(hosts, expected, "in the order they came");
    }

    #[test]
    fn a_frame_is_bounded_in_bytes_and_a_value_larger_than_the_bound_goes_alone() {
        let mut live = LiveValues::default();
        let long = "d".repeat(100 * 1024);
        let many: Vec<_> = (0..5)
            .map(|i| {
                Arc::new(Event {
                    description: Some(if i == 4 { long.repeat(3) } else { long.clone() }),
                    ..(*value(&format!("h{i}"), "s", 1.0)).clone()
                })
            })
            .collect();
        live.merge(&bounded(1, &many, 256 * 1024), all);
        let mut counts = Vec::new();
        while let Some((frame, count)) = next_interval(&mut live) {
            assert!(count == 1 || frame.len() <= 256 * 1024, "{}", frame.len());
            counts.push(count);
            live.sent();
        }
        assert_eq!(counts, [2, 2, 1], "300 KiB alone, rather than never");
    }

    #[test]
    fn a_new_view_forgets_what_waited() {
        let mut live = LiveValues::default();
        live.merge(&batch(1, &[value("a", "s", 1.0)]), all);
        live.clear();
        assert!(next(&mut live).is_none());
        assert!(next_interval(&mut live).is_none());
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
        let (frame, _) = next(&mut live).unwrap();
        let v = &rows(&frame)[0];
        assert!(v["metric"].is_null() && v["description"].is_null() && v["service"].is_null());
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn clients_without_a_query_share_one_serialized_frame() {
        let shared = batch(5, &[value("a", "s", 1.0), value("b", "s", 2.0)]);
        let (mut one, mut two) = (LiveValues::default(), LiveValues::default());
        assert!(one.take_whole(&shared) && two.take_whole(&shared));
        let (first, n) = next(&mut one).unwrap();
        let (second, _) = next(&mut two).unwrap();
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

    /// Issue 23: what a transport sends of a shared frame (its text type, whose constructor
    /// checks UTF-8) is made once, however many dashboards send it.
    #[test]
    fn a_shared_frame_is_made_into_what_the_socket_sends_once() {
        let shared = batch(5, &[value("a", "s", 1.0)]);
        let made = std::sync::atomic::AtomicUsize::new(0);
        let make = |bytes: Bytes| {
            made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Arc::<str>::from(String::from_utf8(bytes.to_vec()).unwrap())
        };
        let mut texts = Vec::new();
        for _ in 0..100 {
            let mut live = LiveValues::default();
            assert!(live.take_whole(&shared));
            texts.push(live.next_frame(make).unwrap().0);
        }
        assert_eq!(made.into_inner(), 1);
        assert!(texts.iter().all(|t| t.as_ptr() == texts[0].as_ptr()));
    }

    #[test]
    fn a_whole_frame_taken_back_merges_under_newer_values() {
        let mut live = LiveValues::default();
        assert!(live.take_whole(&batch(1, &[value("a", "s", 1.0), value("b", "s", 1.0)])));
        next(&mut live).unwrap();
        // The next batch arrives while that frame is still queued: taken whole too, then the
        // old frame comes back unsent.
        assert!(live.take_whole(&batch(2, &[value("a", "s", 2.0)])));
        live.unsent();
        assert_eq!(live.pending(), 2);
        let (frame, _) = next(&mut live).unwrap();
        assert_eq!(
            values(&frame),
            [("a".into(), "s".into(), 2.0), ("b".into(), "s".into(), 1.0)]
        );
        // Something waiting means a batch is merged, not taken whole.
        live.merge(&batch(3, &[value("c", "s", 3.0)]), all);
        assert!(!live.take_whole(&batch(4, &[value("c", "s", 4.0)])));
    }

    /// Batches of the same `keys` keys (in key order, as the engine makes them), each value
    /// `interval`.
    fn same_keys(interval: i64, keys: usize) -> Vec<Arc<Event>> {
        (0..keys)
            .map(|i| value("h", &format!("s{i:05}"), interval as f64))
            .collect()
    }

    /// Issue 23: a batch larger than one frame, taken whole: one shared frame per interval,
    /// the same bytes for every client, and the engine carries the rest into the next batches
    /// (first, ahead of nothing new here), so together they carry every value once.
    #[test]
    fn a_batch_larger_than_a_frame_reaches_a_client_whole_across_intervals() {
        let many = same_keys(1, 2000);
        let max = 16 * 1024;
        let mut shared = bounded(1, &many, max);
        let (mut one, mut two) = (LiveValues::default(), LiveValues::default());
        let mut seen = std::collections::BTreeMap::new();
        for interval in 1.. {
            assert!(one.take_whole(&shared) && two.take_whole(&shared));
            let Some((frame, count)) = next(&mut one) else {
                break;
            };
            let (theirs, _) = next(&mut two).unwrap();
            assert_eq!(frame.as_ptr(), theirs.as_ptr(), "shared, serialized once");
            assert!(frame.len() <= max && count == values(&frame).len());
            assert!(next(&mut one).is_none(), "one frame an interval");
            for (_, s, m) in values(&frame) {
                assert!(seen.insert(s, m).is_none(), "every value once");
            }
            one.sent();
            two.sent();
            assert!(interval < 100);
            shared = after(&shared, &[]);
        }
        assert_eq!(seen.len(), many.len(), "every value once");
    }

    /// Issue 23, the shared frames: more keys move every interval than one frame carries. A
    /// client that reads every frame gets one frame an interval within the bound, and every
    /// key's latest value within ceil(keys ÷ values per frame) + 1 intervals of its move;
    /// one that reads every third interval holds one frame, no more, and still gets them all.
    #[test]
    fn more_moving_keys_than_a_frame_holds_all_come_within_their_share_of_intervals() {
        let keys = 3000;
        let max = 16 * 1024;
        // Values a frame holds at least (the metrics here have fewer digits).
        let per_frame = broadcast::metrics_frame(0, max, &same_keys(100_000, keys)).1;
        let bound = keys.div_ceil(per_frame) + 1;
        assert!(bound >= 4, "{per_frame} values a frame");
        for reads_every in [1, 3] {
            let mut live = LiveValues::default();
            let mut shared = bounded(0, &same_keys(0, 0), max);
            // Interval each key's frame was made at, as last read, and the value.
            let mut got: std::collections::BTreeMap<String, (usize, f64)> = Default::default();
            let mut last = None;
            let bound = bound * reads_every + reads_every;
            for interval in 1..=10 * bound {
                shared = after(&shared, &same_keys(interval as i64, keys));
                // The frame queued last interval was read, or is taken back unsent.
                if interval % reads_every == 0 {
                    live.sent();
                    if let Some((at, frame)) = last.take() {
                        for (_, service, metric) in values(&frame) {
                            got.insert(service, (at, metric));
                        }
                    }
                } else {
                    live.unsent();
                }
                live.take_whole(&shared);
                let (frame, _) = next(&mut live).unwrap();
                assert!(frame.len() <= max, "{}", frame.len());
                assert!(next(&mut live).is_none(), "one frame an interval");
                assert!(live.pending() <= keys, "nothing held but one value a key");
                last = Some((interval, frame));
                if interval > 2 * bound {
                    assert_eq!(got.len(), keys);
                    for (service, (at, _)) in &got {
                        assert!(interval - at <= bound, "{service} at {at}, now {interval}");
                    }
                }
            }
            assert!(
                got.values().all(|(at, m)| *m == *at as f64),
                "latest values"
            );
        }
    }

    /// Issue 23, a dashboard with a query: its own values go oldest first, a frame within the
    /// bound an interval; every key comes within ceil(keys ÷ values per frame) + 1 intervals,
    /// and a newer value of a waiting key goes in its place.
    #[test]
    fn a_query_with_more_moving_keys_than_a_frame_holds_gets_them_all_oldest_first() {
        let keys = 3000;
        let max = 16 * 1024;
        let per_frame = broadcast::metrics_frame(0, max, &same_keys(100_000, keys)).1;
        let bound = keys.div_ceil(per_frame) + 1;
        let odd = |e: &Event| {
            e.service
                .as_deref()
                .is_some_and(|s| !s.ends_with(['0', '2']))
        };
        let wanted = (0..keys).filter(|i| i % 10 != 0 && i % 10 != 2).count();
        let mut live = LiveValues::default();
        let mut got: std::collections::BTreeMap<String, (usize, f64)> = Default::default();
        for interval in 1..=10 * bound {
            live.sent();
            live.merge(
                &bounded(interval as i64, &same_keys(interval as i64, keys), max),
                odd,
            );
            let (frame, _) = next(&mut live).unwrap();
            assert!(frame.len() <= max);
            assert!(next(&mut live).is_none(), "one frame an interval");
            assert!(live.pending() <= wanted);
            for (_, service, metric) in values(&frame) {
                got.insert(service, (interval, metric));
            }
            if interval > 2 * bound {
                assert_eq!(got.len(), wanted);
                for (service, (at, metric)) in &got {
                    assert!(interval - at <= bound, "{service} at {at}, now {interval}");
                    assert_eq!(*metric, *at as f64, "{service}: the latest value");
                }
            }
        }
    }

    /// Something merged while on the shared frames: the frame that did not leave and what the
    /// shared queue still owed go on as the client's own values, under the newer ones.
    #[test]
    fn a_merge_midway_through_shared_frames_keeps_every_latest_value() {
        let many = same_keys(1, 2000);
        let max = 16 * 1024;
        let mut live = LiveValues::default();
        let first = bounded(1, &many, max);
        assert!(live.take_whole(&first));
        let (_, sent) = next(&mut live).unwrap();
        live.sent();
        let second = after(&first, &[]);
        assert!(live.take_whole(&second));
        next(&mut live).unwrap();
        live.unsent();
        let third = after(
            &second,
            &[value("h", "s00000", 2.0), value("h", "new", 2.0)],
        );
        live.merge(&third, all);
        assert_eq!(live.pending(), many.len() - sent + 2);
        let mut seen = std::collections::BTreeMap::new();
        while let Some((frame, _)) = next_interval(&mut live) {
            seen.extend(values(&frame).into_iter().map(|(_, s, m)| (s, m)));
            live.sent();
        }
        assert_eq!(seen.len(), many.len() - sent + 2);
        assert_eq!(seen["s00000"], 2.0);
        assert_eq!(seen["new"], 2.0);
        assert!(seen.values().filter(|m| **m == 1.0).count() == many.len() - sent);
    }

    /// A shared frame taken back unsent goes back in place while its batch is the newest; a
    /// newer batch whose shared frame holds its keys replaces it. One whose frame does not
    /// leaves the client with its values as its own, first, and the rest of the queue after.
    #[test]
    fn an_unsent_shared_frame_is_dropped_for_a_newer_batch_or_goes_back_in_place() {
        let keys = 3;
        let mut live = LiveValues::default();
        let first = batch(1, &same_keys(1, keys));
        assert!(live.take_whole(&first));
        let (frame, _) = next(&mut live).unwrap();
        live.unsent();
        assert_eq!(live.pending(), keys, "back in place");
        let (again, _) = next_interval(&mut live).unwrap();
        assert_eq!(frame.as_ptr(), again.as_ptr());

        live.unsent();
        let second = after(&first, &same_keys(2, keys));
        assert!(
            live.take_whole(&second),
            "its frame holds every key: taken whole"
        );
        assert_eq!(
            live.pending(),
            keys,
            "the first's frame dropped: the second's values are newer"
        );
        let (frame, _) = next(&mut live).unwrap();
        assert_eq!(values(&frame).len(), keys);
        assert!(
            values(&frame).iter().all(|(_, _, m)| *m == 2.0),
            "every value the second's"
        );

        // Frames smaller than the keys: the unsent one's go first, as the client's own.
        let max = broadcast::metrics_frame(0, MAX, &same_keys(3, 2)).0.len();
        let mut live = LiveValues::default();
        let third = bounded(3, &same_keys(3, keys), max);
        assert!(live.take_whole(&third));
        let (frame, 2) = next(&mut live).unwrap() else {
            panic!("two values a frame");
        };
        live.unsent();
        let fourth = after(&third, &same_keys(4, keys));
        assert!(
            !live.take_whole(&fourth),
            "its frame lacks the unsent frame's keys"
        );
        let (own, _) = next(&mut live).unwrap();
        let services = |f: &Bytes| values(f).into_iter().map(|(_, s, _)| s).collect::<Vec<_>>();
        assert_eq!(
            services(&own),
            services(&frame),
            "the keys that waited longest"
        );
        assert!(
            values(&own).iter().all(|(_, _, m)| *m == 4.0),
            "at their latest"
        );
        live.sent();
        assert!(next(&mut live).is_none(), "one frame an interval");
        let (rest, 1) = next_interval(&mut live).unwrap() else {
            panic!("the last key");
        };
        assert_eq!(services(&rest), ["s00002"]);
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
        let one_value = broadcast::metrics_frame(0, MAX, &[value("a", "s", 2.0)])
            .0
            .len();
        assert!(
            !live.take_whole(&bounded(2, &[value("a", "s", 2.0)], one_value)),
            "b lacks"
        );
        let (_, queued) = next(&mut live).unwrap();
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
        let (frame, _) = next(&mut live).unwrap();
        assert_eq!(
            frame.as_ptr(),
            broadcast::shared_metrics_frame(&all_keys).frame.as_ptr()
        );
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
        let (frame, _) = next(&mut live).unwrap();
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
