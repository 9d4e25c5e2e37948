//! The index and the state-change filter, as a deterministic state machine.
//!
//! Given the same ordered batches it yields the same index, the same changes and the same `seq`s:
//! it never reads a clock and never does I/O. That is what makes it testable without sleeps and,
//! later, replayable from a log. The owner task in [`super`] feeds it.
//!
//! Change detection is Riemann's `(changed-state {:init "ok"} …)`: per (host, service) the previous
//! state starts at the init state; an event whose state differs is a change. Events without a
//! state update the index (metric, description, time) but keep the key's last state and are never
//! a change — collectd sends metrics that way, and they must not flap a dashboard.

use std::collections::HashMap;
use std::sync::Arc;

use crate::event::{Event, EventKey};

/// A state transition: the only thing dashboards are pushed.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Strictly increasing, never reused while the process runs.
    pub seq: u64,
    pub previous_state: String,
    /// The event that caused the change, as now indexed.
    pub event: Arc<Event>,
}

/// Every indexed event that has a state, valid exactly at `seq`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub seq: u64,
    pub events: Vec<Arc<Event>>,
}

#[derive(Debug)]
struct Entry {
    /// The latest event for the key; its `state` is the key's current state (carried forward
    /// from earlier events when the latest one had none).
    event: Arc<Event>,
}

#[derive(Debug)]
pub struct Engine {
    init_state: String,
    index: HashMap<EventKey, Entry>,
    /// Last assigned `seq`; 0 before the first change.
    seq: u64,
}

impl Engine {
    pub fn new(init_state: impl Into<String>) -> Self {
        Self {
            init_state: init_state.into(),
            index: HashMap::new(),
            seq: 0,
        }
    }

    /// The last `seq` handed out.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Number of indexed (host, service) keys.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Applies a batch in order, appending its changes to `changes`.
    pub fn apply(&mut self, events: Vec<Event>, changes: &mut Vec<Change>) {
        for event in events {
            if let Some(change) = self.apply_one(event) {
                changes.push(change);
            }
        }
    }

    fn apply_one(&mut self, mut event: Event) -> Option<Change> {
        let key = event.key();
        let current = self.index.get(&key).and_then(|e| e.event.state.clone());
        let previous_state = current.unwrap_or_else(|| self.init_state.clone());
        let changed = match &event.state {
            Some(state) => *state != previous_state,
            None => {
                // Keep the key's last real state (if any) so the index never "forgets" a
                // critical just because a metric-only update arrived.
                event.state = self.index.get(&key).and_then(|e| e.event.state.clone());
                false
            }
        };
        let event = Arc::new(event);
        self.index.insert(
            key,
            Entry {
                event: Arc::clone(&event),
            },
        );
        if !changed {
            return None;
        }
        self.seq += 1;
        Some(Change {
            seq: self.seq,
            previous_state,
            event,
        })
    }

    /// Every indexed event that has a state, as of now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            seq: self.seq,
            events: self
                .index
                .values()
                .filter(|e| e.event.state.is_some())
                .map(|e| Arc::clone(&e.event))
                .collect(),
        }
    }

    /// The indexed event for a key, if any.
    pub fn get(&self, key: &EventKey) -> Option<&Arc<Event>> {
        self.index.get(key).map(|e| &e.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(host: &str, service: &str, state: Option<&str>) -> Event {
        Event {
            host: Some(host.into()),
            service: Some(service.into()),
            state: state.map(Into::into),
            ..Default::default()
        }
    }

    fn apply(engine: &mut Engine, events: Vec<Event>) -> Vec<Change> {
        let mut changes = Vec::new();
        engine.apply(events, &mut changes);
        changes
    }

    fn summary(changes: &[Change]) -> Vec<(u64, String, String)> {
        changes
            .iter()
            .map(|c| {
                (
                    c.seq,
                    c.previous_state.clone(),
                    c.event.state.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn first_ok_is_not_a_change_first_critical_is() {
        let mut e = Engine::new("ok");
        assert!(apply(&mut e, vec![ev("a", "cpu", Some("ok"))]).is_empty());
        let c = apply(&mut e, vec![ev("b", "cpu", Some("critical"))]);
        assert_eq!(summary(&c), vec![(1, "ok".into(), "critical".into())]);
    }

    #[test]
    fn ok_critical_critical_ok() {
        let mut e = Engine::new("ok");
        let c = apply(
            &mut e,
            vec![
                ev("a", "cpu", Some("ok")),
                ev("a", "cpu", Some("critical")),
                ev("a", "cpu", Some("critical")),
                ev("a", "cpu", Some("ok")),
            ],
        );
        assert_eq!(
            summary(&c),
            vec![
                (1, "ok".into(), "critical".into()),
                (2, "critical".into(), "ok".into())
            ]
        );
        assert_eq!(e.seq(), 2);
    }

    #[test]
    fn init_state_is_configurable() {
        let mut e = Engine::new("unknown");
        let c = apply(&mut e, vec![ev("a", "cpu", Some("ok"))]);
        assert_eq!(summary(&c), vec![(1, "unknown".into(), "ok".into())]);
    }

    #[test]
    fn same_state_still_updates_the_index() {
        let mut e = Engine::new("ok");
        let mut first = ev("a", "cpu", Some("warning"));
        first.description = Some("old".into());
        let mut second = ev("a", "cpu", Some("warning"));
        second.description = Some("new".into());
        assert_eq!(apply(&mut e, vec![first, second]).len(), 1);
        let key = ev("a", "cpu", None).key();
        assert_eq!(e.get(&key).unwrap().description.as_deref(), Some("new"));
    }

    #[test]
    fn stateless_events_are_indexed_never_a_change_and_keep_the_state() {
        let mut e = Engine::new("ok");
        assert!(apply(&mut e, vec![ev("a", "load", None)]).is_empty());
        assert_eq!(e.len(), 1);
        assert!(
            e.snapshot().events.is_empty(),
            "no state, not in the snapshot"
        );

        apply(&mut e, vec![ev("a", "cpu", Some("critical"))]);
        let mut metric_only = ev("a", "cpu", None);
        metric_only.metric = Some(crate::event::Metric::Int(9));
        assert!(apply(&mut e, vec![metric_only]).is_empty());
        let key = ev("a", "cpu", None).key();
        let indexed = e.get(&key).unwrap();
        assert_eq!(indexed.state.as_deref(), Some("critical"));
        assert_eq!(indexed.metric, Some(crate::event::Metric::Int(9)));
        // ...and the next critical is still not a change.
        assert!(apply(&mut e, vec![ev("a", "cpu", Some("critical"))]).is_empty());
    }

    #[test]
    fn absent_host_or_service_is_its_own_key() {
        let mut e = Engine::new("ok");
        let no_host = Event {
            service: Some("cpu".into()),
            state: Some("critical".into()),
            ..Default::default()
        };
        let no_service = Event {
            host: Some("cpu".into()),
            state: Some("critical".into()),
            ..Default::default()
        };
        assert_eq!(apply(&mut e, vec![no_host, no_service]).len(), 2);
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn snapshot_is_valid_at_the_last_seq() {
        let mut e = Engine::new("ok");
        let batch = (0..200)
            .map(|i| ev(&format!("h{i}"), "cpu", Some("critical")))
            .collect();
        let c = apply(&mut e, batch);
        assert_eq!(c.len(), 200);
        assert!(c.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        let snap = e.snapshot();
        assert_eq!(snap.seq, 200);
        assert_eq!(snap.events.len(), 200);
    }

    #[test]
    fn same_input_same_output() {
        let input: Vec<Event> = (0..50)
            .map(|i| {
                let state = ["ok", "critical", "warning", ""][i % 4];
                ev(
                    &format!("h{}", i % 7),
                    "svc",
                    Some(state).filter(|s| !s.is_empty()),
                )
            })
            .collect();
        let mut a = Engine::new("ok");
        let mut b = Engine::new("ok");
        assert_eq!(apply(&mut a, input.clone()), apply(&mut b, input));
    }
}
