//! What the engine tells the rest of the server: state transitions and snapshots of the index.
//!
//! A leaf: it depends on [`crate::event`] and [`crate::action`] (plain data) only, so the engine (which makes these), the broadcaster
//! (which frames and fans them out) and the store (which keeps them as history) can all name them
//! without depending on each other.

use std::sync::Arc;

use crate::action::{ActionRecord, Actions};
use crate::event::Event;

/// A state transition: the only thing dashboards are pushed — or, with [`Change::action`] set,
/// an operator-action record (an ack, an unack, the silence set), which takes a `seq` from the
/// same counter and travels the same way (published, logged, kept in history) so that its order
/// against changes is the engine's order everywhere.
#[derive(Debug, Clone, PartialEq, Default)]
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
    /// An active silence matched the key's event when the change was made.
    pub silenced: bool,
    /// The removal was an operator's clear, by this name.
    pub cleared_by: Option<String>,
    /// Set for an operator-action record: then `event`, `previous`, `previous_state` and
    /// `removed` mean nothing (an empty event, no key) and consumers must look here first.
    pub action: Option<Arc<ActionRecord>>,
}

impl Change {
    /// An operator-action record at `seq`.
    pub fn action(seq: u64, record: ActionRecord) -> Self {
        Change {
            seq,
            action: Some(Arc::new(record)),
            ..Change::default()
        }
    }

    /// Whether this is an operator-action record rather than a state change.
    pub fn is_action(&self) -> bool {
        self.action.is_some()
    }
}

/// Every indexed event (with or without a state), valid exactly at `seq`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub seq: u64,
    pub events: Vec<Arc<Event>>,
    /// Acks and silences, valid at the same `seq`.
    pub actions: Actions,
}
