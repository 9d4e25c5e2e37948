//! The engine's side of the series: the points of each applied batch, handed to the series
//! thread over a bounded channel without ever waiting.
//!
//! Why never wait: series are derived data, and the engine's promise is ingest (every
//! acknowledged event applied, in order, at the rate senders send). A full channel — the series
//! thread behind its disk — drops the batch's points and counts them
//! (`statecast_series_points_dropped_total{reason="queue-full"}`) rather than slowing the
//! engine. The channel is bounded twice: in batches and in points ([`MAX_QUEUED_POINTS`]), since
//! a batch may hold 100,000 events. The slot names a dropped batch carried are not dropped
//! with it: they go ahead of the next batch sent (see [`super::key::Points`]).
//!
//! Why batches are gathered before they are sent: under load the engine applies tens of
//! thousands of small batches a second (a Riemann message of 100 events is one), and the series
//! thread, faster than the engine, sleeps between them — each send would then wake it, a system
//! call and a task switch per batch on a machine whose cores ingest needs. The feed gathers the
//! points of consecutive batches ([`SEND_AT_POINTS`] at most) and sends them when the engine has
//! nothing more waiting ([`SeriesFeed::flush`]) or the gathered batch is full: one wake-up per
//! burst of work, and no delay when the engine is idle.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;

use super::key::Points;
use super::{DropReason, SeriesCounters};

/// Points waiting for the series thread at most (24 bytes each, names aside: ≈ 6 MiB).
pub const MAX_QUEUED_POINTS: usize = 256 * 1024;
/// Batches waiting for the series thread at most.
pub const QUEUE_BATCHES: usize = 4096;
/// Points gathered from consecutive batches before they are sent without waiting for the
/// engine to be idle (≈ 192 KiB).
pub const SEND_AT_POINTS: usize = 8192;

/// See the module doc; cheap to clone (before its first send).
#[derive(Clone)]
pub struct SeriesFeed {
    pub(super) tx: SyncSender<Points>,
    pub(super) counters: Arc<SeriesCounters>,
    /// The slot names of dropped batches, each slot's latest, sent ahead of the next batch's
    /// own: the series thread must never see a point of a slot before the slot's current name
    /// (see [`Points`]). At most one per slot: bounded by the index's keys.
    unsent_names: BTreeMap<u32, Box<[u8]>>,
    /// Points of applied batches not sent yet (see the module doc): at most
    /// [`SEND_AT_POINTS`] plus one batch.
    gathered: Points,
}

impl std::fmt::Debug for SeriesFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesFeed").finish_non_exhaustive()
    }
}

impl SeriesFeed {
    pub(super) fn new(tx: SyncSender<Points>, counters: Arc<SeriesCounters>) -> Self {
        Self {
            tx,
            counters,
            unsent_names: BTreeMap::new(),
            gathered: Points::default(),
        }
    }

    /// Takes the points of an applied batch (made by the engine as it applied it), for the
    /// series thread: sent with the batches after it at the next [`Self::flush`], or now when
    /// enough are gathered; never waits (see the module doc).
    pub fn add(&mut self, mut points: Points) {
        // Counted now: what is gathered carries points and names only.
        if points.not_finite > 0 {
            self.counters
                .dropped(DropReason::NotFinite, points.not_finite);
            points.not_finite = 0;
        }
        // A batch that names slots goes after what is gathered, never into it: its names must
        // reach the series thread after the points gathered before them (a reused slot's old
        // key) and before its own.
        if points.has_names() {
            self.flush();
        }
        if self.gathered.is_empty() && !self.gathered.has_names() {
            self.gathered = points;
        } else {
            self.gathered.append(points);
        }
        if self.gathered.len() >= SEND_AT_POINTS {
            self.flush();
        }
    }

    /// Sends what is gathered: the engine calls it when it has nothing more waiting.
    pub fn flush(&mut self) {
        if !self.gathered.is_empty() || self.gathered.has_names() {
            let gathered = std::mem::take(&mut self.gathered);
            self.send(gathered);
        }
    }

    /// Hands gathered points to the series thread; never waits (see the module doc).
    fn send(&mut self, mut points: Points) {
        let n = points.len();
        if n == 0 {
            self.keep_names(&points);
            return;
        }
        let queued = self.counters.queued.fetch_add(n, Ordering::Relaxed);
        if queued + n > MAX_QUEUED_POINTS {
            self.counters.queued.fetch_sub(n, Ordering::Relaxed);
            self.counters.dropped(DropReason::QueueFull, n as u64);
            self.keep_names(&points);
            return;
        }
        let unsent = std::mem::take(&mut self.unsent_names);
        if !unsent.is_empty() {
            let unsent: Vec<(u32, Box<[u8]>)> = unsent.into_iter().collect();
            points.prepend_names(&unsent);
        }
        match self.tx.try_send(points) {
            Ok(()) => {}
            Err(TrySendError::Full(points) | TrySendError::Disconnected(points)) => {
                self.counters.queued.fetch_sub(n, Ordering::Relaxed);
                self.counters.dropped(DropReason::QueueFull, n as u64);
                self.keep_names(&points);
            }
        }
    }

    /// Keeps the names of a batch that was not sent, for the next one.
    fn keep_names(&mut self, points: &Points) {
        for (slot, name) in points.names() {
            self.unsent_names.insert(slot, name.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::key::{name_of, KeyName};

    fn name(host: &str) -> KeyName {
        KeyName {
            host: Some(host.into()),
            service: Some("cpu".into()),
        }
    }

    /// A feed whose channel holds `batches` batches, its receiving end and its counters.
    fn feed_with_room(
        batches: usize,
    ) -> (
        SeriesFeed,
        std::sync::mpsc::Receiver<Points>,
        Arc<SeriesCounters>,
    ) {
        let (tx, rx) = std::sync::mpsc::sync_channel(batches);
        let counters = Arc::new(SeriesCounters::default());
        (SeriesFeed::new(tx, Arc::clone(&counters)), rx, counters)
    }

    /// The (slot, name) pairs a batch carries, in order.
    fn names_in(points: &Points) -> Vec<(u32, KeyName)> {
        points.names().map(|(s, n)| (s, name_of(n))).collect()
    }

    #[test]
    fn batches_are_gathered_until_flushed_and_a_batch_naming_slots_starts_anew() {
        let (mut feed, rx, counters) = feed_with_room(16);
        feed.add(Points::one(0, "a", "cpu", 1, 1.0));
        let mut later = Points::with_capacity(1);
        later.push(0, 2, 2.0);
        later.not_finite = 1;
        feed.add(later);
        assert!(rx.try_recv().is_err(), "nothing sent before the flush");
        // Slot 0 is reused for another key: its name must not precede the old key's points.
        feed.add(Points::one(0, "b", "cpu", 3, 3.0));
        let first = rx.try_recv().expect("the gathered batches, sent");
        assert_eq!(first.len(), 2);
        assert_eq!(names_in(&first), [(0, name("a"))]);
        assert!(
            rx.try_recv().is_err(),
            "the naming batch waits for the flush"
        );
        feed.flush();
        let second = rx.try_recv().expect("the naming batch");
        assert_eq!((second.len(), names_in(&second)), (1, vec![(0, name("b"))]));
        let not_finite = &counters.dropped[DropReason::NotFinite as usize];
        assert_eq!(SeriesCounters::get(not_finite), 1);
        // Enough points are sent without a flush.
        for time in 0..SEND_AT_POINTS as i64 {
            let mut points = Points::with_capacity(1);
            points.push(0, time, 1.0);
            feed.add(points);
        }
        assert_eq!(rx.try_recv().map(|p| p.len()), Ok(SEND_AT_POINTS));
        feed.flush();
        assert!(
            rx.try_recv().is_err(),
            "a flush with nothing gathered sends nothing"
        );
    }

    #[test]
    fn the_names_of_a_dropped_batch_go_ahead_of_the_next_batch_sent() {
        let (mut feed, rx, counters) = feed_with_room(1);
        feed.send(Points::one(0, "a", "cpu", 1, 1.0));
        // The queue is full: this batch, which names slot 1 and reuses slot 0, is dropped.
        let mut dropped = Points::one(1, "b", "cpu", 2, 2.0);
        dropped.name(0, name("c").packed().bytes());
        dropped.push(0, 2, 3.0);
        feed.send(dropped);
        let dropped_points = &counters.dropped[DropReason::QueueFull as usize];
        assert_eq!(SeriesCounters::get(dropped_points), 2);
        assert_eq!(rx.try_recv().map(|p| p.len()), Ok(1));
        // The next batch names nothing itself: it carries the dropped batch's names first.
        let mut next = Points::with_capacity(2);
        next.push(0, 3, 4.0);
        next.push(1, 3, 5.0);
        feed.send(next);
        let sent = rx.try_recv().expect("a batch");
        assert_eq!(names_in(&sent), [(0, name("c")), (1, name("b"))]);
        // Sent once: the batch after that carries none.
        feed.send(Points::one(2, "d", "cpu", 4, 6.0));
        assert_eq!(rx.try_recv().map(|p| p.names().count()), Ok(1));
    }
}
