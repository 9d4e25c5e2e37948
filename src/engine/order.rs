//! Which inputs of an ordered log take effect: the apply-side filter of cluster mode.
//!
//! A connection's inputs are published each on its own, so a retry after a failover can store
//! an older input after a newer one, and a publish given up as refused can still be stored
//! later (flushed on reconnect). Every node reads the same log, so every node can decide alike,
//! from what the log itself says ([`Stamp`]):
//!
//! - an input stored after its deadline is not applied ([`Verdict::Late`]): its sender was (or
//!   will be) told "not applied", and that stays true;
//! - an input whose connection (its origin) already had a later input applied is not applied
//!   ([`Verdict::Overtaken`]): a connection's inputs take effect in the order it sent them, never
//!   an older one after a newer one.
//!
//! Why drop the overtaken input rather than hold the newer one until the gap fills: the gap
//! usually never fills (its input was refused), holding would delay every later answer of the
//! connection and put held inputs into every snapshot; and for a monitoring index the newer
//! state is the one that must win. Its sender is told it was not applied.
//!
//! The table is part of the engine's state (and of its images): a node started from a snapshot
//! decides like the nodes that applied the whole log. It is bounded: an origin is forgotten once
//! the log's time passes its last deadline (any later input of it would be late anyway), and at
//! [`MAX_ORIGINS`] the origin with the earliest deadline is forgotten first. This module never
//! reads a clock: time is the log's.

use std::collections::{BTreeSet, HashMap};

/// Origins remembered at most; past it the one with the earliest deadline is forgotten (the same
/// one on every node). Each origin is a connection that published within one `--cluster-timeout`.
pub const MAX_ORIGINS: usize = 100_000;

/// What the ordered log says about one of its inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// When the log stored it (its own clock, the same on every node), µs since the epoch.
    pub stored_micros: i64,
    /// The publisher's deadline (µs since the epoch): stored after it, the input is not applied.
    pub deadline_micros: Option<i64>,
    /// The connection it came from and its number there (`None`: no order to keep).
    pub origin: Option<(String, u64)>,
}

/// Whether a stamped input takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Apply,
    /// Stored after its deadline.
    Late,
    /// Its origin's input number `last`, sent after it, was applied already.
    Overtaken {
        last: u64,
    },
}

impl Verdict {
    /// Why the input was not applied, for its sender and `/metrics`.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Verdict::Apply => None,
            Verdict::Late => Some("late"),
            Verdict::Overtaken { .. } => Some("overtaken"),
        }
    }
}

/// Per origin: the last input number applied and the latest deadline seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderTable {
    /// The log's time: the latest `stored_micros` seen (never goes back).
    stream_micros: i64,
    origins: HashMap<String, (u64, i64)>,
    /// `(deadline, origin)` of every origin, earliest first: what is forgotten next.
    by_deadline: BTreeSet<(i64, String)>,
}

/// One remembered origin, as images store it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginEntry {
    pub origin: String,
    pub last: u64,
    pub deadline_micros: i64,
}

impl OrderTable {
    /// Decides whether the input stamped `stamp` takes effect, and remembers it if so.
    pub fn admit(&mut self, stamp: &Stamp) -> Verdict {
        self.stream_micros = self.stream_micros.max(stamp.stored_micros);
        self.forget_until(self.stream_micros);
        let Some(deadline) = stamp.deadline_micros else {
            return Verdict::Apply;
        };
        // The log's time, not only this input's: a new leader's clock a little behind the old
        // one's must not let a late input in.
        if self.stream_micros > deadline {
            return Verdict::Late;
        }
        let Some((origin, number)) = &stamp.origin else {
            return Verdict::Apply;
        };
        let deadline = match self.origins.get(origin) {
            Some(&(last, _)) if *number <= last => return Verdict::Overtaken { last },
            Some(&(_, known)) => {
                self.by_deadline.remove(&(known, origin.clone()));
                known.max(deadline)
            }
            None => deadline,
        };
        self.origins.insert(origin.clone(), (*number, deadline));
        self.by_deadline.insert((deadline, origin.clone()));
        while self.origins.len() > MAX_ORIGINS {
            self.forget_earliest();
        }
        Verdict::Apply
    }

    /// Forgets every origin whose last deadline is before `now_micros`.
    fn forget_until(&mut self, now_micros: i64) {
        while self
            .by_deadline
            .first()
            .is_some_and(|(deadline, _)| *deadline < now_micros)
        {
            self.forget_earliest();
        }
    }

    fn forget_earliest(&mut self) {
        if let Some((_, origin)) = self.by_deadline.pop_first() {
            self.origins.remove(&origin);
        }
    }

    /// Origins remembered now.
    pub fn len(&self) -> usize {
        self.origins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }

    /// The log's time as far as this table has seen it.
    pub fn stream_micros(&self) -> i64 {
        self.stream_micros
    }

    /// Every remembered origin, earliest deadline first (what an image stores).
    pub fn entries(&self) -> impl Iterator<Item = OriginEntry> + '_ {
        self.by_deadline
            .iter()
            .map(|(deadline, origin)| OriginEntry {
                origin: origin.clone(),
                last: self.origins.get(origin).map_or(0, |&(last, _)| last),
                deadline_micros: *deadline,
            })
    }

    /// The table an image stored (at most [`MAX_ORIGINS`] of its entries are kept).
    pub fn restore(stream_micros: i64, entries: impl IntoIterator<Item = OriginEntry>) -> Self {
        let mut table = Self {
            stream_micros,
            ..Self::default()
        };
        for entry in entries {
            if let Some((_, old)) = table
                .origins
                .insert(entry.origin.clone(), (entry.last, entry.deadline_micros))
            {
                table.by_deadline.remove(&(old, entry.origin.clone()));
            }
            table
                .by_deadline
                .insert((entry.deadline_micros, entry.origin));
            while table.origins.len() > MAX_ORIGINS {
                table.forget_earliest();
            }
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(stored: i64, deadline: i64, origin: &str, number: u64) -> Stamp {
        Stamp {
            stored_micros: stored,
            deadline_micros: Some(deadline),
            origin: Some((origin.into(), number)),
        }
    }

    #[test]
    fn an_origins_older_input_after_a_newer_one_is_not_applied() {
        let mut table = OrderTable::default();
        assert_eq!(table.admit(&stamp(10, 100, "c1", 1)), Verdict::Apply);
        assert_eq!(table.admit(&stamp(11, 100, "c1", 3)), Verdict::Apply);
        assert_eq!(
            table.admit(&stamp(12, 100, "c1", 2)),
            Verdict::Overtaken { last: 3 }
        );
        // A retry stored twice is not applied twice either.
        assert_eq!(
            table.admit(&stamp(13, 100, "c1", 3)),
            Verdict::Overtaken { last: 3 }
        );
        // Other origins are not held back.
        assert_eq!(table.admit(&stamp(14, 100, "c2", 1)), Verdict::Apply);
        assert_eq!(table.admit(&stamp(15, 100, "c1", 4)), Verdict::Apply);
    }

    #[test]
    fn an_input_stored_after_its_deadline_is_not_applied() {
        let mut table = OrderTable::default();
        assert_eq!(table.admit(&stamp(101, 100, "c1", 1)), Verdict::Late);
        // The log's time never goes back: stored "earlier" by a clock behind is late too.
        assert_eq!(table.admit(&stamp(99, 100, "c2", 1)), Verdict::Late);
        // Inputs without a deadline (ticks) always apply.
        let tick = Stamp {
            stored_micros: 500,
            deadline_micros: None,
            origin: None,
        };
        assert_eq!(table.admit(&tick), Verdict::Apply);
    }

    #[test]
    fn origins_are_forgotten_once_the_log_passes_their_deadline() {
        let mut table = OrderTable::default();
        table.admit(&stamp(10, 100, "c1", 5));
        table.admit(&stamp(20, 200, "c2", 1));
        assert_eq!(table.len(), 2);
        table.admit(&Stamp {
            stored_micros: 150,
            deadline_micros: None,
            origin: None,
        });
        assert_eq!(table.len(), 1, "c1's deadline has passed");
        // An old input of the forgotten origin is late now, so forgetting it loses nothing.
        assert_eq!(table.admit(&stamp(151, 100, "c1", 4)), Verdict::Late);
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_earliest_deadline_first() {
        let mut table = OrderTable::default();
        for i in 0..MAX_ORIGINS as i64 + 10 {
            table.admit(&stamp(0, 1_000 + i, &format!("c{i}"), 1));
        }
        assert_eq!(table.len(), MAX_ORIGINS);
        assert_eq!(
            table.entries().next().map(|e| e.deadline_micros),
            Some(1_010)
        );
    }

    #[test]
    fn a_restored_table_decides_like_the_original() {
        let mut table = OrderTable::default();
        table.admit(&stamp(10, 100, "c1", 3));
        table.admit(&stamp(11, 120, "c2", 7));
        let mut restored = OrderTable::restore(table.stream_micros(), table.entries());
        assert_eq!(restored, table);
        assert_eq!(
            restored.admit(&stamp(12, 100, "c1", 2)),
            table.admit(&stamp(12, 100, "c1", 2))
        );
    }
}
