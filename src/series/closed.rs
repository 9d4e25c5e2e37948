//! Where closed buckets live: [`ClosedBuckets`], implemented on disk by `disk::DiskBuckets`
//! (redb) and in memory by [`MemoryBuckets`] (`--data-dir off`: a bounded window per key).
//!
//! Called from the series thread (writes, and the read of a bucket a late point joins) and from
//! `GET /api/series` readers (range reads) at once: implementations are `Sync`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::bucket::{Bucket, Tiers};
use super::key::{SeriesKey, Slot};

/// A series store that failed; series are derived data, so this never stops ingest.
#[derive(Debug, Clone, thiserror::Error)]
#[error("series store: {0}")]
pub struct StoreFailed(pub String);

impl StoreFailed {
    pub fn from(error: impl std::fmt::Display) -> Self {
        StoreFailed(error.to_string())
    }
}

/// What the series task needs of a store of closed buckets.
pub trait ClosedBuckets: Send + Sync {
    /// The keys stored before this start.
    fn keys(&self) -> Result<Vec<SeriesKey>, StoreFailed>;
    /// One closed bucket.
    fn get(&self, slot: Slot) -> Result<Option<Bucket>, StoreFailed>;
    /// Writes keys and whole buckets (replacing what a slot held), and deletes the keys
    /// `forget` with every bucket of theirs, in one transaction; durable when it returns.
    fn write(
        &self,
        keys: &[Arc<SeriesKey>],
        buckets: &[(Slot, Bucket)],
        forget: &[u64],
    ) -> Result<(), StoreFailed>;
    /// Buckets of key `id` in tier `tier` starting in `from_ms..=to_ms`, sorted by start.
    fn read(
        &self,
        id: u64,
        tier: u8,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, Bucket)>, StoreFailed>;
    /// Deletes the buckets of tier `tier` of the keys `ids` that start before `before_ms`.
    fn prune(&self, ids: &[u64], tier: u8, before_ms: i64) -> Result<(), StoreFailed>;
}

/// Closed buckets held in memory (at most this many in all, ≈ 110 MiB).
pub const MEMORY_MAX_BUCKETS: usize = 2 * 1024 * 1024;

/// `--data-dir off`: each key keeps its newest buckets per tier, at most
/// [`MemoryBuckets::window`] of them.
pub struct MemoryBuckets {
    window: usize,
    rings: Mutex<Rings>,
}

/// Each (key id, tier)'s newest buckets, sorted by start.
type Rings = HashMap<(u64, u8), VecDeque<(i64, Bucket)>>;

impl MemoryBuckets {
    /// Buckets kept per key and tier: the tier's whole retention when
    /// [`MEMORY_MAX_BUCKETS`] allows it for `max_keys` keys, else that share.
    pub fn window(tiers: &Tiers, max_keys: usize) -> usize {
        let longest = tiers
            .iter()
            .map(|t| usize::try_from(t.keep_ms / t.step_ms).unwrap_or(usize::MAX))
            .max()
            .unwrap_or(1);
        longest
            .min(MEMORY_MAX_BUCKETS / (tiers.len() * max_keys.max(1)))
            .max(1)
    }

    pub fn new(window: usize) -> Self {
        Self {
            window,
            rings: Mutex::default(),
        }
    }

    fn rings(&self) -> Result<std::sync::MutexGuard<'_, Rings>, StoreFailed> {
        self.rings
            .lock()
            .map_err(|_| StoreFailed("memory series poisoned".into()))
    }
}

impl ClosedBuckets for MemoryBuckets {
    fn keys(&self) -> Result<Vec<SeriesKey>, StoreFailed> {
        Ok(Vec::new())
    }

    fn get(&self, (id, tier, start): Slot) -> Result<Option<Bucket>, StoreFailed> {
        let rings = self.rings()?;
        let Some(ring) = rings.get(&(id, tier)) else {
            return Ok(None);
        };
        Ok(ring
            .binary_search_by_key(&start, |(s, _)| *s)
            .ok()
            .map(|i| ring[i].1))
    }

    fn write(
        &self,
        _: &[Arc<SeriesKey>],
        buckets: &[(Slot, Bucket)],
        forget: &[u64],
    ) -> Result<(), StoreFailed> {
        let mut rings = self.rings()?;
        for ((id, tier, start), bucket) in buckets {
            let ring = rings.entry((*id, *tier)).or_default();
            match ring.binary_search_by_key(start, |(s, _)| *s) {
                Ok(i) => ring[i].1 = *bucket,
                Err(i) => ring.insert(i, (*start, *bucket)),
            }
            while ring.len() > self.window {
                ring.pop_front();
            }
        }
        rings.retain(|(id, _), _| !forget.contains(id));
        Ok(())
    }

    fn read(
        &self,
        id: u64,
        tier: u8,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, Bucket)>, StoreFailed> {
        let rings = self.rings()?;
        Ok(rings
            .get(&(id, tier))
            .map(|ring| {
                ring.iter()
                    .filter(|(s, _)| (from_ms..=to_ms).contains(s))
                    .copied()
                    .collect()
            })
            .unwrap_or_default())
    }

    fn prune(&self, ids: &[u64], tier: u8, before_ms: i64) -> Result<(), StoreFailed> {
        let mut rings = self.rings()?;
        for id in ids {
            if let Some(ring) = rings.get_mut(&(*id, tier)) {
                while ring.front().is_some_and(|(s, _)| *s < before_ms) {
                    ring.pop_front();
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::bucket::tiers;
    use super::*;

    #[test]
    fn memory_keeps_a_bounded_window_per_key_and_tier() {
        let all = tiers(7 * 24 * 3_600_000);
        // 7 days of minutes (the longest tier in buckets) for a few keys; a share of the
        // budget for many.
        assert_eq!(MemoryBuckets::window(&all, 10), 10_080);
        assert_eq!(MemoryBuckets::window(&all, 100_000), 6);
        let memory = MemoryBuckets::new(3);
        let buckets: Vec<(Slot, Bucket)> = (0..5)
            .map(|i| ((1, 0, i * 10_000), Bucket::of(i * 10_000_000, i as f64)))
            .collect();
        memory.write(&[], &buckets, &[]).unwrap();
        let kept = memory.read(1, 0, 0, i64::MAX).unwrap();
        assert_eq!(
            kept.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [20_000, 30_000, 40_000]
        );
        memory.prune(&[1], 0, 35_000).unwrap();
        assert_eq!(memory.read(1, 0, 0, i64::MAX).unwrap().len(), 1);
        memory.write(&[], &[], &[1]).unwrap();
        assert!(memory.get((1, 0, 40_000)).unwrap().is_none());
    }
}
