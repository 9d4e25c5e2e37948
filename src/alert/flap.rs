//! Flap detection for alerts: the dashboard's rule (`static/js/flap.js`, after Icinga's), on the
//! server. A key that changes state more than [`FLAP_START`] times within [`FLAP_WINDOW`] is
//! flapping; it stops once it changed at most [`FLAP_STOP`] times within the last window (the gap
//! between the two is Icinga's hysteresis, so a key near the limit does not toggle in and out).
//! While a key flaps, its state alerts give way to one alert saying so (see `derive`), instead
//! of a notification per change.
//!
//! Pure: a change is recorded at its event's time (the same on every node); the settling of keys
//! that stopped changing is judged at a time passed in. At most [`FLAP_MAX_KEYS`] keys are
//! tracked: past it the least recently changed is forgotten first.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::action::KeyName;

/// N: more state changes than this within the window start flapping.
pub const FLAP_START: usize = 5;
/// M: the window, 10 minutes (µs).
pub const FLAP_WINDOW: i64 = 10 * 60 * 1_000_000;
/// At most this many changes within the window stop flapping.
pub const FLAP_STOP: usize = 2;
/// Keys tracked at most.
pub const FLAP_MAX_KEYS: usize = 10_000;

/// One key's recent changes.
#[derive(Debug, Default)]
struct Key {
    changes: VecDeque<i64>,
    /// Since when it flaps (the time of the change that made it), if it does.
    flapping_since: Option<i64>,
    /// Its place in the recency order (0: none yet).
    recency: u64,
}

impl Key {
    fn trim(&mut self, now: i64) {
        while self
            .changes
            .front()
            .is_some_and(|&t| t <= now - FLAP_WINDOW)
        {
            self.changes.pop_front();
        }
    }
}

/// See the module's documentation.
#[derive(Debug, Default)]
pub struct Flaps {
    keys: HashMap<KeyName, Key>,
    /// Recency → key, least recently changed first.
    order: BTreeMap<u64, KeyName>,
    next: u64,
}

impl Flaps {
    /// Since when `key` flaps, if it does.
    pub fn flapping_since(&self, key: &KeyName) -> Option<i64> {
        self.keys.get(key).and_then(|k| k.flapping_since)
    }

    /// The number of changes within the window of a key (as of its last trim).
    pub fn recent_changes(&self, key: &KeyName) -> usize {
        self.keys.get(key).map_or(0, |k| k.changes.len())
    }

    /// Records a change of state of `key` at `time`. Returns the key forgotten to make room,
    /// if one was.
    pub fn record(&mut self, key: &KeyName, time: i64) -> Option<KeyName> {
        // From 1: a new entry's 0 means "not in the order yet".
        self.next += 1;
        let recency = self.next;
        let entry = self.keys.entry(key.clone()).or_default();
        if entry.recency != 0 {
            self.order.remove(&entry.recency);
        }
        entry.recency = recency;
        self.order.insert(recency, key.clone());
        entry.changes.push_back(time);
        entry.trim(time);
        if entry.flapping_since.is_none() && entry.changes.len() > FLAP_START {
            entry.flapping_since = Some(time);
        } else if entry.flapping_since.is_some() && entry.changes.len() <= FLAP_STOP {
            entry.flapping_since = None;
        }
        if self.keys.len() > FLAP_MAX_KEYS {
            let (_, oldest) = self.order.pop_first()?;
            self.keys.remove(&oldest);
            return Some(oldest);
        }
        None
    }

    /// Forgets `key` (it left the index).
    pub fn forget(&mut self, key: &KeyName) {
        if let Some(entry) = self.keys.remove(key) {
            self.order.remove(&entry.recency);
        }
    }

    /// The keys that stop flapping at `now` (too few changes left in the window); forgets keys
    /// with no change left in it.
    pub fn settle(&mut self, now: i64) -> Vec<KeyName> {
        let mut stopped = Vec::new();
        let mut idle = Vec::new();
        for (name, key) in &mut self.keys {
            key.trim(now);
            if key.flapping_since.is_some() && key.changes.len() <= FLAP_STOP {
                key.flapping_since = None;
                stopped.push(name.clone());
            }
            if key.flapping_since.is_none() && key.changes.is_empty() {
                idle.push(name.clone());
            }
        }
        for name in idle {
            self.forget(&name);
        }
        stopped.sort();
        stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> KeyName {
        (Some(format!("h{n}")), None)
    }

    #[test]
    fn more_than_five_changes_in_ten_minutes_flap_until_at_most_two_are_left() {
        let mut flaps = Flaps::default();
        let minute = 60 * 1_000_000;
        for i in 0..5 {
            flaps.record(&key(1), i * minute);
        }
        assert_eq!(
            flaps.flapping_since(&key(1)),
            None,
            "five are not more than five"
        );
        flaps.record(&key(1), 5 * minute);
        assert_eq!(flaps.flapping_since(&key(1)), Some(5 * minute));
        // At 12 minutes the window holds the changes at 3, 4 and 5: more than two.
        assert!(flaps.settle(12 * minute).is_empty());
        assert_eq!(flaps.flapping_since(&key(1)), Some(5 * minute));
        // At 13, those at 4 and 5: it settles.
        assert_eq!(flaps.settle(13 * minute), vec![key(1)]);
        assert_eq!(flaps.flapping_since(&key(1)), None);
        assert_eq!(flaps.settle(16 * minute), Vec::<KeyName>::new());
        assert_eq!(flaps.recent_changes(&key(1)), 0, "forgotten once idle");
    }

    #[test]
    fn the_least_recently_changed_key_is_forgotten_past_the_bound() {
        let mut flaps = Flaps::default();
        for n in 0..FLAP_MAX_KEYS as u32 {
            assert_eq!(flaps.record(&key(n), 1), None);
        }
        flaps.record(&key(0), 2);
        assert_eq!(flaps.record(&key(99_999), 3), Some(key(1)));
    }
}
