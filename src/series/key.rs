//! What names a series and what feeds it: the key (host, service), its id in the store, one
//! point (an applied event's metric and time) and where a closed bucket lives.

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

/// One metric of one applied event.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub name: KeyName,
    pub time_micros: i64,
    pub value: f64,
}

/// Where a closed bucket lives: key id, tier (its index in the tiers), bucket start (ms).
pub type Slot = (u64, u8, i64);
