//! The engine's side of the series: the points of each applied batch, handed to the series
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

use super::key::Points;
use super::{DropReason, SeriesCounters};
use crate::event::Event;

/// Points waiting for the series thread at most (≈ 25 MiB with short names).
pub const MAX_QUEUED_POINTS: usize = 256 * 1024;
/// Batches waiting for the series thread at most.
pub const QUEUE_BATCHES: usize = 4096;

/// See the module doc; cheap to clone.
#[derive(Clone)]
pub struct SeriesFeed {
    pub(super) tx: SyncSender<Points>,
    pub(super) counters: Arc<SeriesCounters>,
}

impl std::fmt::Debug for SeriesFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesFeed").finish_non_exhaustive()
    }
}

impl SeriesFeed {
    /// The points of `events`: each event with a finite metric (NaN and infinities are not
    /// stored: counted). Taken before the engine applies the batch, which moves what it keeps.
    pub fn points(&self, events: &[Event]) -> Points {
        // Exactly what the keys take (no more than the batch already holds): one allocation.
        let length = |text: &Option<String>| text.as_ref().map_or(0, String::len);
        let key_bytes = events
            .iter()
            .filter(|event| event.metric.is_some())
            .map(|event| length(&event.host) + length(&event.service))
            .sum();
        let mut points = Points::with_capacity(events.len(), key_bytes);
        let mut not_finite = 0;
        for event in events {
            let Some(metric) = event.metric else { continue };
            let value = metric.as_f64();
            if !value.is_finite() {
                not_finite += 1;
                continue;
            }
            let (host, service) = (event.host.as_deref(), event.service.as_deref());
            points.push(host, service, event.time_micros, value);
        }
        if not_finite > 0 {
            self.counters.dropped(DropReason::NotFinite, not_finite);
        }
        points
    }

    /// Hands the points of an applied batch to the series thread; never waits (see the module
    /// doc).
    pub fn send(&self, points: Points) {
        let n = points.len();
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
