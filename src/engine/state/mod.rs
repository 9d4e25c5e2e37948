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

mod actions;
mod expiry;
mod key;

use std::sync::Arc;

use hashbrown::HashMap;

use crate::change::{Change, Snapshot, StateChange};
use crate::event::{Event, Metric};
use crate::series::key::Points;
use expiry::{Due, ExpiryHeap};
use key::{Key, KeyRef};

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
    /// Its metric or description moved, within its state, since [`Engine::take_moved`] last
    /// returned it (only when tracking).
    moved: bool,
    /// Its small stable number while it is indexed ([`Slots`]): what its series points carry.
    slot: u32,
    /// Whether its key's name went out with a series point (see [`Points`]): once per entry.
    named: bool,
}

/// Small stable numbers for the index's entries, reused once an entry leaves: a series point
/// names its key by one (no key bytes built, hashed or compared per point; see [`Points`]).
/// Dense: never more numbers than the index held keys at once (bounded by `--max-keys`, far
/// below 2³²). Numbered in the order entries come and go, so the same input gives the same
/// numbers.
#[derive(Debug, Default)]
struct Slots {
    next: u32,
    free: Vec<u32>,
}

impl Slots {
    fn take(&mut self) -> u32 {
        self.free.pop().unwrap_or_else(|| {
            let slot = self.next;
            self.next += 1;
            slot
        })
    }

    fn give_back(&mut self, slot: u32) {
        self.free.push(slot);
    }
}

/// The point of an event's metric for its entry's series, the key's name first when the entry
/// has not sent it yet. NaN and infinities are counted, not stored.
fn series_point(
    points: &mut Points,
    key: &Key,
    entry: &mut Entry,
    metric: Option<Metric>,
    time_micros: i64,
) {
    let Some(metric) = metric else { return };
    let value = metric.as_f64();
    if !value.is_finite() {
        points.not_finite += 1;
        return;
    }
    if !entry.named {
        entry.named = true;
        points.name(entry.slot, key.bytes());
    }
    points.push(entry.slot, time_micros, value);
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
    expiry: ExpiryHeap,
    /// Last assigned `seq`; 0 before the first change.
    seq: u64,
    /// Whether to note which keys were updated since they were last saved: a flag on the entry
    /// the update touches anyway, plus the key once, instead of a set insert per event.
    track_unsaved: bool,
    /// Keys whose entries are `unsaved`, each once.
    unsaved: Vec<Key>,
    /// Whether to note which keys' metric or description moved without a change, for live
    /// values on dashboards: like `unsaved`, a flag on the entry plus the key once.
    track_moved: bool,
    /// Keys whose entries are `moved`, each once.
    moved: Vec<Key>,
    /// How long an expired entry stays before it is removed; `None`: until it reports again.
    expired_keep_micros: Option<i64>,
    /// Keys the index may hold: a batch that would add more is refused whole.
    max_keys: usize,
    /// The last events of keys that left the index without a change (no state), for the store
    /// to delete (only when tracking).
    forgotten: Vec<Arc<Event>>,
    /// Acks and silences (see `actions`).
    operator: actions::Operator,
    /// The entries' slot numbers.
    slots: Slots,
}

impl Engine {
    /// `default_ttl_secs` applies to events that carry no TTL (Riemann's `default-ttl`).
    pub fn new(init_state: impl Into<String>, default_ttl_secs: f64) -> Self {
        Self {
            init_state: init_state.into(),
            default_ttl_micros: secs_to_micros(default_ttl_secs),
            index: HashMap::default(),
            expiry: ExpiryHeap::default(),
            seq: 0,
            track_unsaved: false,
            unsaved: Vec::new(),
            track_moved: false,
            moved: Vec::new(),
            expired_keep_micros: None,
            max_keys: usize::MAX,
            forgotten: Vec::new(),
            operator: actions::Operator::default(),
            slots: Slots::default(),
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

    /// From now on, note keys whose metric or description moved within their state, for
    /// [`Engine::take_moved`] (dashboards want live values).
    pub fn track_moved(&mut self) {
        self.track_moved = true;
    }

    /// The latest event of every key whose metric or description moved within its state since
    /// the last call, each once: a cost of the keys that moved, not of the events that did.
    /// Keys that changed state meanwhile are left out (their change carries the values), as are
    /// keys that left the index.
    pub fn take_moved(&mut self) -> Vec<Arc<Event>> {
        let mut events = Vec::with_capacity(self.moved.len());
        for key in self.moved.drain(..) {
            if let Some(entry) = self.index.get_mut(&key) {
                if std::mem::take(&mut entry.moved) {
                    events.push(Arc::clone(&entry.event));
                }
            }
        }
        events
    }

    /// The indexed event of `event`'s key, if the key is still indexed with a state: a live
    /// value carried to a later interval goes at its latest (see `publish_moved`).
    pub fn current(&self, event: &Event) -> Option<Arc<Event>> {
        let entry = self.index.get(&KeyRef::of_event(event))?;
        entry
            .event
            .state
            .is_some()
            .then(|| Arc::clone(&entry.event))
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
                    moved: false,
                    slot: self.slots.take(),
                    named: false,
                },
            );
            debug_assert!(old.is_none(), "a store holds each key once");
            if let Some(old) = old {
                self.slots.give_back(old.slot);
            }
            if let Some(at) = expires_at {
                self.expiry.push(at, key);
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

    /// Applies a batch in order, appending its changes to `changes` and, when asked, every
    /// newly indexed event to `indexed` (for watchers of all index updates). Returns the
    /// position in `events` of the first event that changed a state, if any — or, when the batch
    /// would take the index past its key limit, refuses it whole.
    pub fn apply(
        &mut self,
        events: Vec<Event>,
        changes: &mut Vec<Change>,
        indexed: Option<&mut Vec<Arc<Event>>>,
    ) -> Result<Option<usize>, IndexFull> {
        self.apply_with_points(events, changes, indexed, None)
    }

    /// [`Engine::apply`], appending the batch's series points (every metric's, by its entry's
    /// slot) to `points` when given: made here, where each event's entry is at hand.
    pub fn apply_with_points(
        &mut self,
        mut events: Vec<Event>,
        changes: &mut Vec<Change>,
        mut indexed: Option<&mut Vec<Arc<Event>>>,
        mut points: Option<&mut Points>,
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
            let outputs = (indexed.as_deref_mut(), points.as_deref_mut());
            if let Some(change) = self.apply_one(event, outputs) {
                first_change.get_or_insert(position);
                changes.push(change);
                self.after_change(changes);
            }
        }
        Ok(first_change)
    }

    /// Applies one event, taking what it indexes out of `event`; pushes the indexed event to
    /// `indexed` and the event's series point to `points` when asked.
    fn apply_one(
        &mut self,
        event: &mut Event,
        (indexed, points): (Option<&mut Vec<Arc<Event>>>, Option<&mut Points>),
    ) -> Option<Change> {
        let expires_at = self.expires_at(event);
        let Some((key, entry)) = self.index.get_key_value_mut(&KeyRef::of_event(event)) else {
            return self.index_new(event, expires_at, (indexed, points));
        };
        if let Some(points) = points {
            series_point(points, key, entry, event.metric, event.time_micros);
        }
        let moved = self.track_moved
            && (entry.event.metric != event.metric || entry.event.description != event.description);
        let previous = replace_event(entry, event, &self.init_state);
        // An entry is expired exactly when its state is `expired` — what [`Engine::restore`]
        // infers from a stored event, so an engine restored from a snapshot schedules every
        // entry as this one does (cluster nodes starting from a snapshot must agree with the
        // others). A metric-only update of an expired key keeps it expired, its removal counted
        // from the update; a real state brings it back.
        entry.expired = entry.event.state.as_deref() == Some(EXPIRED);
        entry.expires_at = due_at(
            entry.expired,
            entry.event.time_micros,
            self.expired_keep_micros,
            expires_at,
        );
        if self.track_unsaved && !entry.unsaved {
            entry.unsaved = true;
            self.unsaved.push(key.clone());
        }
        if previous.is_some() {
            // A change of state: its frame carries the values.
            entry.moved = false;
        } else if moved && !entry.moved && entry.event.state.is_some() {
            entry.moved = true;
            self.moved.push(key.clone());
        }
        match reschedule(entry.scheduled, entry.expires_at) {
            Reschedule::Push(at) => {
                entry.scheduled = Some(at);
                self.expiry.push(at, key.clone());
            }
            Reschedule::Keep => {}
            Reschedule::Forget => entry.scheduled = None,
        }
        let event = &entry.event;
        if let Some(indexed) = indexed {
            indexed.push(Arc::clone(event));
        }
        let previous = previous?;
        let event = Arc::clone(event);
        let current = previous.state.clone();
        let change = self.state_change(current, event, Some(previous));
        Some(self.next_change(change))
    }

    /// [`Engine::apply_one`] for a key not in the index yet: the only time the key is copied.
    fn index_new(
        &mut self,
        event: &mut Event,
        expires_at: i64,
        (indexed, points): (Option<&mut Vec<Arc<Event>>>, Option<&mut Points>),
    ) -> Option<Change> {
        let changed = changes_state(event.state.as_deref(), None, &self.init_state);
        let key = Key::new(KeyRef::of_event(event));
        let (metric, time_micros) = (event.metric, event.time_micros);
        let event = Arc::new(std::mem::take(event));
        // A client may send the state `expired` itself: such an entry is expired, as
        // `restore` would take it (see [`Engine::apply_one`]).
        let expired = event.state.as_deref() == Some(EXPIRED);
        let expires_at = due_at(
            expired,
            event.time_micros,
            self.expired_keep_micros,
            expires_at,
        );
        let mut entry = Entry {
            event: Arc::clone(&event),
            expires_at,
            expired,
            scheduled: expires_at,
            unsaved: self.track_unsaved,
            moved: false,
            slot: self.slots.take(),
            named: false,
        };
        if let Some(points) = points {
            series_point(points, &key, &mut entry, metric, time_micros);
        }
        self.index.insert(key.clone(), entry);
        if self.track_unsaved {
            self.unsaved.push(key.clone());
        }
        if let Some(at) = expires_at {
            self.expiry.push(at, key);
        }
        if let Some(indexed) = indexed {
            indexed.push(Arc::clone(&event));
        }
        changed.then(|| {
            let change = self.state_change(None, event, None);
            self.next_change(change)
        })
    }

    /// The transition of a key from `current` (none yet: `--init-state`) to `event`.
    fn state_change(
        &self,
        current: Option<String>,
        event: Arc<Event>,
        previous: Option<Arc<Event>>,
    ) -> StateChange {
        StateChange {
            previous_state: current.unwrap_or_else(|| self.init_state.clone()),
            event,
            previous,
            ..StateChange::default()
        }
    }

    /// `change`, numbered with the next `seq`.
    fn next_change(&mut self, change: StateChange) -> Change {
        self.seq += 1;
        Change::state(self.seq, change)
    }

    /// Pops stale items off the top of the heap and moves an early item that is due by `now` to
    /// its entry's real expiry time, so every item left at or before `now` is real. Items that
    /// come up early but are not due yet stay where they are: cheap for hot keys, whose expiry
    /// moves on every update.
    fn tidy_expiry(&mut self, now_micros: i64) {
        while let Some(top) = self.expiry.peek() {
            let entry = self.index.get_mut(&top.key.parts());
            match entry {
                Some(entry) if entry.scheduled == Some(top.at) => match entry.expires_at {
                    Some(at) if at > top.at && top.at <= now_micros => {
                        entry.scheduled = Some(at);
                        let Some(due) = self.expiry.pop() else {
                            break;
                        };
                        self.expiry.push(at, due.key);
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
    /// keep time), appending the resulting changes, then moves operator state on (acks past
    /// their expiry, silence windows: see `actions`). Returns how many entries expired or went
    /// plus how many action records it made.
    pub fn expire(&mut self, now_micros: i64, changes: &mut Vec<Change>) -> usize {
        let mut expired = 0;
        loop {
            self.tidy_expiry(now_micros);
            let Some(top) = self.expiry.peek() else {
                break;
            };
            if top.at > now_micros {
                break;
            }
            let Some(Due { key, .. }) = self.expiry.pop() else {
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
                    self.slots.give_back(entry.slot);
                    if self.track_unsaved {
                        self.forgotten.push(entry.event);
                    }
                }
                continue;
            };
            if entry.expired {
                // Expired for the keep time: gone, and every screen is told.
                let event = Arc::clone(&entry.event);
                let slot = entry.slot;
                self.index.remove(&key.parts());
                self.slots.give_back(slot);
                let change = StateChange {
                    removed: true,
                    ..self.state_change(Some(state), Arc::clone(&event), Some(event))
                };
                changes.push(self.next_change(change));
                self.after_change(changes);
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
                self.expiry.push(at, key);
            }
            if state != EXPIRED {
                let change = self.state_change(Some(state), tombstone, Some(previous));
                let change = self.next_change(change);
                changes.push(change);
                self.after_change(changes);
            }
        }
        expired + self.tick_actions(now_micros, changes)
    }

    /// When the next entry expires, if any (the tests check the lazily rescheduled heap with it).
    #[cfg(test)]
    pub fn next_expiry(&self) -> Option<i64> {
        let top = self.expiry.peek()?;
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
            actions: self.actions_snapshot(),
        }
    }
}

fn secs_to_micros(secs: f64) -> i64 {
    if secs.is_finite() && secs > 0.0 {
        (secs * 1e6).min(i64::MAX as f64) as i64
    } else {
        0
    }
}

/// Whether an event in `new` state moves a key out of `current` (`None`: never indexed, or
/// never given a state: `init_state`). An event without a state changes nothing.
fn changes_state(new: Option<&str>, current: Option<&str>, init_state: &str) -> bool {
    new.is_some_and(|new| current.unwrap_or(init_state) != new)
}

/// When an entry is next due: an expired one is removed `expired_keep` after its event
/// (never, with no keep time), a live one expires at `expires_at` (from its TTL).
fn due_at(
    expired: bool,
    time_micros: i64,
    expired_keep: Option<i64>,
    expires_at: i64,
) -> Option<i64> {
    if expired {
        expired_keep.map(|keep| time_micros.saturating_add(keep))
    } else {
        Some(expires_at)
    }
}

/// What an update does to a key's item in the expiry heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reschedule {
    /// Due earlier than its heap item (or it has none): schedule it anew at this time; the old
    /// item, if any, becomes stale.
    Push(i64),
    /// Its heap item comes first: it is looked at then (and rescheduled from there).
    Keep,
    /// Nothing due: its heap item, if any, becomes stale.
    Forget,
}

/// The heap decision for an entry scheduled at `scheduled` that is now `due` (see [`Reschedule`]):
/// items are only ever pushed earlier, so an update that postpones the deadline costs no push.
fn reschedule(scheduled: Option<i64>, due: Option<i64>) -> Reschedule {
    match due {
        Some(at) if scheduled.is_none_or(|s| s > at) => Reschedule::Push(at),
        Some(_) => Reschedule::Keep,
        None => Reschedule::Forget,
    }
}

/// Puts `event` into `entry`, taking what it holds; returns the previous event when the state
/// changed (its watchers need both whole), `None` for an update within the same state.
fn replace_event(entry: &mut Entry, event: &mut Event, init_state: &str) -> Option<Arc<Event>> {
    if changes_state(
        event.state.as_deref(),
        entry.event.state.as_deref(),
        init_state,
    ) {
        return Some(std::mem::replace(
            &mut entry.event,
            Arc::new(std::mem::take(event)),
        ));
    }
    // When nothing else holds the entry's event (no snapshot, no change in flight: nearly
    // always) it is updated in place — no allocation — and the strings that must be equal
    // (host and service, by the key; the state, by the comparison above) stay where they are,
    // while the new copies, still hot in the cache, are freed.
    match Arc::get_mut(&mut entry.event) {
        Some(current) => update_in_place(current, event),
        None => {
            if event.state.is_none() {
                // Keep the key's last real state (if any) so the index never "forgets" a
                // critical just because a metric-only update arrived.
                event.state.clone_from(&entry.event.state);
            }
            entry.event = Arc::new(std::mem::take(event));
        }
    }
    None
}

#[cfg(test)]
mod tests;
