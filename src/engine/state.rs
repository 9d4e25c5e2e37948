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
//! has none). Expiry times are kept in a lazily rescheduled min-heap, so a tick that finds nothing
//! due costs one look at its top and an update that only pushes expiry out costs no heap work.
//! An expired key that had a state stays indexed in state `"expired"` (a change from its last
//! state, with `previous_state` set) — what went silent is exactly what a dashboard must keep
//! showing — until it reports again or, when the engine is given a keep time
//! ([`Engine::set_expired_keep`]), until it has been expired that long: then it is removed, with a
//! change marked [`Change::removed`] so every screen drops it too. Without that second step the
//! index would grow with every host ever seen (autoscaled machines, containers). A key that never
//! had a state is simply dropped when it expires.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use hashbrown::{Equivalent, HashMap};

use crate::change::{Change, Snapshot};
use crate::event::{Event, EventKey};

#[derive(Debug)]
struct Entry {
    /// The latest event for the key; its `state` is the key's current state (carried forward
    /// from earlier events when the latest one had none).
    event: Arc<Event>,
    /// When the entry expires (µs since the epoch) — or, once `expired`, when it is removed;
    /// `None` when nothing is due.
    expires_at: Option<i64>,
    /// Expired (nothing reported within its TTL), waiting out the keep time.
    expired: bool,
    /// The time of this key's live item in the expiry heap (`<= expires_at`), if any. Heap items
    /// for the key at any other time are stale and skipped.
    scheduled: Option<i64>,
    /// Updated since [`Engine::take_unsaved`] last returned it (only when tracking).
    unsaved: bool,
}

/// The index key, shared (not copied) between the index and the expiry heap: host and service in
/// one allocation, inline behind the `Arc`'s counts, so comparing a key during a lookup touches
/// one cache line instead of chasing a pointer per string (the lookup dominated the engine's
/// profile). Layout: `[flags: 1][host length: 4, LE][host][service]`, flags bit 0 = host present,
/// bit 1 = service present — canonical, so equal bytes mean equal keys.
#[derive(Debug, Clone)]
struct Key(Arc<[u8]>);

const HEADER: usize = 5;

impl Key {
    fn new(parts: KeyRef<'_>) -> Self {
        let host = parts.host.unwrap_or_default();
        let service = parts.service.unwrap_or_default();
        let mut bytes = Vec::with_capacity(HEADER + host.len() + service.len());
        bytes.push(u8::from(parts.host.is_some()) | (u8::from(parts.service.is_some()) << 1));
        // Hosts longer than 4 GiB cannot arrive: frames are bounded far below that.
        bytes.extend_from_slice(&(host.len() as u32).to_le_bytes());
        bytes.extend_from_slice(host);
        bytes.extend_from_slice(service);
        Key(Arc::from(bytes))
    }

    fn parts(&self) -> KeyRef<'_> {
        let bytes = &self.0[..];
        let flags = bytes[0];
        let host_len = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        let (host, service) = bytes[HEADER..].split_at(host_len);
        KeyRef {
            host: (flags & 1 != 0).then_some(host),
            service: (flags & 2 != 0).then_some(service),
        }
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for Key {}

/// A borrowed key: looks an event up without copying its host and service. Ordered like
/// `(host, service)` strings (UTF-8 bytes sort like the text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct KeyRef<'a> {
    host: Option<&'a [u8]>,
    service: Option<&'a [u8]>,
}

impl<'a> KeyRef<'a> {
    fn of_event(event: &'a Event) -> Self {
        Self {
            host: event.host.as_deref().map(str::as_bytes),
            service: event.service.as_deref().map(str::as_bytes),
        }
    }

    fn of_key(key: &'a EventKey) -> Self {
        Self {
            host: key.host.as_deref().map(str::as_bytes),
            service: key.service.as_deref().map(str::as_bytes),
        }
    }
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.host.hash(state);
        self.service.hash(state);
    }
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        *self == key.parts()
    }
}

/// An expiry heap item: due `at`, ordered by (time, key) like the ordered set it replaces, so
/// keys due at the same time expire in the same order.
#[derive(Debug)]
struct Due {
    at: i64,
    key: Key,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        self.at
            .cmp(&other.at)
            .then_with(|| self.key.parts().cmp(&other.key.parts()))
    }
}

/// Makes `current` (the indexed event of the same key, not a change) equal to what indexing
/// `update` gives, swapping fields rather than moving whole events: `update` is left holding the
/// replaced values, to be dropped with its batch. The state is kept when the update has none
/// (the key's last real state goes on) or the same one.
fn update_in_place(current: &mut Event, update: &mut Event) {
    // Spelled out so that a new field cannot be forgotten here.
    let Event {
        host: _,
        service: _,
        state,
        description,
        metric,
        tags,
        time_micros,
        ttl,
        attributes,
    } = update;
    if state.is_some() && *state != current.state {
        std::mem::swap(&mut current.state, state);
    }
    std::mem::swap(&mut current.description, description);
    std::mem::swap(&mut current.tags, tags);
    std::mem::swap(&mut current.attributes, attributes);
    current.metric = *metric;
    current.time_micros = *time_micros;
    current.ttl = *ttl;
}

/// A batch refused whole because it would have added keys past the limit
/// ([`Engine::set_max_keys`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexFull {
    pub max_keys: usize,
}

/// The state given to an entry whose TTL ran out.
pub const EXPIRED: &str = "expired";

#[derive(Debug)]
pub struct Engine {
    init_state: String,
    default_ttl_micros: i64,
    index: HashMap<Key, Entry>,
    /// Min-heap of expiry times, rescheduled lazily: each live entry has one item at its
    /// `scheduled` time, no later than its `expires_at`. An update that pushes expiry out costs
    /// nothing here; the item is moved to the real time when it comes up. Items that no longer
    /// match their entry are stale and dropped when they reach the top.
    expiry: BinaryHeap<Reverse<Due>>,
    /// Last assigned `seq`; 0 before the first change.
    seq: u64,
    /// Whether to note which keys were updated since they were last saved: a flag on the entry
    /// the update touches anyway, plus the key once, instead of a set insert per event.
    track_unsaved: bool,
    /// Keys whose entries are `unsaved`, each once.
    unsaved: Vec<Key>,
    /// How long an expired entry stays before it is removed; `None`: until it reports again.
    expired_keep_micros: Option<i64>,
    /// Keys the index may hold: a batch that would add more is refused whole.
    max_keys: usize,
    /// The last events of keys that left the index without a change (no state), for the store
    /// to delete (only when tracking).
    forgotten: Vec<Arc<Event>>,
}

impl Engine {
    /// `default_ttl_secs` applies to events that carry no TTL (Riemann's `default-ttl`).
    pub fn new(init_state: impl Into<String>, default_ttl_secs: f64) -> Self {
        Self {
            init_state: init_state.into(),
            default_ttl_micros: secs_to_micros(default_ttl_secs),
            index: HashMap::default(),
            expiry: BinaryHeap::new(),
            seq: 0,
            track_unsaved: false,
            unsaved: Vec::new(),
            expired_keep_micros: None,
            max_keys: usize::MAX,
            forgotten: Vec::new(),
        }
    }

    /// Bounds the index: a batch whose new keys would take it past `max_keys` is refused whole
    /// (nothing of it applied), so memory stays bounded however many distinct (host, service)
    /// pairs senders make up. Keys already indexed keep updating.
    pub fn set_max_keys(&mut self, max_keys: usize) {
        self.max_keys = max_keys;
    }

    /// Whether `events` would take the index past its limit. Costs nothing until the index is
    /// within one batch of it; then the batch's distinct new keys are counted.
    fn would_overflow(&self, events: &[Event]) -> bool {
        if self.index.len().saturating_add(events.len()) <= self.max_keys {
            return false;
        }
        let mut new_keys = hashbrown::HashSet::new();
        for event in events {
            let key = KeyRef::of_event(event);
            if !self.index.contains_key(&key) {
                new_keys.insert(key);
            }
        }
        self.index.len().saturating_add(new_keys.len()) > self.max_keys
    }

    /// Removes entries that have stayed expired for `keep` (`None`: keep them until they report
    /// again). Zero removes them in the same sweep that expires them (Riemann's behaviour).
    pub fn set_expired_keep(&mut self, keep: Option<std::time::Duration>) {
        self.expired_keep_micros =
            keep.map(|keep| i64::try_from(keep.as_micros()).unwrap_or(i64::MAX));
    }

    /// From now on, note updated keys for [`Engine::take_unsaved`] (a store wants them).
    pub fn track_unsaved(&mut self) {
        self.track_unsaved = true;
    }

    /// The last events of keys that left the index without a change since the last call (only
    /// when tracking): their stored rows must go.
    pub fn take_forgotten(&mut self) -> Vec<Arc<Event>> {
        std::mem::take(&mut self.forgotten)
    }

    /// The latest event of every key updated since the last call, each once.
    pub fn take_unsaved(&mut self) -> Vec<Arc<Event>> {
        let mut events = Vec::with_capacity(self.unsaved.len());
        for key in self.unsaved.drain(..) {
            if let Some(entry) = self.index.get_mut(&key) {
                if std::mem::take(&mut entry.unsaved) {
                    events.push(Arc::clone(&entry.event));
                }
            }
        }
        events
    }

    /// Rebuilds the engine from a store: the recovered index and the last `seq`, from which
    /// numbering continues. Expiry times are recomputed from each event's time and TTL.
    pub fn restore(&mut self, seq: u64, events: Vec<Event>) {
        self.seq = seq;
        for event in events {
            let key = Key::new(KeyRef::of_event(&event));
            // An expired entry's event is its tombstone, timed at its expiry: it is removed
            // the keep time after that.
            let expired = event.state.as_deref() == Some(EXPIRED);
            let expires_at = if expired {
                self.expired_keep_micros
                    .map(|keep| event.time_micros.saturating_add(keep))
            } else {
                Some(self.expires_at(&event))
            };
            let old = self.index.insert(
                key.clone(),
                Entry {
                    event: Arc::new(event),
                    expires_at,
                    expired,
                    scheduled: expires_at,
                    unsaved: false,
                },
            );
            debug_assert!(old.is_none(), "a store holds each key once");
            if let Some(at) = expires_at {
                self.expiry.push(Reverse(Due { at, key }));
            }
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
    /// newly indexed event to `indexed` (for watchers of all index updates). Returns the
    /// position in `events` of the first event that changed a state, if any — or, when the batch
    /// would take the index past its key limit, refuses it whole.
    pub fn apply(
        &mut self,
        mut events: Vec<Event>,
        changes: &mut Vec<Change>,
        mut indexed: Option<&mut Vec<Arc<Event>>>,
    ) -> Result<Option<usize>, IndexFull> {
        if self.would_overflow(&events) {
            return Err(IndexFull {
                max_keys: self.max_keys,
            });
        }
        let mut first_change = None;
        // Events are worked on where they lie (no move of a whole event per step); what is
        // left in the batch afterwards (the replaced fields) is dropped with it.
        for (position, event) in events.iter_mut().enumerate() {
            if let Some(change) = self.apply_one(event, indexed.as_deref_mut()) {
                first_change.get_or_insert(position);
                changes.push(change);
            }
        }
        Ok(first_change)
    }

    /// Applies one event, taking what it indexes out of `event`; pushes the indexed event to
    /// `indexed` when asked.
    fn apply_one(
        &mut self,
        event: &mut Event,
        indexed: Option<&mut Vec<Arc<Event>>>,
    ) -> Option<Change> {
        let expires_at = self.expires_at(event);
        let Some((key, entry)) = self.index.get_key_value_mut(&KeyRef::of_event(event)) else {
            // A new key: the only time the key is copied.
            let changed = event
                .state
                .as_deref()
                .is_some_and(|state| state != self.init_state);
            let key = Key::new(KeyRef::of_event(event));
            let event = Arc::new(std::mem::take(event));
            self.index.insert(
                key.clone(),
                Entry {
                    event: Arc::clone(&event),
                    expires_at: Some(expires_at),
                    expired: false,
                    scheduled: Some(expires_at),
                    unsaved: self.track_unsaved,
                },
            );
            if self.track_unsaved {
                self.unsaved.push(key.clone());
            }
            self.expiry.push(Reverse(Due {
                at: expires_at,
                key,
            }));
            if let Some(indexed) = indexed {
                indexed.push(Arc::clone(&event));
            }
            return changed.then(|| self.next_change(None, event, None));
        };
        let changed = match (&event.state, &entry.event.state) {
            (Some(state), current) => current.as_deref().unwrap_or(&self.init_state) != state,
            (None, _) => false,
        };
        let previous = if changed {
            // A change keeps the previous event whole: its watchers need both.
            Some(std::mem::replace(
                &mut entry.event,
                Arc::new(std::mem::take(event)),
            ))
        } else {
            // When nothing else holds the entry's event (no snapshot, no change in flight:
            // nearly always) it is updated in place — no allocation — and the strings that must
            // be equal (host and service, by the key; the state, by the comparison above) stay
            // where they are, while the new copies, still hot in the cache, are freed.
            match Arc::get_mut(&mut entry.event) {
                Some(current) => update_in_place(current, event),
                None => {
                    if event.state.is_none() {
                        // Keep the key's last real state (if any) so the index never "forgets"
                        // a critical just because a metric-only update arrived.
                        event.state.clone_from(&entry.event.state);
                    }
                    entry.event = Arc::new(std::mem::take(event));
                }
            }
            None
        };
        entry.expires_at = Some(expires_at);
        // It reported again: no longer waiting to be removed.
        entry.expired = false;
        if self.track_unsaved && !entry.unsaved {
            entry.unsaved = true;
            self.unsaved.push(key.clone());
        }
        if entry.scheduled.is_none_or(|s| s > expires_at) {
            // Due earlier than its heap item (or it has none): schedule it anew; the old
            // item, if any, becomes stale.
            entry.scheduled = Some(expires_at);
            self.expiry.push(Reverse(Due {
                at: expires_at,
                key: key.clone(),
            }));
        }
        let event = &entry.event;
        if let Some(indexed) = indexed {
            indexed.push(Arc::clone(event));
        }
        let previous = previous?;
        let event = Arc::clone(event);
        let current = previous.state.clone();
        Some(self.next_change(current, event, Some(previous)))
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
            removed: false,
        }
    }

    /// Pops stale items off the top of the heap and moves an early item that is due by `now` to
    /// its entry's real expiry time, so every item left at or before `now` is real. Items that
    /// come up early but are not due yet stay where they are: cheap for hot keys, whose expiry
    /// moves on every update.
    fn tidy_expiry(&mut self, now_micros: i64) {
        while let Some(Reverse(top)) = self.expiry.peek() {
            let entry = self.index.get_mut(&top.key.parts());
            match entry {
                Some(entry) if entry.scheduled == Some(top.at) => match entry.expires_at {
                    Some(at) if at > top.at && top.at <= now_micros => {
                        entry.scheduled = Some(at);
                        let Some(Reverse(mut due)) = self.expiry.pop() else {
                            break;
                        };
                        due.at = at;
                        self.expiry.push(Reverse(due));
                    }
                    _ => break,
                },
                // Stale: the key is gone or its item is elsewhere.
                _ => {
                    self.expiry.pop();
                }
            }
        }
    }

    /// Expires every entry due at or before `now_micros` (and removes those expired for the
    /// keep time), appending the resulting changes. Returns how many entries expired or went.
    pub fn expire(&mut self, now_micros: i64, changes: &mut Vec<Change>) -> usize {
        let mut expired = 0;
        loop {
            self.tidy_expiry(now_micros);
            let Some(Reverse(top)) = self.expiry.peek() else {
                break;
            };
            if top.at > now_micros {
                break;
            }
            let Some(Reverse(Due { key, .. })) = self.expiry.pop() else {
                break;
            };
            expired += 1;
            let Some(entry) = self.index.get_mut(&key.parts()) else {
                continue;
            };
            entry.scheduled = None;
            entry.expires_at = None;
            let Some(state) = entry.event.state.clone() else {
                // Never had a state: nothing to tell anyone, just forget it.
                if let Some(entry) = self.index.remove(&key.parts()) {
                    if self.track_unsaved {
                        self.forgotten.push(entry.event);
                    }
                }
                continue;
            };
            if entry.expired {
                // Expired for the keep time: gone, and every screen is told.
                let event = Arc::clone(&entry.event);
                self.index.remove(&key.parts());
                let mut change = self.next_change(Some(state), Arc::clone(&event), Some(event));
                change.removed = true;
                changes.push(change);
                continue;
            }
            let mut tombstone = (*entry.event).clone();
            tombstone.state = Some(EXPIRED.to_owned());
            tombstone.time_micros = now_micros;
            let tombstone = Arc::new(tombstone);
            let previous = std::mem::replace(&mut entry.event, Arc::clone(&tombstone));
            entry.expired = true;
            if let Some(keep) = self.expired_keep_micros {
                let at = now_micros.saturating_add(keep);
                entry.expires_at = Some(at);
                entry.scheduled = Some(at);
                self.expiry.push(Reverse(Due { at, key }));
            }
            if state != EXPIRED {
                let change = self.next_change(Some(state), tombstone, Some(previous));
                changes.push(change);
            }
        }
        expired
    }

    /// When the next entry expires, if any.
    pub fn next_expiry(&self) -> Option<i64> {
        let Reverse(top) = self.expiry.peek()?;
        match self.index.get(&top.key.parts()) {
            // The top of the heap is exact: the usual case.
            Some(entry) if entry.scheduled == Some(top.at) && entry.expires_at == Some(top.at) => {
                Some(top.at)
            }
            // It is stale or early (rescheduled lazily): look at every entry.
            _ => self.index.values().filter_map(|e| e.expires_at).min(),
        }
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
        self.index.get(&KeyRef::of_key(key)).map(|e| &e.event)
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
        engine
            .apply(events, &mut changes, None)
            .expect("under the key limit");
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
    fn unsaved_keys_are_returned_once_with_their_latest_event() {
        let mut e = Engine::new("ok", 60.0);
        apply(&mut e, vec![ev("a", "cpu", Some("ok"))]);
        assert!(e.take_unsaved().is_empty(), "not tracked until asked");
        e.track_unsaved();
        let mut metric = ev("a", "cpu", None);
        metric.description = Some("latest".into());
        apply(
            &mut e,
            vec![
                ev("a", "cpu", Some("ok")),
                ev("b", "disk", Some("ok")),
                metric,
            ],
        );
        let mut saved: Vec<(String, Option<String>)> = e
            .take_unsaved()
            .iter()
            .map(|ev| (ev.host.clone().unwrap(), ev.description.clone()))
            .collect();
        saved.sort();
        assert_eq!(
            saved,
            vec![("a".into(), Some("latest".into())), ("b".into(), None)]
        );
        assert!(e.take_unsaved().is_empty(), "saved until updated again");
        apply(&mut e, vec![ev("b", "disk", Some("ok"))]);
        assert_eq!(e.take_unsaved().len(), 1);
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
    fn updates_in_place_or_not_index_the_same_and_never_touch_a_held_event() {
        use crate::event::Metric;
        let update = |state: Option<&str>, metric: i64, description: &str| {
            let mut event = ev("a", "cpu", state);
            event.metric = Some(Metric::Int(metric));
            event.description = Some(description.into());
            event.tags = vec![format!("t{metric}")];
            event.attributes = vec![("k".into(), format!("v{metric}"))];
            event.time_micros = metric;
            event
        };
        // Each step runs on two engines: one where nothing else holds the indexed event (updated
        // in place) and one where a snapshot holds it (replaced). Both must index the same.
        let steps = [
            update(None, 1, "no state yet"),
            update(Some("ok"), 2, "first state, equal to init: not a change"),
            update(None, 3, "metric only: the state goes on"),
            update(Some("ok"), 4, "same state"),
        ];
        let mut alone = Engine::new("ok", 60.0);
        let mut held = Engine::new("ok", 60.0);
        for step in steps {
            let snapshot = held.snapshot();
            let before = snapshot.events.first().map(|e| (**e).clone());
            assert!(apply(&mut alone, vec![step.clone()]).is_empty());
            assert!(apply(&mut held, vec![step.clone()]).is_empty());
            let key = step.key();
            let (a, h) = (alone.get(&key).unwrap(), held.get(&key).unwrap());
            assert_eq!(**a, **h);
            assert_eq!(a.metric, step.metric);
            assert_eq!(a.description, step.description);
            assert_eq!((&a.tags, &a.attributes), (&step.tags, &step.attributes));
            assert_eq!(a.time_micros, step.time_micros);
            assert_eq!(a.host.as_deref(), Some("a"));
            assert_eq!(a.service.as_deref(), Some("cpu"));
            // The snapshot taken before the update still shows what it showed.
            assert_eq!(snapshot.events.first().map(|e| (**e).clone()), before);
        }
        let key = ev("a", "cpu", None).key();
        assert_eq!(alone.get(&key).unwrap().state.as_deref(), Some("ok"));
        // Then a change, on both: previous and new are told apart.
        let c = apply(&mut alone, vec![update(Some("critical"), 5, "down")]);
        assert_eq!(summary(&c), vec![(1, "ok".into(), "critical".into())]);
        assert_eq!(c[0].previous.as_ref().unwrap().metric, Some(Metric::Int(4)));
        assert_eq!(c[0].event.metric, Some(Metric::Int(5)));
    }

    #[test]
    fn apply_tells_where_the_first_change_is() {
        let mut e = Engine::new("ok", 60.0);
        let mut changes = Vec::new();
        let batch = vec![
            ev("a", "x", Some("ok")),
            ev("b", "x", Some("ok")),
            ev("a", "x", Some("warning")),
            ev("b", "x", Some("critical")),
        ];
        assert_eq!(e.apply(batch, &mut changes, None), Ok(Some(2)));
        assert_eq!(changes.len(), 2);
        let quiet = vec![ev("a", "x", Some("warning"))];
        assert_eq!(e.apply(quiet, &mut changes, None), Ok(None));
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

    #[test]
    fn a_batch_that_would_pass_the_key_limit_is_refused_whole() {
        let mut e = Engine::new("ok", 60.0);
        e.set_max_keys(3);
        apply(
            &mut e,
            vec![ev("a", "cpu", Some("ok")), ev("b", "cpu", Some("ok"))],
        );
        let mut changes = Vec::new();
        // Two new keys (c and d; c twice) and a change to a: one key too many.
        let batch = vec![
            ev("a", "cpu", Some("critical")),
            ev("c", "cpu", Some("ok")),
            ev("c", "cpu", Some("warning")),
            ev("d", "cpu", Some("ok")),
        ];
        assert_eq!(
            e.apply(batch, &mut changes, None),
            Err(IndexFull { max_keys: 3 })
        );
        assert!(changes.is_empty(), "nothing applied");
        assert_eq!(e.len(), 2);
        assert_eq!(e.seq(), 0);
        // One new key (c, twice) fits exactly; then indexed keys still update, new ones don't.
        let batch = vec![ev("c", "cpu", Some("ok")), ev("c", "cpu", Some("warning"))];
        assert_eq!(e.apply(batch, &mut changes, None), Ok(Some(1)));
        assert_eq!(e.len(), 3);
        assert_eq!(
            e.apply(vec![ev("a", "cpu", Some("critical"))], &mut changes, None),
            Ok(Some(0))
        );
        assert!(e
            .apply(vec![ev("e", "cpu", Some("ok"))], &mut changes, None)
            .is_err());
        // A removed key makes room again.
        e.set_expired_keep(Some(std::time::Duration::ZERO));
        e.expire(i64::MAX, &mut changes);
        assert!(e.is_empty());
        assert!(e
            .apply(vec![ev("e", "cpu", Some("ok"))], &mut changes, None)
            .is_ok());
    }

    fn keeping(keep_secs: u64) -> Engine {
        let mut e = Engine::new("ok", 60.0);
        e.set_expired_keep(Some(std::time::Duration::from_secs(keep_secs)));
        e
    }

    #[test]
    fn an_expired_key_is_removed_after_the_keep_time_with_a_removal_change() {
        let mut e = keeping(30);
        apply(&mut e, vec![at("a", Some("critical"), 100, Some(10.0))]);
        let mut changes = Vec::new();
        assert_eq!(e.expire(110_000_000, &mut changes), 1);
        assert_eq!(
            summary(&changes),
            vec![(2, "critical".into(), "expired".into())]
        );
        assert!(!changes[0].removed);
        assert_eq!(
            e.next_expiry(),
            Some(140_000_000),
            "removal due keep after expiry"
        );
        changes.clear();
        assert_eq!(e.expire(139_999_999, &mut changes), 0);
        assert_eq!(e.len(), 1, "still shown while kept");
        assert_eq!(e.expire(140_000_000, &mut changes), 1);
        assert_eq!(changes.len(), 1);
        let removal = &changes[0];
        assert!(removal.removed);
        assert_eq!(removal.seq, 3);
        assert_eq!(removal.previous_state, "expired");
        assert_eq!(removal.event.state.as_deref(), Some("expired"));
        assert_eq!(removal.event.host.as_deref(), Some("a"));
        assert!(e.is_empty());
        assert!(e.snapshot().events.is_empty());
        assert_eq!(e.next_expiry(), None);
        // It may come back: a new key, from the init state.
        let c = apply(&mut e, vec![at("a", Some("critical"), 200, Some(10.0))]);
        assert_eq!(summary(&c), vec![(4, "ok".into(), "critical".into())]);
    }

    #[test]
    fn a_key_that_reports_while_kept_is_not_removed() {
        let mut e = keeping(30);
        apply(&mut e, vec![at("a", Some("critical"), 100, Some(10.0))]);
        let mut changes = Vec::new();
        e.expire(110_000_000, &mut changes);
        // Back before the keep time ran out, with a long TTL.
        apply(&mut e, vec![at("a", Some("ok"), 120, Some(100.0))]);
        changes.clear();
        assert_eq!(e.expire(140_000_000, &mut changes), 0, "the removal is off");
        assert_eq!(e.len(), 1);
        // It expires again at its new time and is removed keep after that.
        assert_eq!(e.expire(220_000_000, &mut changes), 1);
        assert_eq!(summary(&changes), vec![(4, "ok".into(), "expired".into())]);
        changes.clear();
        assert_eq!(e.expire(250_000_000, &mut changes), 1);
        assert!(changes[0].removed);
        assert!(e.is_empty());
    }

    #[test]
    fn keep_zero_removes_in_the_sweep_that_expires() {
        let mut e = keeping(0);
        apply(&mut e, vec![at("a", Some("warning"), 100, Some(1.0))]);
        let mut changes = Vec::new();
        assert_eq!(e.expire(101_000_000, &mut changes), 2);
        let kinds: Vec<_> = changes
            .iter()
            .map(|c| (c.seq, c.event.state.clone().unwrap_or_default(), c.removed))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (2, "expired".to_string(), false),
                (3, "expired".to_string(), true)
            ]
        );
        assert!(e.is_empty());
    }

    #[test]
    fn without_a_keep_time_expired_keys_stay() {
        let mut e = Engine::new("ok", 60.0);
        apply(&mut e, vec![at("a", Some("warning"), 100, Some(1.0))]);
        let mut changes = Vec::new();
        e.expire(101_000_000, &mut changes);
        assert_eq!(e.expire(i64::MAX, &mut changes), 0);
        assert_eq!(e.len(), 1);
        assert_eq!(e.next_expiry(), None);
    }

    #[test]
    fn a_restored_expired_key_is_removed_keep_after_its_expiry() {
        let mut e = keeping(30);
        let mut tombstone = at("a", Some("expired"), 110, Some(10.0));
        tombstone.time_micros = 110_000_000;
        e.restore(7, vec![tombstone, at("b", None, 100, Some(1.0))]);
        e.track_unsaved();
        let mut changes = Vec::new();
        assert_eq!(
            e.expire(139_000_000, &mut changes),
            1,
            "b (no state) expires"
        );
        assert!(changes.is_empty());
        let forgotten = e.take_forgotten();
        assert_eq!(forgotten.len(), 1, "its stored row must go");
        assert_eq!(forgotten[0].host.as_deref(), Some("b"));
        assert_eq!(e.expire(140_000_000, &mut changes), 1);
        assert_eq!(changes.len(), 1);
        assert!(changes[0].removed);
        assert_eq!(changes[0].seq, 8, "seq continues after the restored one");
        assert!(e.is_empty());
    }

    #[test]
    fn an_update_that_expires_sooner_is_rescheduled_earlier() {
        let mut e = Engine::new("ok", 60.0);
        apply(&mut e, vec![at("a", Some("warning"), 100, Some(50.0))]);
        apply(&mut e, vec![at("a", Some("warning"), 100, Some(5.0))]);
        assert_eq!(e.next_expiry(), Some(105_000_000));
        let mut changes = Vec::new();
        assert_eq!(e.expire(105_000_000, &mut changes), 1);
        assert_eq!(e.next_expiry(), None, "the stale later item is gone");
        assert_eq!(e.expire(200_000_000, &mut changes), 0);
        assert_eq!(changes.len(), 1);
    }

    #[test]
    fn many_updates_keep_one_heap_item_and_an_exact_next_expiry() {
        let mut e = Engine::new("ok", 60.0);
        for t in 0..1000 {
            apply(&mut e, vec![at("a", Some("ok"), 100 + t, Some(10.0))]);
        }
        assert!(e.expiry.len() <= 2);
        assert_eq!(e.next_expiry(), Some(1_109_000_000));
        let mut changes = Vec::new();
        assert_eq!(e.expire(1_108_999_999, &mut changes), 0);
        assert_eq!(e.expire(1_109_000_000, &mut changes), 1);
        assert_eq!(summary(&changes), vec![(1, "ok".into(), "expired".into())]);
    }
}
