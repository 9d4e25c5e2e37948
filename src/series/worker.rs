//! The series thread: takes the points the engine hands over, keeps them in the [`Collector`],
//! and once a second closes buckets whose time has passed, writes the closed ones in one
//! transaction, forgets keys past the retention and prunes a slice of old buckets.
//!
//! A blocking thread of its own: redb is synchronous and its durable commit waits for the disk,
//! which must never hold up the engine (the engine only ever `try_send`s to it, `feed`).
//!
//! A failing store (disk full, I/O errors) is retried — the file reopened first, since redb
//! refuses every transaction after an I/O error; a second after a failed attempt, or longer when
//! attempts are long (`retry_delay`) — while closed buckets wait in memory up to
//! [`super::collector::MAX_PENDING`]; past that they are lost and counted. The log says so once
//! when it starts failing and once when it works again; `/metrics` counts each failed attempt.
//! Ingest never notices.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::closed::ClosedBuckets;
use super::collector::{Collector, Refused};
use super::key::Points;
use super::{DropReason, SeriesCounters, SeriesSettings};
use crate::event::now_micros;
use crate::rate_limited_log::RateLimitedLog;

/// How often buckets are closed by the clock, written and pruned.
const TICK: Duration = Duration::from_secs(1);
/// Closed buckets written per transaction at most.
const WRITE_BATCH: usize = 64 * 1024;
/// The longest a failing store rests between two attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);
/// Keys whose old buckets are pruned per tick.
const PRUNE_KEYS_PER_TICK: usize = 10_000;
/// Points stamped further than this ahead of this node's clock are dropped (counted): a client
/// with a wrong clock must not fill the disk with buckets that no retention reaches for years.
const FUTURE_MICROS: i64 = 10 * 60 * 1_000_000;

pub(super) struct Worker {
    pub(super) collector: Arc<Mutex<Collector>>,
    pub(super) store: Arc<dyn ClosedBuckets>,
    pub(super) counters: Arc<SeriesCounters>,
    pub(super) settings: SeriesSettings,
    /// Reopens the store after a failure (the disk store; nothing for memory).
    pub(super) reopen: Option<Box<dyn Fn() -> Result<(), super::closed::StoreFailed> + Send>>,
    /// Keys forgotten whose deletion is not yet written.
    pub(super) forget: Vec<u64>,
    /// Ids still to prune in this pass.
    pub(super) prune_queue: Vec<u64>,
    pub(super) failures: RateLimitedLog,
    /// Whether the current failure of the store was logged (its end is then logged too).
    pub(super) failure_logged: bool,
    /// While the store fails, when the next attempt (reopen and write) may start.
    pub(super) retry_at: Option<Instant>,
}

/// How long a failing store rests after an attempt that took `took`: a second, or nine times the
/// attempt when that is longer (at most [`MAX_RETRY_DELAY`]). Reopening a redb file after a
/// failure repairs it, which reads the whole file, again at every attempt while the disk stays
/// full: retrying every second kept the series thread, and the disk, busy with repairs for as
/// long as the outage lasted (a 69 MiB `series.redb` on a full tmpfs, debug build: 40 % of a
/// core; 16 % with this rest, the points it took included).
fn retry_delay(took: Duration) -> Duration {
    (took * 9).clamp(TICK, MAX_RETRY_DELAY)
}

impl Worker {
    pub(super) fn run(mut self, rx: Receiver<Points>) {
        let mut next_tick = Instant::now() + TICK;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(points) => {
                    let mut batches = vec![points];
                    // Whatever else waits, under one lock.
                    while batches.len() < 64 {
                        match rx.try_recv() {
                            Ok(points) => batches.push(points),
                            Err(_) => break,
                        }
                    }
                    self.take(batches);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_tick {
                let more = self.tick(now_micros() / 1000);
                // A backlog (a backfill of old points closes many buckets at once) is written
                // batch after batch rather than one batch a second.
                next_tick = Instant::now() + if more { Duration::ZERO } else { TICK };
            }
        }
        self.stop();
    }

    /// Adds points to their open buckets.
    fn take(&mut self, batches: Vec<Points>) {
        let now = now_micros();
        let oldest = now.saturating_sub(self.settings.retention_ms.saturating_mul(1000));
        let newest = now.saturating_add(FUTURE_MICROS);
        let store = Arc::clone(&self.store);
        let mut stored = |slot| store.get(slot);
        let Ok(mut collector) = self.collector.lock() else {
            return;
        };
        let mut added = 0;
        for points in batches {
            let n = points.len();
            for (slot, name) in points.names() {
                collector.name(slot, name);
            }
            for &point in points.points() {
                let outcome = if point.time_micros < oldest {
                    Err(DropReason::TooOld)
                } else if point.time_micros > newest {
                    Err(DropReason::Future)
                } else {
                    collector
                        .add(point, &mut stored)
                        .map_err(|refused| match refused {
                            Refused::MaxKeys => DropReason::MaxKeys,
                            Refused::Store => DropReason::StoreFailing,
                            // Its name was lost with a dropped batch (see `Refused`).
                            Refused::Unnamed => DropReason::QueueFull,
                        })
                };
                match outcome {
                    Ok(()) => added += 1,
                    Err(why) => self.counters.dropped(why, 1),
                }
            }
            self.counters.queued.fetch_sub(n, Ordering::Relaxed);
        }
        SeriesCounters::add(&self.counters.points, added);
        self.counters
            .keys
            .store(collector.len() as u64, Ordering::Relaxed);
        self.counters
            .pending
            .store(collector.pending_len() as u64, Ordering::Relaxed);
    }

    /// Closes buckets by the clock, writes what is closed, forgets and prunes (see the module
    /// doc). Whether a full batch was written and more wait.
    fn tick(&mut self, now_ms: i64) -> bool {
        let written = {
            let Ok(mut collector) = self.collector.lock() else {
                return false;
            };
            collector.close_due(now_ms);
            let cutoff = now_ms.saturating_sub(self.settings.retention_ms);
            let forgotten = collector.forget_before(cutoff.saturating_mul(1000));
            self.forget.extend(forgotten);
            self.counters
                .keys
                .store(collector.len() as u64, Ordering::Relaxed);
            collector.to_write(WRITE_BATCH)
        };
        let full = written.1.len() == WRITE_BATCH;
        let wrote = self.write(written);
        self.prune(now_ms);
        full && wrote
    }

    /// Writes keys and closed buckets in one durable transaction; on failure they stay held and
    /// the next tick tries again.
    fn write(&mut self, (keys, buckets): super::collector::ToWrite) -> bool {
        let failing = self.counters.store_failing.load(Ordering::Relaxed) != 0;
        // A failing store is tried even with nothing to write (a failed prune), so that it is
        // seen working again.
        if keys.is_empty() && buckets.is_empty() && self.forget.is_empty() && !failing {
            return true;
        }
        let began = Instant::now();
        if failing {
            if self.retry_at.is_some_and(|at| began < at) {
                return false;
            }
            if let Some(reopen) = &self.reopen {
                if let Err(error) = reopen() {
                    self.failed(&error);
                    self.retry_at = Some(Instant::now() + retry_delay(began.elapsed()));
                    return false;
                }
            }
        }
        match self.store.write(&keys, &buckets, &self.forget) {
            Ok(()) => {
                self.forget.clear();
                if self.counters.store_failing.swap(0, Ordering::Relaxed) != 0 {
                    self.recovered(buckets.len());
                }
                SeriesCounters::add(&self.counters.buckets_written, buckets.len() as u64);
                if let Ok(mut collector) = self.collector.lock() {
                    collector.written(keys.len(), &buckets);
                    self.counters.lost.store(collector.lost, Ordering::Relaxed);
                    self.counters
                        .pending
                        .store(collector.pending_len() as u64, Ordering::Relaxed);
                }
                true
            }
            Err(error) => {
                self.failed(&error);
                self.retry_at = Some(Instant::now() + retry_delay(began.elapsed()));
                false
            }
        }
    }

    /// Counts a failed write (or prune) and says so in the log once, when the store starts
    /// failing — not at each retry, which `/metrics` counts. A store that flaps (a disk almost
    /// full) starts failing again and again: at most one line per 10 s then.
    fn failed(&mut self, error: &super::closed::StoreFailed) {
        let was_failing = self.counters.store_failing.swap(1, Ordering::Relaxed) != 0;
        SeriesCounters::add(&self.counters.store_errors, 1);
        if let Ok(collector) = self.collector.lock() {
            self.counters.lost.store(collector.lost, Ordering::Relaxed);
        }
        if was_failing {
            return;
        }
        self.failure_logged = false;
        if let Some(skipped) = self.failures.due() {
            self.failure_logged = true;
            tracing::warn!(
                %error,
                not_logged_since_last_line = skipped,
                "series store failing: closed buckets are held in memory (up to 1048576) and written when it works again; retried (ingest is not affected)"
            );
        }
    }

    /// The first write after a failure succeeded: the line that said it failed gets its end.
    fn recovered(&mut self, buckets: usize) {
        if std::mem::take(&mut self.failure_logged) {
            let lost = self.counters.lost.load(Ordering::Relaxed);
            tracing::info!(
                buckets_written = buckets,
                buckets_lost_total = lost,
                "series store works again: the closed buckets held meanwhile are being written"
            );
        }
    }

    /// Deletes the buckets past each tier's retention of a slice of keys.
    fn prune(&mut self, now_ms: i64) {
        // A failing store is reopened by the next write first; pruning waits for it.
        if self.counters.store_failing.load(Ordering::Relaxed) != 0 {
            return;
        }
        if self.prune_queue.is_empty() {
            if let Ok(collector) = self.collector.lock() {
                self.prune_queue = collector.keys().iter().map(|k| k.id).collect();
            }
        }
        let at = self.prune_queue.len().saturating_sub(PRUNE_KEYS_PER_TICK);
        let slice: Vec<u64> = self.prune_queue.drain(at..).collect();
        for (tier_index, tier) in self.settings.tiers.iter().enumerate() {
            let before = now_ms.saturating_sub(tier.keep_ms);
            if let Err(error) = self.store.prune(&slice, tier_index as u8, before) {
                self.failed(&error);
                return;
            }
        }
    }

    /// A clean stop: every open bucket closes and everything held is written.
    fn stop(mut self) {
        let Ok(mut collector) = self.collector.lock() else {
            return;
        };
        collector.close_due(i64::MAX);
        let mut written = collector.to_write(usize::MAX);
        drop(collector);
        let mut attempts = 0;
        while !(written.0.is_empty() && written.1.is_empty()) && attempts < 3 {
            attempts += 1;
            // A clean stop tries now, whatever rest a failing store was given.
            self.retry_at = None;
            let _ = self.write(written);
            written = match self.collector.lock() {
                Ok(collector) => collector.to_write(usize::MAX),
                Err(_) => return,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::super::bucket::{tiers, Bucket};
    use super::super::closed::{MemoryBuckets, StoreFailed};
    use super::super::key::{PackedKey, SeriesKey, Slot};
    use super::*;

    /// Memory that fails every call while `failing` is set (a full disk).
    struct Flaky {
        inner: MemoryBuckets,
        failing: AtomicBool,
    }

    impl Flaky {
        fn check(&self) -> Result<(), StoreFailed> {
            if self.failing.load(Ordering::Relaxed) {
                return Err(StoreFailed("No space left on device".into()));
            }
            Ok(())
        }
    }

    impl ClosedBuckets for Flaky {
        fn keys(&self) -> Result<Vec<SeriesKey>, StoreFailed> {
            Ok(Vec::new())
        }
        fn get(&self, slot: Slot) -> Result<Option<Bucket>, StoreFailed> {
            self.check()?;
            self.inner.get(slot)
        }
        fn write(
            &self,
            keys: &[Arc<SeriesKey>],
            buckets: &[(Slot, Bucket)],
            forget: &[u64],
        ) -> Result<(), StoreFailed> {
            self.check()?;
            self.inner.write(keys, buckets, forget)
        }
        fn read(
            &self,
            id: u64,
            tier: u8,
            from: i64,
            to: i64,
        ) -> Result<Vec<(i64, Bucket)>, StoreFailed> {
            self.inner.read(id, tier, from, to)
        }
        fn prune(&self, ids: &[u64], tier: u8, before_ms: i64) -> Result<(), StoreFailed> {
            self.check()?;
            self.inner.prune(ids, tier, before_ms)
        }
    }

    /// A point `secs` after `base_micros` (a minute boundary two hours ago, so which bucket of
    /// each tier a point falls in does not depend on when the test runs).
    fn points(base_micros: i64, points: &[(i64, f64)]) -> Points {
        let mut batch = Points::default();
        batch.name(0, PackedKey::new(Some("db1"), Some("disk")).bytes());
        for (secs, value) in points {
            batch.push(0, base_micros + secs * 1_000_000, *value);
        }
        batch
    }

    fn two_hours_ago_on_a_minute() -> i64 {
        let minute = 60_000_000;
        (now_micros() - 7_300 * 1_000_000) / minute * minute
    }

    #[test]
    fn a_failing_store_holds_closed_buckets_and_writes_them_once_it_works() {
        let settings = SeriesSettings::new(30 * 24 * 3_600_000, 10);
        let store = Arc::new(Flaky {
            inner: MemoryBuckets::new(10_000),
            failing: AtomicBool::new(true),
        });
        let counters = Arc::new(SeriesCounters::default());
        let mut worker = Worker {
            collector: Arc::new(Mutex::new(Collector::new(tiers(settings.retention_ms), 10))),
            store: Arc::clone(&store) as Arc<dyn ClosedBuckets>,
            counters: Arc::clone(&counters),
            settings,
            reopen: None,
            forget: Vec::new(),
            prune_queue: Vec::new(),
            failures: RateLimitedLog::default(),
            failure_logged: false,
            retry_at: None,
        };
        counters.queued.fetch_add(2, Ordering::Relaxed);
        let base = two_hours_ago_on_a_minute();
        worker.take(vec![points(base, &[(5, 1.0), (105, 2.0)])]);
        assert_eq!(SeriesCounters::get(&counters.points), 2);
        // Every bucket of two hours ago is due; the store fails: they wait, and say so.
        worker.tick(now_micros() / 1000);
        assert_eq!(SeriesCounters::get(&counters.store_failing), 1);
        let held = worker.collector.lock().unwrap().pending_len();
        assert!(held >= 4, "{held} buckets held");
        assert!(store.inner.read(1, 0, 0, i64::MAX).unwrap().is_empty());
        // A late point for a held bucket joins it in memory (no store read needed).
        counters.queued.fetch_add(1, Ordering::Relaxed);
        worker.take(vec![points(base, &[(6, 5.0)])]);
        assert_eq!(SeriesCounters::get(&counters.points), 3);

        store.failing.store(false, Ordering::Relaxed);
        // Not before the rest a failure earns (a second here): then it is written.
        worker.tick(now_micros() / 1000);
        assert_eq!(SeriesCounters::get(&counters.store_failing), 1);
        worker.retry_at = Some(Instant::now());
        worker.tick(now_micros() / 1000);
        assert_eq!(SeriesCounters::get(&counters.store_failing), 0);
        assert_eq!(worker.collector.lock().unwrap().pending_len(), 0);
        let minutes = store.inner.read(1, 1, 0, i64::MAX).unwrap();
        let total: u64 = minutes.iter().map(|(_, b)| b.count).sum();
        assert_eq!(total, 3, "nothing lost: {minutes:?}");
        assert_eq!(SeriesCounters::get(&counters.lost), 0);
    }
}
