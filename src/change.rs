//! What the engine tells the rest of the server: state transitions and snapshots of the index.
//!
//! A leaf: it depends on [`crate::event`] only, so the engine (which makes these), the broadcaster
//! (which frames and fans them out) and the store (which keeps them as history) can all name them
//! without depending on each other.

use std::sync::Arc;

use crate::event::Event;

/// A state transition: the only thing dashboards are pushed.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Strictly increasing, never reused while the process runs.
    pub seq: u64,
    pub previous_state: String,
    /// The event that caused the change, as now indexed.
    pub event: Arc<Event>,
    /// The event it replaced, if the key was indexed: a filtered watcher needs it to see a
    /// service leave its filter.
    pub previous: Option<Arc<Event>>,
    /// The key left the index (it stayed expired past the keep time): `event` is its last
    /// (expired) event, and there is no current one.
    pub removed: bool,
}

/// Every indexed event (with or without a state), valid exactly at `seq`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub seq: u64,
    pub events: Vec<Arc<Event>>,
}
