//! The series task's state: which keys have a series, each key's open bucket per tier, and the
//! closed buckets not yet written.
//!
//! Pure: no I/O, no clock. The caller passes "now" in and a `stored` lookup for the one case that
//! needs the disk — a point for a bucket that is no longer open (late, or a bucket closed by the
//! wall clock, or one written before a restart): it is merged into what was stored, so a bucket
//! is always written whole. Every value held here is therefore the bucket's full value, which is
//! what lets a reader prefer a value held here over the stored one for the same bucket.
//!
//! Bounded: one open bucket per key and tier whatever the rate of a key's points, at most
//! `max_keys` keys, at most [`MAX_PENDING`] closed buckets waiting (they wait only while the store
//! fails: past that, closing buckets are lost and counted).

use std::collections::BTreeMap;

use hashbrown::hash_map::{self, HashMap};
use std::sync::Arc;

use super::bucket::{Bucket, Tiers, TIER_COUNT};
use super::closed::StoreFailed;
pub use super::key::{name_of, KeyName, PackedKey, Point, Points, SeriesKey, Slot};

/// Closed buckets held for the store at most (≈ 100 MiB): reached only while the store fails.
pub const MAX_PENDING: usize = 1 << 20;

/// Why a point was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A new key past `--series-max-keys`.
    MaxKeys,
    /// The point joins a closed bucket and the store could not be read.
    Store,
}

/// What a lookup of a closed bucket in the store gives.
pub type Stored<'a> = &'a mut dyn FnMut(Slot) -> Result<Option<Bucket>, StoreFailed>;

/// New keys and closed buckets for the store to write.
pub type ToWrite = (Vec<Arc<SeriesKey>>, Vec<(Slot, Bucket)>);

/// Laid out in the order a point touches it (its newest time, then its open buckets), so that
/// adding a point reads as few cache lines as it can: the series thread's cost is its misses.
#[repr(C)]
struct Entry {
    /// Event time of the key's newest point: the key is forgotten a retention after it.
    newest_micros: i64,
    open: [Option<(i64, Bucket)>; TIER_COUNT],
    /// Per tier, the latest bucket start that may have been closed (and so be held or stored):
    /// a point for a later bucket starts it afresh without asking the store — which a failing
    /// store could not answer. `None`: nothing of the tier closed yet (a key new in this run).
    closed_through: [Option<i64>; TIER_COUNT],
    key: Arc<SeriesKey>,
}

impl Entry {
    /// The entry of a key new in this run, numbered `id`.
    fn new(id: u64, packed: &[u8]) -> Self {
        Entry {
            newest_micros: i64::MIN,
            open: [None; TIER_COUNT],
            closed_through: [None; TIER_COUNT],
            key: Arc::new(SeriesKey {
                id,
                name: name_of(packed),
            }),
        }
    }

    /// Whether the bucket at `start` of tier `tier_index` may have a closed copy.
    fn may_be_closed(&self, tier_index: usize, start: i64) -> bool {
        self.closed_through[tier_index].is_some_and(|through| start <= through)
    }

    /// Closes the bucket at `start` of tier `tier_index`: held for the store.
    fn closed(&mut self, tier_index: usize, start: i64) {
        let through = &mut self.closed_through[tier_index];
        *through = Some(through.map_or(start, |t| t.max(start)));
    }
}

/// See the module doc.
pub struct Collector {
    tiers: Tiers,
    max_keys: usize,
    /// Each key's series, found by the point's key: one lookup per point (hashbrown's fast
    /// hasher), its open buckets inline — not an id first and the entry in a second map, which
    /// cost the series thread twice the cache misses.
    entries: HashMap<PackedKey, Entry>,
    /// Each id's key, for reads by id.
    ids: HashMap<u64, PackedKey>,
    next_id: u64,
    /// Closed buckets not yet written (full values).
    pending: BTreeMap<Slot, Bucket>,
    /// Keys not yet written to the store.
    new_keys: Vec<Arc<SeriesKey>>,
    /// Closed buckets dropped because `pending` was full.
    pub lost: u64,
}

impl Collector {
    pub fn new(tiers: Tiers, max_keys: usize) -> Self {
        Self {
            tiers,
            max_keys,
            ids: HashMap::new(),
            entries: HashMap::new(),
            next_id: 1,
            pending: BTreeMap::new(),
            new_keys: Vec::new(),
            lost: 0,
        }
    }

    /// Keys the store already holds (at start), as if last seen at `now_micros`.
    pub fn restore(&mut self, keys: Vec<SeriesKey>, now_micros: i64) {
        for key in keys {
            self.next_id = self.next_id.max(key.id + 1);
            let packed = key.name.packed();
            self.ids.insert(key.id, packed.clone());
            let entry = Entry {
                key: Arc::new(key),
                open: [None; TIER_COUNT],
                newest_micros: now_micros,
                // Whatever the last run closed is at most as new as now.
                closed_through: self.tiers.map(|tier| Some(tier.start_of(now_micros))),
            };
            self.entries.insert(packed, entry);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds one point to its key's open bucket in every tier. `stored` finds a closed bucket in
    /// the store (see the module doc).
    pub fn add(&mut self, point: Point<'_>, stored: Stored<'_>) -> Result<(), Refused> {
        let Point {
            key,
            time_micros,
            value,
        } = point;
        let full = self.entries.len() >= self.max_keys;
        let entry = match self.entries.entry_ref(key) {
            hash_map::EntryRef::Occupied(entry) => entry.into_mut(),
            hash_map::EntryRef::Vacant(_) if full => return Err(Refused::MaxKeys),
            hash_map::EntryRef::Vacant(vacant) => {
                let id = self.next_id;
                self.next_id += 1;
                self.ids.insert(id, PackedKey::from(key));
                let new = Entry::new(id, key);
                self.new_keys.push(Arc::clone(&new.key));
                vacant.insert(new)
            }
        };
        let point = (time_micros, value);
        let id = entry.key.id;
        entry.newest_micros = entry.newest_micros.max(time_micros);
        for (tier_index, tier) in self.tiers.iter().enumerate() {
            let start = tier.start_of(time_micros);
            let slot = (id, tier_index as u8, start);
            match entry.open[tier_index] {
                Some((open_start, ref mut bucket)) if open_start == start => {
                    bucket.add(time_micros, value);
                }
                Some((open_start, _)) if open_start > start => {
                    // A late point: into the closed bucket, whole.
                    let may = entry.may_be_closed(tier_index, start);
                    let bucket = closed_plus(&mut self.pending, slot, may, stored, &point)?;
                    hold(&mut self.pending, &mut self.lost, slot, bucket);
                    entry.closed(tier_index, start);
                }
                _ => {
                    // A newer bucket: the open one closes; the new one starts from what a
                    // closed copy of it holds, if it may have one.
                    if let Some((open_start, bucket)) = entry.open[tier_index].take() {
                        let closing = (id, tier_index as u8, open_start);
                        hold(&mut self.pending, &mut self.lost, closing, bucket);
                        entry.closed(tier_index, open_start);
                    }
                    let may = entry.may_be_closed(tier_index, start);
                    let bucket = closed_plus(&mut self.pending, slot, may, stored, &point)?;
                    entry.open[tier_index] = Some((start, bucket));
                }
            }
        }
        Ok(())
    }

    /// Closes every open bucket that ended at least one step before `now_ms` (a key that stopped
    /// reporting still gets its last buckets written), or every one (`now_ms` = `i64::MAX`, at
    /// a clean stop).
    pub fn close_due(&mut self, now_ms: i64) {
        for entry in self.entries.values_mut() {
            for (tier_index, tier) in self.tiers.iter().enumerate() {
                let due = matches!(entry.open[tier_index],
                    Some((start, _)) if start.saturating_add(2 * tier.step_ms) <= now_ms);
                if due {
                    if let Some((start, bucket)) = entry.open[tier_index].take() {
                        let slot = (entry.key.id, tier_index as u8, start);
                        hold(&mut self.pending, &mut self.lost, slot, bucket);
                        entry.closed(tier_index, start);
                    }
                }
            }
        }
    }

    /// Forgets keys whose newest point is before `cutoff_micros` (past the retention): their ids,
    /// for the store to delete.
    pub fn forget_before(&mut self, cutoff_micros: i64) -> Vec<u64> {
        let gone: Vec<u64> = self
            .entries
            .values()
            .filter(|e| e.newest_micros < cutoff_micros && e.open.iter().all(Option::is_none))
            .map(|e| e.key.id)
            .collect();
        for id in &gone {
            if let Some(packed) = self.ids.remove(id) {
                self.entries.remove(&packed);
            }
        }
        self.new_keys.retain(|k| !gone.contains(&k.id));
        self.pending.retain(|slot, _| !gone.contains(&slot.0));
        gone
    }

    /// What the store should write next: new keys and up to `limit` closed buckets. They stay
    /// here (readers still see them) until [`Collector::written`].
    pub fn to_write(&self, limit: usize) -> ToWrite {
        let buckets = self
            .pending
            .iter()
            .take(limit)
            .map(|(slot, bucket)| (*slot, *bucket))
            .collect();
        (self.new_keys.clone(), buckets)
    }

    /// The store holds `keys` and `buckets`: forget them here, unless a bucket changed since.
    pub fn written(&mut self, keys: usize, buckets: &[(Slot, Bucket)]) {
        self.new_keys.drain(..keys.min(self.new_keys.len()));
        for (slot, bucket) in buckets {
            if self.pending.get(slot) == Some(bucket) {
                self.pending.remove(slot);
            }
        }
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Every key with a series (shared: cheap to copy out under a lock).
    pub fn keys(&self) -> Vec<Arc<SeriesKey>> {
        self.entries.values().map(|e| Arc::clone(&e.key)).collect()
    }

    /// The buckets of `id` in tier `tier_index` held here (open and closed, not yet written),
    /// starting in `from_ms..=to_ms`, sorted by start.
    pub fn held(&self, id: u64, tier_index: u8, from_ms: i64, to_ms: i64) -> Vec<(i64, Bucket)> {
        let mut out: Vec<(i64, Bucket)> = self
            .pending
            .range((id, tier_index, from_ms)..=(id, tier_index, to_ms))
            .map(|(slot, bucket)| (slot.2, *bucket))
            .collect();
        if let Some((start, bucket)) = self
            .ids
            .get(&id)
            .and_then(|packed| self.entries.get(packed))
            .and_then(|e| e.open[usize::from(tier_index)])
        {
            if (from_ms..=to_ms).contains(&start) {
                out.retain(|(s, _)| *s != start);
                out.push((start, bucket));
                out.sort_by_key(|(s, _)| *s);
            }
        }
        out
    }
}

/// The closed bucket at `slot` — taken out of `pending`, or read from the store when it
/// `may_be_stored` — with `point` added; a bucket of `point` alone when there is none.
fn closed_plus(
    pending: &mut BTreeMap<Slot, Bucket>,
    slot: Slot,
    may_be_stored: bool,
    stored: Stored<'_>,
    (time_micros, value): &(i64, f64),
) -> Result<Bucket, Refused> {
    let closed = match pending.remove(&slot) {
        Some(bucket) => Some(bucket),
        None if may_be_stored => stored(slot).map_err(|_| Refused::Store)?,
        None => None,
    };
    Ok(match closed {
        Some(mut bucket) => {
            bucket.add(*time_micros, *value);
            bucket
        }
        None => Bucket::of(*time_micros, *value),
    })
}

/// Holds a closed bucket for the store; past [`MAX_PENDING`] it is lost (counted).
fn hold(pending: &mut BTreeMap<Slot, Bucket>, lost: &mut u64, slot: Slot, bucket: Bucket) {
    if pending.len() >= MAX_PENDING && !pending.contains_key(&slot) {
        *lost += 1;
        return;
    }
    pending.insert(slot, bucket);
}

#[cfg(test)]
mod tests {
    use super::super::bucket::tiers;
    use super::*;

    /// A batch of one point (see [`Points::first`]).
    fn point(host: &str, secs: f64, value: f64) -> Points {
        let mut batch = Points::default();
        batch.push(Some(host), Some("cpu"), (secs * 1e6) as i64, value);
        batch
    }

    fn nothing_stored(_: Slot) -> Result<Option<Bucket>, StoreFailed> {
        Ok(None)
    }

    #[test]
    fn a_key_holds_one_open_bucket_per_tier_whatever_its_rate() {
        let mut c = Collector::new(tiers(7 * 24 * 3_600_000), 10);
        for i in 0..100_000 {
            c.add(
                point("a", 1000.0 + (i % 10) as f64 * 0.5, 1.0).first(),
                &mut nothing_stored,
            )
            .unwrap();
        }
        assert_eq!(c.pending_len(), 0);
        let held = c.held(1, 0, 0, i64::MAX);
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].1.count, 100_000);
    }

    #[test]
    fn a_newer_bucket_closes_the_open_one_and_a_late_point_joins_its_closed_bucket() {
        let mut c = Collector::new(tiers(7 * 24 * 3_600_000), 10);
        c.add(point("a", 1000.0, 1.0).first(), &mut nothing_stored)
            .unwrap();
        c.add(point("a", 1011.0, 2.0).first(), &mut nothing_stored)
            .unwrap();
        // 1000 s: fine bucket 1000, closed; 1011 s: fine bucket 1010, open.
        let (_, closed) = c.to_write(10);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].0, (1, 0, 1_000_000));
        // Late: joins the closed fine bucket, and the open coarse one (960..1020).
        c.add(point("a", 1005.0, 7.0).first(), &mut nothing_stored)
            .unwrap();
        let fine = c.held(1, 0, 0, i64::MAX);
        assert_eq!(fine[0].1.count, 2);
        assert_eq!((fine[0].1.max, fine[0].1.last), (7.0, 7.0));
        let coarse = c.held(1, 1, 0, i64::MAX);
        assert_eq!(coarse.len(), 1);
        assert_eq!(coarse[0].1.count, 3);
        assert_eq!(coarse[0].1.last, 2.0, "the latest event time is last");
    }

    #[test]
    fn a_bucket_reopened_after_a_write_continues_from_what_is_stored() {
        let mut c = Collector::new(tiers(7 * 24 * 3_600_000), 10);
        c.add(point("a", 1000.0, 4.0).first(), &mut nothing_stored)
            .unwrap();
        c.close_due(i64::MAX);
        let (keys, written) = c.to_write(10);
        c.written(keys.len(), &written);
        assert_eq!(c.pending_len(), 0);
        let stored: HashMap<Slot, Bucket> = written.into_iter().collect();
        c.add(point("a", 1001.0, 6.0).first(), &mut |slot| {
            Ok(stored.get(&slot).copied())
        })
        .unwrap();
        let fine = c.held(1, 0, 0, i64::MAX);
        assert_eq!((fine[0].1.count, fine[0].1.sum), (2, 10.0));
    }

    #[test]
    fn keys_past_the_limit_are_refused_and_old_keys_forgotten() {
        let mut c = Collector::new(tiers(3_600_000), 2);
        c.add(point("a", 10.0, 1.0).first(), &mut nothing_stored)
            .unwrap();
        c.add(point("b", 5000.0, 1.0).first(), &mut nothing_stored)
            .unwrap();
        assert_eq!(
            c.add(point("c", 10.0, 1.0).first(), &mut nothing_stored),
            Err(Refused::MaxKeys)
        );
        c.close_due(i64::MAX);
        assert_eq!(c.forget_before(1_000_000_000), vec![1]);
        assert_eq!(c.len(), 1);
        assert!(c.held(1, 0, 0, i64::MAX).is_empty());
        c.add(point("c", 10.0, 1.0).first(), &mut nothing_stored)
            .unwrap();
    }

    #[test]
    fn closing_by_the_clock_waits_one_step_past_the_bucket() {
        let mut c = Collector::new(tiers(7 * 24 * 3_600_000), 10);
        c.add(point("a", 1000.0, 1.0).first(), &mut nothing_stored)
            .unwrap();
        c.close_due(1_019_999);
        assert_eq!(c.pending_len(), 0);
        c.close_due(1_020_000);
        assert_eq!(c.pending_len(), 1);
    }
}
