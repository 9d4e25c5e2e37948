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
//!
//! Expiry: every indexed event expires at `time + ttl` (the server's default TTL when the event
//! has none). Expiry times are kept ordered, so a tick that finds nothing due costs one lookup.
//! An expired key that had a state stays indexed in state `"expired"` (a change from its last
//! state, with `previous_state` set) until it reports again — what went silent is exactly what a
//! dashboard must keep showing. A key that never had a state is simply dropped.

use std::collections::{BTreeSet, HashMap};
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
    /// The event it replaced, if the key was indexed: a filtered watcher needs it to see a
    /// service leave its filter.
    pub previous: Option<Arc<Event>>,
}

/// Every indexed event (with or without a state), valid exactly at `seq`.
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
    /// When the entry expires (µs since the epoch); `None` once it has expired.
    expires_at: Option<i64>,
}

/// The state given to an entry whose TTL ran out.
pub const EXPIRED: &str = "expired";

#[derive(Debug)]
pub struct Engine {
    init_state: String,
    default_ttl_micros: i64,
    index: HashMap<EventKey, Entry>,
    /// (expires_at, key) for every live entry, ordered so the reaper only looks at what is due.
    expiry: BTreeSet<(i64, EventKey)>,
    /// Last assigned `seq`; 0 before the first change.
    seq: u64,
}

impl Engine {
    /// `default_ttl_secs` applies to events that carry no TTL (Riemann's `default-ttl`).
    pub fn new(init_state: impl Into<String>, default_ttl_secs: f64) -> Self {
        Self {
            init_state: init_state.into(),
            default_ttl_micros: secs_to_micros(default_ttl_secs),
            index: HashMap::new(),
            expiry: BTreeSet::new(),
            seq: 0,
        }
    }

    /// Rebuilds the engine from a store: the recovered index and the last `seq`, from which
    /// numbering continues. Expiry times are recomputed from each event's time and TTL.
    pub fn restore(&mut self, seq: u64, events: Vec<Event>) {
        self.seq = seq;
        for event in events {
            let key = event.key();
            let expires_at = if event.state.as_deref() == Some(EXPIRED) {
                None
            } else {
                let at = self.expires_at(&event);
                self.expiry.insert((at, key.clone()));
                Some(at)
            };
            self.index.insert(
                key,
                Entry {
                    event: Arc::new(event),
                    expires_at,
                },
            );
        }
    }

    fn expires_at(&self, event: &Event) -> i64 {
        let ttl = event
            .ttl
            .map_or(self.default_ttl_micros, |t| secs_to_micros(f64::from(t)));
        event.time_micros.saturating_add(ttl)
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

    /// Applies a batch in order, appending its changes to `changes` and, when asked, every
    /// newly indexed event to `indexed` (for watchers of all index updates).
    pub fn apply(
        &mut self,
        events: Vec<Event>,
        changes: &mut Vec<Change>,
        mut indexed: Option<&mut Vec<Arc<Event>>>,
    ) {
        for event in events {
            let (event, change) = self.apply_one(event);
            if let Some(indexed) = indexed.as_deref_mut() {
                indexed.push(event);
            }
            if let Some(change) = change {
                changes.push(change);
            }
        }
    }

    fn apply_one(&mut self, mut event: Event) -> (Arc<Event>, Option<Change>) {
        let key = event.key();
        let old = self.index.remove(&key);
        if let Some(at) = old.as_ref().and_then(|o| o.expires_at) {
            self.expiry.remove(&(at, key.clone()));
        }
        let previous = old.map(|o| o.event);
        let current = previous.as_ref().and_then(|e| e.state.clone());
        let changed = match &event.state {
            Some(state) => current.as_deref().unwrap_or(&self.init_state) != state,
            None => {
                // Keep the key's last real state (if any) so the index never "forgets" a
                // critical just because a metric-only update arrived.
                event.state.clone_from(&current);
                false
            }
        };
        let expires_at = self.expires_at(&event);
        self.expiry.insert((expires_at, key.clone()));
        let event = Arc::new(event);
        self.index.insert(
            key,
            Entry {
                event: Arc::clone(&event),
                expires_at: Some(expires_at),
            },
        );
        if !changed {
            return (event, None);
        }
        let change = self.next_change(current, Arc::clone(&event), previous);
        (event, Some(change))
    }

    fn next_change(
        &mut self,
        current: Option<String>,
        event: Arc<Event>,
        previous: Option<Arc<Event>>,
    ) -> Change {
        self.seq += 1;
        Change {
            seq: self.seq,
            previous_state: current.unwrap_or_else(|| self.init_state.clone()),
            event,
            previous,
        }
    }

    /// Expires every entry due at or before `now_micros`, appending the resulting changes.
    /// Returns how many entries expired.
    pub fn expire(&mut self, now_micros: i64, changes: &mut Vec<Change>) -> usize {
        let mut expired = 0;
        while let Some((at, _)) = self.expiry.first() {
            if *at > now_micros {
                break;
            }
            let Some((_, key)) = self.expiry.pop_first() else {
                break;
            };
            expired += 1;
            let Some(entry) = self.index.remove(&key) else {
                continue;
            };
            let Some(state) = entry.event.state.clone() else {
                // Never had a state: nothing to tell anyone, just forget it.
                continue;
            };
            let mut tombstone = (*entry.event).clone();
            tombstone.state = Some(EXPIRED.to_owned());
            tombstone.time_micros = now_micros;
            let tombstone = Arc::new(tombstone);
            self.index.insert(
                key,
                Entry {
                    event: Arc::clone(&tombstone),
                    expires_at: None,
                },
            );
            if state != EXPIRED {
                let change = self.next_change(Some(state), tombstone, Some(entry.event));
                changes.push(change);
            }
        }
        expired
    }

    /// When the next entry expires, if any.
    pub fn next_expiry(&self) -> Option<i64> {
        self.expiry.first().map(|(at, _)| *at)
    }

    /// Every indexed event, as of now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            seq: self.seq,
            events: self.index.values().map(|e| Arc::clone(&e.event)).collect(),
        }
    }

    /// The indexed event for a key, if any.
    pub fn get(&self, key: &EventKey) -> Option<&Arc<Event>> {
        self.index.get(key).map(|e| &e.event)
    }
}

fn secs_to_micros(secs: f64) -> i64 {
    if secs.is_finite() && secs > 0.0 {
        (secs * 1e6).min(i64::MAX as f64) as i64
    } else {
        0
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
        engine.apply(events, &mut changes, None);
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
        let mut e = Engine::new("ok", 60.0);
        assert!(apply(&mut e, vec![ev("a", "cpu", Some("ok"))]).is_empty());
        let c = apply(&mut e, vec![ev("b", "cpu", Some("critical"))]);
        assert_eq!(summary(&c), vec![(1, "ok".into(), "critical".into())]);
    }

    #[test]
    fn ok_critical_critical_ok() {
        let mut e = Engine::new("ok", 60.0);
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
        let mut e = Engine::new("unknown", 60.0);
        let c = apply(&mut e, vec![ev("a", "cpu", Some("ok"))]);
        assert_eq!(summary(&c), vec![(1, "unknown".into(), "ok".into())]);
    }

    #[test]
    fn same_state_still_updates_the_index() {
        let mut e = Engine::new("ok", 60.0);
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
        let mut e = Engine::new("ok", 60.0);
        assert!(apply(&mut e, vec![ev("a", "load", None)]).is_empty());
        assert_eq!(e.len(), 1);
        assert_eq!(
            e.snapshot().events[0].state,
            None,
            "indexed without a state"
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
        let mut e = Engine::new("ok", 60.0);
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
        let mut e = Engine::new("ok", 60.0);
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
        let mut a = Engine::new("ok", 60.0);
        let mut b = Engine::new("ok", 60.0);
        assert_eq!(apply(&mut a, input.clone()), apply(&mut b, input));
    }

    fn at(host: &str, state: Option<&str>, time_s: i64, ttl: Option<f32>) -> Event {
        Event {
            time_micros: time_s * 1_000_000,
            ttl,
            ..ev(host, "svc", state)
        }
    }

    #[test]
    fn expiry_at_time_plus_ttl_is_a_change_to_expired() {
        let mut e = Engine::new("ok", 60.0);
        apply(
            &mut e,
            vec![
                at("a", Some("critical"), 100, Some(10.0)),
                at("b", Some("ok"), 100, None),
            ],
        );
        let mut changes = Vec::new();
        assert_eq!(e.expire(109_999_999, &mut changes), 0, "not due yet");
        assert_eq!(e.next_expiry(), Some(110_000_000));
        assert_eq!(e.expire(110_000_000, &mut changes), 1);
        assert_eq!(
            summary(&changes),
            vec![(2, "critical".into(), "expired".into())]
        );
        assert_eq!(
            changes[0].previous.as_ref().unwrap().state.as_deref(),
            Some("critical")
        );
        assert_eq!(changes[0].event.time_micros, 110_000_000);
        // b uses the default TTL of 60 s.
        changes.clear();
        assert_eq!(e.expire(159_000_000, &mut changes), 0);
        assert_eq!(e.expire(160_000_000, &mut changes), 1);
        assert_eq!(summary(&changes), vec![(3, "ok".into(), "expired".into())]);
        assert_eq!(e.next_expiry(), None, "nothing left to expire");
        assert_eq!(e.len(), 2, "expired keys stay visible");
    }

    #[test]
    fn a_newer_event_pushes_expiry_out() {
        let mut e = Engine::new("ok", 60.0);
        apply(&mut e, vec![at("a", Some("warning"), 100, Some(10.0))]);
        apply(&mut e, vec![at("a", Some("warning"), 105, Some(10.0))]);
        let mut changes = Vec::new();
        assert_eq!(e.expire(110_000_000, &mut changes), 0);
        assert_eq!(e.expire(115_000_000, &mut changes), 1);
        assert_eq!(changes.len(), 1);
    }

    #[test]
    fn an_expired_key_that_reports_again_changes_from_expired() {
        let mut e = Engine::new("ok", 60.0);
        apply(&mut e, vec![at("a", Some("ok"), 100, Some(1.0))]);
        let mut changes = Vec::new();
        e.expire(200_000_000, &mut changes);
        let c = apply(&mut e, vec![at("a", Some("ok"), 201, Some(1.0))]);
        assert_eq!(summary(&c), vec![(2, "expired".into(), "ok".into())]);
    }

    #[test]
    fn stateless_entries_expire_silently() {
        let mut e = Engine::new("ok", 60.0);
        apply(&mut e, vec![at("a", None, 100, Some(1.0))]);
        let mut changes = Vec::new();
        assert_eq!(e.expire(101_000_000, &mut changes), 1);
        assert!(changes.is_empty());
        assert!(e.is_empty());
    }
}
