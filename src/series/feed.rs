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

/// See the module doc; cheap to clone (before its first send).
#[derive(Clone)]
pub struct SeriesFeed {
    pub(super) tx: SyncSender<Points>,
    pub(super) counters: Arc<SeriesCounters>,
    /// The slot names of dropped batches, each slot's latest, sent ahead of the next batch's
    /// own: the series thread must never see a point of a slot before the slot's current name
    /// (see [`Points`]). At most one per slot: bounded by the index's keys.
    unsent_names: BTreeMap<u32, Box<[u8]>>,
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
        }
    }

    /// Hands the points of an applied batch (made by the engine as it applied it) to the series
    /// thread; never waits (see the module doc).
    pub fn send(&mut self, mut points: Points) {
        if points.not_finite > 0 {
            self.counters
                .dropped(DropReason::NotFinite, points.not_finite);
        }
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

    #[test]
    fn the_names_of_a_dropped_batch_go_ahead_of_the_next_batch_sent() {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let counters = Arc::new(SeriesCounters::default());
        let mut feed = SeriesFeed::new(tx, Arc::clone(&counters));
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
        let names: Vec<(u32, KeyName)> = sent.names().map(|(s, n)| (s, name_of(n))).collect();
        assert_eq!(names, [(0, name("c")), (1, name("b"))]);
        // Sent once: the batch after that carries none.
        feed.send(Points::one(2, "d", "cpu", 4, 6.0));
        assert_eq!(rx.try_recv().map(|p| p.names().count()), Ok(1));
    }
}
