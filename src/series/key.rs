//! What names a series and what feeds it: the key (host, service), its id in the store, one
//! point (an applied event's metric and time) and where a closed bucket lives.

use crate::event::key::{Key, KeyRef};

/// A series' name: the index key it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyName {
    pub host: Option<String>,
    pub service: Option<String>,
}

/// A key with a series, and its id in the store (local to this node's store).
#[derive(Debug, PartialEq, Eq)]
pub struct SeriesKey {
    pub id: u64,
    pub name: KeyName,
}

/// One metric of one applied event, named by the index's own key (shared, not copied: see
/// [`crate::event::key`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub key: Key,
    pub time_micros: i64,
    pub value: f64,
}

impl KeyName {
    /// The key named, as the index and the points spell it.
    pub fn key(&self) -> Key {
        Key::new(self.key_ref())
    }

    /// The key named, borrowed: looks a point's key up without making one.
    pub fn key_ref(&self) -> KeyRef<'_> {
        KeyRef::of_parts(self.host.as_deref(), self.service.as_deref())
    }

    /// The name of `key`.
    pub fn of(key: &Key) -> Self {
        Self {
            host: key.host().map(str::to_owned),
            service: key.service().map(str::to_owned),
        }
    }
}

/// Where a closed bucket lives: key id, tier (its index in the tiers), bucket start (ms).
pub type Slot = (u64, u8, i64);
