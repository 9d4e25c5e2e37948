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

use hashbrown::HashMap;
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
    /// The point's slot was never named. Cannot happen while the feed keeps the names of the
    /// batches it drops (`feed`); were one lost, the point is dropped, not given to another key.
    Unnamed,
}

/// What a lookup of a closed bucket in the store gives.
pub type Stored<'a> = &'a mut dyn FnMut(Slot) -> Result<Option<Bucket>, StoreFailed>;

/// New keys and closed buckets for the store to write.
pub type ToWrite = (Vec<Arc<SeriesKey>>, Vec<(Slot, Bucket)>);

/// No entry: a slot whose first point has not yet found its series (or whose series was
/// forgotten), or an entry no slot points at.
const NONE: u32 = u32::MAX;

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
    /// The slot that last found this entry ([`NONE`]: none yet), unhooked when it is forgotten.
    slot: u32,
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
            slot: NONE,
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
    /// Each key's series, its open buckets inline, at a dense number its slot points at: a point
    /// finds it with two array loads (its slot's entry number, then the entry), with no hashing
    /// and no key bytes compared — the series thread's cost was its cache misses on those
    /// (BENCHMARKS.md, "Metric series"). `None`: free, numbered in `free`.
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
    /// Each key's entry by name: looked up once per named slot, and at a restart.
    by_name: HashMap<PackedKey, u32>,
    /// Each id's entry, for reads by id.
    by_id: HashMap<u64, u32>,
    /// Per slot of the index (see [`Points`]): the entry its points go to, [`NONE`] until its
    /// first point finds (or makes) it by the slot's name. As many as the index has keys.
    slot_entries: Vec<u32>,
    /// Per slot: its key's name, as last named.
    slot_names: Vec<Option<PackedKey>>,
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
            entries: Vec::new(),
            free: Vec::new(),
            by_name: HashMap::new(),
            by_id: HashMap::new(),
            slot_entries: Vec::new(),
            slot_names: Vec::new(),
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
            let entry = Entry {
                key: Arc::new(key),
                open: [None; TIER_COUNT],
                newest_micros: now_micros,
                // Whatever the last run closed is at most as new as now.
                closed_through: self.tiers.map(|tier| Some(tier.start_of(now_micros))),
                slot: NONE,
            };
            self.insert(entry, packed);
        }
    }

    /// Files `entry` under a free number, by name and by id.
    fn insert(&mut self, entry: Entry, packed: PackedKey) -> u32 {
        let id = entry.key.id;
        let index = match self.free.pop() {
            Some(index) => {
                self.entries[index as usize] = Some(entry);
                index
            }
            None => {
                self.entries.push(Some(entry));
                // At most `max_keys` entries, far below 2³².
                (self.entries.len() - 1) as u32
            }
        };
        self.by_name.insert(packed, index);
        self.by_id.insert(id, index);
        index
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// From now on the points of `slot` belong to the key packed in `name` (see [`Points`]).
    /// Its series is found by name now if it has one, or at its first point.
    pub fn name(&mut self, slot: u32, name: &[u8]) {
        let at = slot as usize;
        if self.slot_entries.len() <= at {
            self.slot_entries.resize(at + 1, NONE);
            self.slot_names.resize(at + 1, None);
        }
        let entry = self.by_name.get(name).copied().unwrap_or(NONE);
        self.slot_entries[at] = entry;
        self.slot_names[at] = Some(PackedKey::from(name));
        if let Some(Some(found)) = self.entries.get_mut(entry as usize) {
            found.slot = slot;
        }
    }

    /// The entry `slot`'s points go to: one array load, or at a slot's first point its series
    /// found by name (made when new).
    fn entry_of(&mut self, slot: u32) -> Result<usize, Refused> {
        let at = slot as usize;
        match self.slot_entries.get(at) {
            Some(&entry) if entry != NONE => return Ok(entry as usize),
            Some(_) => {}
            None => return Err(Refused::Unnamed),
        }
        let Some(Some(name)) = self.slot_names.get(at) else {
            return Err(Refused::Unnamed);
        };
        let index = match self.by_name.get(name.bytes()) {
            Some(&index) => index,
            None if self.by_id.len() >= self.max_keys => return Err(Refused::MaxKeys),
            None => {
                let name = name.clone();
                let id = self.next_id;
                self.next_id += 1;
                let new = Entry::new(id, name.bytes());
                self.new_keys.push(Arc::clone(&new.key));
                self.insert(new, name)
            }
        };
        self.slot_entries[at] = index;
        if let Some(Some(entry)) = self.entries.get_mut(index as usize) {
            entry.slot = slot;
        }
        Ok(index as usize)
    }

    /// Adds one point to its key's open bucket in every tier. `stored` finds a closed bucket in
    /// the store (see the module doc).
    pub fn add(&mut self, point: Point, stored: Stored<'_>) -> Result<(), Refused> {
        let Point {
            slot,
            time_micros,
            value,
        } = point;
        let index = self.entry_of(slot)?;
        let Some(Some(entry)) = self.entries.get_mut(index) else {
            return Err(Refused::Unnamed);
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
        for entry in self.entries.iter_mut().flatten() {
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
        let gone: Vec<u32> = self
            .by_id
            .values()
            .copied()
            .filter(|&index| {
                self.entries.get(index as usize).is_some_and(|e| {
                    e.as_ref().is_some_and(|e| {
                        e.newest_micros < cutoff_micros && e.open.iter().all(Option::is_none)
                    })
                })
            })
            .collect();
        let mut ids = Vec::with_capacity(gone.len());
        for index in gone {
            let Some(entry) = self.entries.get_mut(index as usize).and_then(Option::take) else {
                continue;
            };
            self.free.push(index);
            self.by_id.remove(&entry.key.id);
            self.by_name.remove(entry.key.name.packed().bytes());
            if let Some(slot) = self.slot_entries.get_mut(entry.slot as usize) {
                if *slot == index {
                    *slot = NONE;
                }
            }
            ids.push(entry.key.id);
        }
        let gone = ids;
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
        self.entries
            .iter()
            .flatten()
            .map(|e| Arc::clone(&e.key))
            .collect()
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
            .by_id
            .get(&id)
            .and_then(|&index| self.entries.get(index as usize)?.as_ref())
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

    /// Adds a point of (`host`, "cpu") at `secs`, the host's slot (its first letter) named first.
    fn add(
        c: &mut Collector,
        host: &str,
        secs: f64,
        value: f64,
        stored: Stored<'_>,
    ) -> Result<(), Refused> {
        let slot = u32::from(host.as_bytes()[0]);
        c.name(slot, PackedKey::new(Some(host), Some("cpu")).bytes());
        let time_micros = (secs * 1e6) as i64;
        c.add(
            Point {
                slot,
                time_micros,
                value,
            },
            stored,
        )
    }

    fn nothing_stored(_: Slot) -> Result<Option<Bucket>, StoreFailed> {
        Ok(None)
    }

    #[test]
    fn a_key_holds_one_open_bucket_per_tier_whatever_its_rate() {
        let mut c = Collector::new(tiers(7 * 24 * 3_600_000), 10);
        for i in 0..100_000 {
            add(
                &mut c,
                "a",
                1000.0 + (i % 10) as f64 * 0.5,
                1.0,
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
        add(&mut c, "a", 1000.0, 1.0, &mut nothing_stored).unwrap();
        add(&mut c, "a", 1011.0, 2.0, &mut nothing_stored).unwrap();
        // 1000 s: fine bucket 1000, closed; 1011 s: fine bucket 1010, open.
        let (_, closed) = c.to_write(10);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].0, (1, 0, 1_000_000));
        // Late: joins the closed fine bucket, and the open coarse one (960..1020).
        add(&mut c, "a", 1005.0, 7.0, &mut nothing_stored).unwrap();
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
        add(&mut c, "a", 1000.0, 4.0, &mut nothing_stored).unwrap();
        c.close_due(i64::MAX);
        let (keys, written) = c.to_write(10);
        c.written(keys.len(), &written);
        assert_eq!(c.pending_len(), 0);
        let stored: HashMap<Slot, Bucket> = written.into_iter().collect();
        add(&mut c, "a", 1001.0, 6.0, &mut |slot| {
            Ok(stored.get(&slot).copied())
        })
        .unwrap();
        let fine = c.held(1, 0, 0, i64::MAX);
        assert_eq!((fine[0].1.count, fine[0].1.sum), (2, 10.0));
    }

    #[test]
    fn keys_past_the_limit_are_refused_and_old_keys_forgotten() {
        let mut c = Collector::new(tiers(3_600_000), 2);
        add(&mut c, "a", 10.0, 1.0, &mut nothing_stored).unwrap();
        add(&mut c, "b", 5000.0, 1.0, &mut nothing_stored).unwrap();
        assert_eq!(
            add(&mut c, "c", 10.0, 1.0, &mut nothing_stored),
            Err(Refused::MaxKeys)
        );
        c.close_due(i64::MAX);
        assert_eq!(c.forget_before(1_000_000_000), vec![1]);
        assert_eq!(c.len(), 1);
        assert!(c.held(1, 0, 0, i64::MAX).is_empty());
        add(&mut c, "c", 10.0, 1.0, &mut nothing_stored).unwrap();
    }

    #[test]
    fn closing_by_the_clock_waits_one_step_past_the_bucket() {
        let mut c = Collector::new(tiers(7 * 24 * 3_600_000), 10);
        add(&mut c, "a", 1000.0, 1.0, &mut nothing_stored).unwrap();
        c.close_due(1_019_999);
        assert_eq!(c.pending_len(), 0);
        c.close_due(1_020_000);
        assert_eq!(c.pending_len(), 1);
    }

    #[test]
    fn a_slot_adds_to_the_key_it_was_last_named_for_and_a_forgotten_series_starts_anew() {
        let mut c = Collector::new(tiers(7 * 24 * 3_600_000), 10);
        let at = |slot, secs: f64| Point {
            slot,
            time_micros: (secs * 1e6) as i64,
            value: 1.0,
        };
        assert_eq!(
            c.add(at(0, 1000.0), &mut nothing_stored),
            Err(Refused::Unnamed)
        );
        let name = |host| PackedKey::new(Some(host), Some("cpu"));
        c.name(0, name("a").bytes());
        c.add(at(0, 1000.0), &mut nothing_stored).unwrap();
        // "a" left the index; its slot numbers "b" now, and "a" comes back in slot 1.
        c.name(0, name("b").bytes());
        c.add(at(0, 1001.0), &mut nothing_stored).unwrap();
        c.name(1, name("a").bytes());
        c.add(at(1, 1002.0), &mut nothing_stored).unwrap();
        let count = |c: &Collector, id| c.held(id, 0, 0, i64::MAX)[0].1.count;
        assert_eq!((count(&c, 1), count(&c, 2)), (2, 1));
        // Both forgotten past the retention while their slots stay named: the next point of a
        // slot starts a new series of the slot's key, not one of whatever took the freed entry.
        c.close_due(i64::MAX);
        let (keys, written) = c.to_write(10);
        c.written(keys.len(), &written);
        let mut gone = c.forget_before(i64::MAX);
        gone.sort_unstable();
        assert_eq!(gone, [1, 2]);
        c.add(at(1, 2000.0), &mut nothing_stored).unwrap();
        c.add(at(0, 2001.0), &mut nothing_stored).unwrap();
        c.add(at(0, 2002.0), &mut nothing_stored).unwrap();
        let mut keys: Vec<(u64, KeyName)> =
            c.keys().iter().map(|k| (k.id, k.name.clone())).collect();
        keys.sort_unstable();
        assert_eq!(keys, [(3, name("a").name()), (4, name("b").name())]);
        assert_eq!((count(&c, 3), count(&c, 4)), (1, 2));
    }
}
