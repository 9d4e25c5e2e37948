//! The engine's side of the series: the points of each applied batch (the engine's index notes
//! them as it applies each event, each named by the index's own shared key), handed to the series
//! thread over a bounded channel without ever waiting.
//!
//! Why never wait: series are derived data, and the engine's promise is ingest (every
//! acknowledged event applied, in order, at the rate senders send). A full channel — the series
//! thread behind its disk — drops the batch's points and counts them
//! (`statecast_series_points_dropped_total{reason="queue-full"}`) rather than slowing the
//! engine. The channel is bounded twice: in batches and in points ([`MAX_QUEUED_POINTS`]), since
//! a batch may hold 100,000 events.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;

use super::key::Point;
use super::{DropReason, SeriesCounters};

/// Points waiting for the series thread at most (≈ 25 MiB with short names).
pub const MAX_QUEUED_POINTS: usize = 256 * 1024;
/// Batches waiting for the series thread at most.
pub const QUEUE_BATCHES: usize = 4096;

/// See the module doc; cheap to clone.
#[derive(Clone)]
pub struct SeriesFeed {
    pub(super) tx: SyncSender<Vec<Point>>,
    pub(super) counters: Arc<SeriesCounters>,
}

impl std::fmt::Debug for SeriesFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesFeed").finish_non_exhaustive()
    }
}

impl SeriesFeed {
    /// Hands the points of an applied batch (the engine's `take_points`) to the series thread;
    /// never waits (see the module doc). NaN and infinities are not stored: counted.
    pub fn send(&self, mut points: Vec<Point>) {
        let with_metric = points.len();
        points.retain(|point| point.value.is_finite());
        let n = points.len();
        if n < with_metric {
            self.counters
                .dropped(DropReason::NotFinite, (with_metric - n) as u64);
        }
        if n == 0 {
            return;
        }
        let queued = self.counters.queued.fetch_add(n, Ordering::Relaxed);
        if queued + n > MAX_QUEUED_POINTS {
            self.counters.queued.fetch_sub(n, Ordering::Relaxed);
            self.counters.dropped(DropReason::QueueFull, n as u64);
            return;
        }
        match self.tx.try_send(points) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.queued.fetch_sub(n, Ordering::Relaxed);
                self.counters.dropped(DropReason::QueueFull, n as u64);
            }
        }
    }
}
