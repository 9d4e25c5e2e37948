//! Metric series: every applied event with a metric adds to its key's buckets in three tiers
//! (10 s kept 6 h, 1 min kept 7 days, 1 h kept `--series-retention`), bucketed by the event's
//! own time, so every
//! node of a cluster — applying the same stream — computes the same series.
//!
//! Data flows one way: the engine hands the points of each applied batch to the series thread
//! ([`SeriesFeed`], never waiting: a full queue drops points, counted); the thread
//! (`worker`) keeps open buckets in memory (`collector`) and writes closed ones in batches to
//! `series.redb` (`disk`) or, with `--data-dir off`, to a bounded window in memory (`closed`);
//! `GET /api/series` reads through [`SeriesReader`] (`read` plans the answer within its caps).
//! Series are derived data: when their store fails, ingest goes on and only series suffer
//! (`/metrics` says so: `statecast_series_store_failing`).
//!
//! This module knows the `Event` type and nothing of the engine, the store or the web.

pub mod bucket;
pub mod closed;
pub mod collector;
mod disk;
mod feed;
pub mod key;
pub mod read;
mod worker;

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub use feed::SeriesFeed;
pub use key::{KeyName, SeriesKey};

use bucket::{Bucket, Tiers};
use closed::{ClosedBuckets, MemoryBuckets, StoreFailed};
use collector::Collector;

/// The files series keep in a data directory.
pub const FILES: [&str; 1] = [disk::FILE];

/// What `--series*` set.
#[derive(Debug, Clone, Copy)]
pub struct SeriesSettings {
    /// The 1 h tier's retention, and how long a key without points keeps its series.
    pub retention_ms: i64,
    /// Keys with a series at most.
    pub max_keys: usize,
    pub tiers: Tiers,
}

impl SeriesSettings {
    pub fn new(retention_ms: i64, max_keys: usize) -> Self {
        Self {
            retention_ms,
            max_keys,
            tiers: bucket::tiers(retention_ms),
        }
    }
}

/// Why points were dropped: the `reason` label (the discriminant indexes
/// `SeriesCounters::dropped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// NaN or an infinity: not a value a chart can hold.
    NotFinite,
    /// The series thread's queue was full (it is behind its disk).
    QueueFull,
    /// A new key past `--series-max-keys`.
    MaxKeys,
    /// Older than the retention.
    TooOld,
    /// More than 10 minutes ahead of this node's clock.
    Future,
    /// The point joins a closed bucket that could not be read (the store is failing).
    StoreFailing,
}

impl DropReason {
    pub const ALL: [DropReason; 6] = [
        DropReason::NotFinite,
        DropReason::QueueFull,
        DropReason::MaxKeys,
        DropReason::TooOld,
        DropReason::Future,
        DropReason::StoreFailing,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropReason::NotFinite => "not-finite",
            DropReason::QueueFull => "queue-full",
            DropReason::MaxKeys => "max-keys",
            DropReason::TooOld => "too-old",
            DropReason::Future => "future",
            DropReason::StoreFailing => "store-failing",
        }
    }
}

/// The series' own figures, for `/metrics`.
#[derive(Debug, Default)]
pub struct SeriesCounters {
    pub points: AtomicU64,
    pub dropped: [AtomicU64; DropReason::ALL.len()],
    pub buckets_written: AtomicU64,
    /// Closed buckets lost because too many waited for a failing store.
    pub lost: AtomicU64,
    pub store_errors: AtomicU64,
    /// 1 while the last write failed.
    pub store_failing: AtomicU64,
    pub keys: AtomicU64,
    /// Closed buckets waiting to be written.
    pub pending: AtomicU64,
    /// Points handed over and not yet taken by the series thread.
    pub queued: AtomicUsize,
}

impl SeriesCounters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn dropped(&self, why: DropReason, n: u64) {
        Self::add(&self.dropped[why as usize], n);
    }

    /// The series' lines of `/metrics`, in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut family = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        family(
            "statecast_series_keys",
            "gauge",
            "Keys with a metric series (bounded by --series-max-keys).",
            get(&self.keys),
        );
        family(
            "statecast_series_queue_points",
            "gauge",
            "Points handed to the series thread and not yet taken.",
            self.queued.load(Ordering::Relaxed) as u64,
        );
        family(
            "statecast_series_pending_buckets",
            "gauge",
            "Closed series buckets waiting to be written (bounded: 1048576).",
            get(&self.pending),
        );
        family(
            "statecast_series_points_total",
            "counter",
            "Points added to metric series.",
            get(&self.points),
        );
        family(
            "statecast_series_buckets_written_total",
            "counter",
            "Closed series buckets written to the series store.",
            get(&self.buckets_written),
        );
        family(
            "statecast_series_buckets_lost_total",
            "counter",
            "Closed series buckets lost because too many waited for a failing series store.",
            get(&self.lost),
        );
        family(
            "statecast_series_store_errors_total",
            "counter",
            "Failed attempts to write the series store (one per retry) and failed reads of it.",
            get(&self.store_errors),
        );
        family(
            "statecast_series_store_failing",
            "gauge",
            "1 while the series store fails (series are derived data: ingest is not affected).",
            get(&self.store_failing),
        );
        let name = "statecast_series_points_dropped_total";
        let _ = writeln!(
            out,
            "# HELP {name} Metrics not added to a series, by reason.\n# TYPE {name} counter"
        );
        for why in DropReason::ALL {
            let _ = writeln!(
                out,
                "{name}{{reason=\"{}\"}} {}",
                why.label(),
                get(&self.dropped[why as usize])
            );
        }
    }
}

/// Reads for `GET /api/series`: the keys, the buckets held in memory, the stored ones.
#[derive(Clone)]
pub struct SeriesReader {
    collector: Arc<Mutex<Collector>>,
    store: Arc<dyn ClosedBuckets>,
    pub settings: SeriesSettings,
    pub counters: Arc<SeriesCounters>,
}

impl SeriesReader {
    /// Every key with a series.
    pub fn keys(&self) -> Vec<Arc<SeriesKey>> {
        self.collector.lock().map(|c| c.keys()).unwrap_or_default()
    }

    /// The buckets held in memory (open, and closed not yet written) of each of `ids`, in the
    /// plan's tier from `first_ms` to `to_ms`. Taken before the store is read: a bucket written
    /// meanwhile is then in one or the other (or both, the same), never in neither.
    pub fn held(&self, ids: &[u64], plan: &read::Plan, to_ms: i64) -> Vec<Vec<(i64, Bucket)>> {
        let Ok(collector) = self.collector.lock() else {
            return vec![Vec::new(); ids.len()];
        };
        ids.iter()
            .map(|id| collector.held(*id, plan.tier, plan.first_ms, to_ms))
            .collect()
    }

    /// One series' points: stored buckets overlaid by `held`, folded to the plan's step.
    pub fn read(
        &self,
        id: u64,
        plan: &read::Plan,
        to_ms: i64,
        held: &[(i64, Bucket)],
    ) -> Result<Vec<(i64, Bucket)>, StoreFailed> {
        let stored = self
            .store
            .read(id, plan.tier, plan.first_ms, to_ms)
            .inspect_err(|_| SeriesCounters::add(&self.counters.store_errors, 1))?;
        Ok(read::merge(stored, held, plan.step_ms))
    }
}

#[cfg(test)]
impl SeriesReader {
    /// A reader over one key with a point (`db1`/`disk`, now) whose store fails every call, as
    /// on a full disk: for the web's tests.
    pub fn failing_for_tests() -> Self {
        use key::{PackedKey, Point, Slot};
        struct Failing;
        fn full<T>() -> Result<T, StoreFailed> {
            Err(StoreFailed("No space left on device (os error 28)".into()))
        }
        impl ClosedBuckets for Failing {
            fn keys(&self) -> Result<Vec<SeriesKey>, StoreFailed> {
                full()
            }
            fn get(&self, _: Slot) -> Result<Option<Bucket>, StoreFailed> {
                full()
            }
            fn write(
                &self,
                _: &[Arc<SeriesKey>],
                _: &[(Slot, Bucket)],
                _: &[u64],
            ) -> Result<(), StoreFailed> {
                full()
            }
            fn read(
                &self,
                _: u64,
                _: u8,
                _: i64,
                _: i64,
            ) -> Result<Vec<(i64, Bucket)>, StoreFailed> {
                full()
            }
            fn prune(&self, _: &[u64], _: u8, _: i64) -> Result<(), StoreFailed> {
                full()
            }
        }
        let settings = SeriesSettings::new(30 * 24 * 3_600_000, 10);
        let mut collector = Collector::new(settings.tiers, settings.max_keys);
        collector.name(0, PackedKey::new(Some("db1"), Some("disk")).bytes());
        let point = Point {
            slot: 0,
            time_micros: crate::event::now_micros(),
            value: 1.0,
        };
        let _ = collector.add(point, &mut |_| Ok(None));
        Self {
            collector: Arc::new(Mutex::new(collector)),
            store: Arc::new(Failing),
            settings,
            counters: Arc::default(),
        }
    }
}

/// The running series: the engine's feed, the readers' handle, and the thread (done once every
/// feed is dropped — the engine stopped — and what it held is written).
pub struct Series {
    pub feed: SeriesFeed,
    pub reader: SeriesReader,
    pub thread: tokio::task::JoinHandle<()>,
}

/// Starts the series thread over `series.redb` in `dir`, or over memory without one.
pub fn start(settings: SeriesSettings, dir: Option<&Path>) -> Result<Series, StoreFailed> {
    let counters = Arc::new(SeriesCounters::default());
    let mut collector = Collector::new(settings.tiers, settings.max_keys);
    let (store, reopen): (Arc<dyn ClosedBuckets>, _) = match dir {
        Some(dir) => {
            let disk = Arc::new(disk::DiskBuckets::open(dir)?);
            let again = Arc::clone(&disk);
            let reopen: Box<dyn Fn() -> Result<(), StoreFailed> + Send> =
                Box::new(move || again.reopen());
            (disk, Some(reopen))
        }
        None => {
            let window = MemoryBuckets::window(&settings.tiers, settings.max_keys);
            (Arc::new(MemoryBuckets::new(window)), None)
        }
    };
    let mut keys = store.keys()?;
    keys.truncate(settings.max_keys);
    collector.restore(keys, crate::event::now_micros());
    counters
        .keys
        .store(collector.len() as u64, Ordering::Relaxed);
    let collector = Arc::new(Mutex::new(collector));
    let (tx, rx) = std::sync::mpsc::sync_channel(feed::QUEUE_BATCHES);
    let worker = worker::Worker {
        collector: Arc::clone(&collector),
        store: Arc::clone(&store),
        counters: Arc::clone(&counters),
        settings,
        reopen,
        forget: Vec::new(),
        prune_queue: Vec::new(),
        failures: crate::rate_limited_log::RateLimitedLog::default(),
        failure_logged: false,
        retry_at: None,
    };
    let thread = tokio::task::spawn_blocking(move || worker.run(rx));
    Ok(Series {
        feed: SeriesFeed::new(tx, Arc::clone(&counters)),
        reader: SeriesReader {
            collector,
            store,
            settings,
            counters,
        },
        thread,
    })
}
