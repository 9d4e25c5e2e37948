//! What is firing, derived from the engine's output alone: a snapshot, then each change in
//! `seq` order. Pure (time comes in as an argument), so every node of a cluster, which sees the
//! same changes, derives the same alerts with the same labels and `startsAt`, and Alertmanager
//! deduplicates them.
//!
//! A key fires when its state is one of the alert states, the alert query matches its event and
//! it is neither acknowledged nor silenced. The query and the silencing are judged at each change
//! of state (as silences are), not on updates that change nothing. An acknowledged or silenced
//! key's alert is **resolved** at once rather than left to time out: a person has taken it (or
//! said it does not matter), and Alertmanager's resolved notification says so now instead of
//! after a few resends; an unack (or the ack's end) while the problem lasts fires it again with
//! its first `startsAt`. A state change between two alert states (critical → warning) resolves the
//! alert of the old state and fires one for the new: `state` is a label, so they are two alerts to
//! Alertmanager.
//!
//! A key that flaps (more than 5 changes into or out of an alert state within 10 minutes, the
//! dashboard's rule: `flap.rs`) fires one alert with `flapping="true"` and no `state` label in
//! place of its state alerts, until it settles (at most 2 changes within the last 10 minutes,
//! judged at each resend); then its problem's alert fires again if the problem lasts.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::action::{ActionRecord, KeyName};
use crate::change::{Change, ChangeKind, Snapshot, StateChange};
use crate::event::Event;
use crate::query::Query;

use super::flap::Flaps;

/// The `alertname` label of every alert statecast sends.
pub const ALERT_NAME: &str = "statecast";

/// Which keys alert, and what their alerts carry.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Keys whose event this matches (`None`: every key).
    pub query: Option<Query>,
    /// States that fire (`critical`, `warning`, `expired` by default).
    pub states: Vec<String>,
    /// Attribute or tag names copied as labels (validated as label names).
    pub labels: Vec<String>,
    /// The dashboard's URL, for each alert's link to its key (`None`: no link).
    pub external_url: Option<String>,
}

/// One alert as Alertmanager takes it, before its `endsAt` is set by the sender.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// When the key became this problem (µs): the time of the change's event.
    pub starts_at: i64,
    /// `Some(µs)`: resolved at that time; `None`: firing (the sender sets `endsAt` a few resends
    /// ahead, so that a statecast that stopped sending lets its alerts end by themselves).
    pub resolved_at: Option<i64>,
    pub generator_url: Option<String>,
}

impl Alert {
    /// The identity Alertmanager gives an alert: its labels.
    pub fn fingerprint(&self) -> &BTreeMap<String, String> {
        &self.labels
    }
}

/// A key in an alert state that the query matches (firing, or muted by an ack or a silence).
#[derive(Debug, Clone)]
struct Problem {
    /// The event of the change that made it this problem.
    event: Arc<Event>,
    since: i64,
    acked: bool,
    silenced: bool,
}

impl Problem {
    fn muted(&self) -> bool {
        self.acked || self.silenced
    }
}

/// The alert state of every key: see the module's documentation.
#[derive(Debug)]
pub struct Firing {
    rules: Rules,
    problems: HashMap<KeyName, Problem>,
    /// Recent changes of every key, for flap detection.
    flaps: Flaps,
    /// Each flapping key: its latest event (its alert's labels, the query's judgement) and since
    /// when it flaps. Kept here, not read from `flaps`, so a transition sees what fired before.
    flapping: HashMap<KeyName, (Arc<Event>, i64)>,
    /// The last `seq` applied: changes at or before it are already in.
    seq: u64,
    /// Alerts firing now (kept as changes fire and resolve them, not counted each time).
    count: usize,
}

fn key_of(event: &Event) -> KeyName {
    (event.host.clone(), event.service.clone())
}

impl Firing {
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            problems: HashMap::new(),
            flaps: Flaps::default(),
            flapping: HashMap::new(),
            seq: 0,
            count: 0,
        }
    }

    /// Alerts firing now.
    pub fn firing(&self) -> Vec<Alert> {
        let mut alerts: Vec<Alert> = self
            .problems
            .keys()
            .chain(
                self.flapping
                    .keys()
                    .filter(|k| !self.problems.contains_key(*k)),
            )
            .filter_map(|key| self.current(key))
            .collect();
        // The same order on every node and every resend.
        alerts.sort_by(|a, b| a.labels.cmp(&b.labels));
        alerts
    }

    /// How many alerts fire now.
    pub fn firing_count(&self) -> usize {
        self.count
    }

    /// The alert `key` fires now, if any: its flapping alert while it flaps (and the query
    /// matched its latest change), else its problem's; none while acked or silenced.
    fn current(&self, key: &KeyName) -> Option<Alert> {
        let problem = self.problems.get(key);
        if problem.is_some_and(Problem::muted) {
            return None;
        }
        if let Some((event, since)) = self.flapping.get(key) {
            let since = *since;
            return self
                .rules
                .query
                .as_ref()
                .is_none_or(|q| q.matches(event))
                .then(|| {
                    let changes = self.flaps.recent_changes(key);
                    self.flapping_alert(event, since, changes)
                });
        }
        problem.map(|p| self.alert(p, None))
    }

    /// Runs `change` on the state of `key`, and returns what it does to the key's alert: the
    /// alert it fired before resolved at `now` (unless it is the same alert), the one it fires
    /// after (unless it fired already).
    fn transition(
        &mut self,
        key: &KeyName,
        now: i64,
        change: impl FnOnce(&mut Self),
    ) -> Vec<Alert> {
        let before = self.current(key);
        change(self);
        let after = self.current(key);
        let mut out = Vec::new();
        match (before, after) {
            (Some(before), Some(after)) if before.labels == after.labels => {}
            (before, after) => {
                out.extend(before.map(|mut alert| {
                    alert.resolved_at = Some(now);
                    alert
                }));
                out.extend(after);
            }
        }
        let fired = out.iter().filter(|a| a.resolved_at.is_none()).count();
        self.count = (self.count + fired).saturating_sub(out.len() - fired);
        out
    }

    /// Starts over from `snapshot` (at the start, or after missing changes): what fired before
    /// and no longer does is resolved at `now`; everything firing is sent again. After a
    /// restart a key's `startsAt` is its latest event's time (the snapshot holds no older one);
    /// Alertmanager keeps the earlier start of an alert it still holds. Flap detection keeps
    /// what it knew.
    pub fn resync(&mut self, snapshot: &Snapshot, now: i64) -> Vec<Alert> {
        let acks = &snapshot.actions.acks;
        let acked: std::collections::HashSet<KeyName> = acks.iter().map(|a| a.key()).collect();
        let silenced: std::collections::HashSet<&KeyName> =
            snapshot.actions.silenced.iter().collect();
        let fired = self.firing();
        let before = std::mem::take(&mut self.problems);
        for event in &snapshot.events {
            let key = key_of(event);
            if self.alerts_on(event) {
                let problem = Problem {
                    event: Arc::clone(event),
                    since: before
                        .get(&key)
                        .filter(|p| p.event.state == event.state)
                        .map_or(event.time_micros, |p| p.since),
                    acked: acked.contains(&key),
                    silenced: silenced.contains(&key),
                };
                self.problems.insert(key, problem);
            }
        }
        self.seq = snapshot.seq;
        let firing = self.firing();
        let labels: std::collections::HashSet<&BTreeMap<String, String>> =
            firing.iter().map(|a| &a.labels).collect();
        let mut out: Vec<Alert> = fired
            .into_iter()
            .filter(|old| !labels.contains(&old.labels))
            .map(|mut old| {
                old.resolved_at = Some(now);
                old
            })
            .collect();
        self.count = firing.len();
        out.extend(firing);
        out
    }

    /// The alerts `change` fires or resolves (resolved ones at `now`).
    pub fn apply(&mut self, change: &Change, now: i64) -> Vec<Alert> {
        if change.seq <= self.seq {
            return Vec::new();
        }
        self.seq = change.seq;
        match &change.kind {
            ChangeKind::State(state) => self.apply_state(state, now),
            ChangeKind::Action(record) => self.apply_record(record, now),
        }
    }

    /// The keys that stopped flapping by `now` (too few changes left in the window): their
    /// flapping alert resolves, and their problem's fires if it lasts.
    pub fn settle(&mut self, now: i64) -> Vec<Alert> {
        let mut out = Vec::new();
        for key in self.flaps.settle(now) {
            out.extend(self.transition(&key, now, |this| {
                this.flapping.remove(&key);
            }));
        }
        out
    }

    fn apply_state(&mut self, change: &StateChange, now: i64) -> Vec<Alert> {
        let key = key_of(&change.event);
        let mut forgotten = None;
        let mut out = self.transition(&key, now, |this| {
            let old = this.problems.remove(&key);
            if change.removed {
                this.flaps.forget(&key);
                this.flapping.remove(&key);
                return;
            }
            // Only changes into or out of an alert state count: a key flapping between two
            // states nobody alerts on is nothing to say.
            let states = &this.rules.states;
            let counts = states.contains(&change.previous_state)
                || change
                    .event
                    .state
                    .as_ref()
                    .is_some_and(|s| states.contains(s));
            if counts {
                forgotten = this.flaps.record(&key, change.event.time_micros);
            }
            match this.flaps.flapping_since(&key) {
                Some(since) => {
                    this.flapping
                        .insert(key.clone(), (Arc::clone(&change.event), since));
                }
                None => {
                    this.flapping.remove(&key);
                }
            }
            if this.alerts_on(&change.event) {
                let problem = Problem {
                    event: Arc::clone(&change.event),
                    since: change.event.time_micros,
                    // An ack lasts until the key is ok again (or it ends otherwise: an unack).
                    acked: old.as_ref().is_some_and(|p| p.acked),
                    silenced: change.silenced,
                };
                this.problems.insert(key.clone(), problem);
            }
        });
        // A key flap detection forgot to make room stops flapping.
        if let Some(forgotten) = forgotten {
            out.extend(self.transition(&forgotten, now, |this| {
                this.flapping.remove(&forgotten);
            }));
        }
        out
    }

    fn apply_record(&mut self, record: &ActionRecord, now: i64) -> Vec<Alert> {
        match record {
            ActionRecord::Ack(ack) => self.mute(&[ack.key()], now, |p| p.acked = true),
            ActionRecord::Unack { host, service, .. } => {
                self.mute(&[(host.clone(), service.clone())], now, |p| p.acked = false)
            }
            ActionRecord::Silence {
                silenced,
                unsilenced,
                ..
            } => {
                let mut out = self.mute(silenced, now, |p| p.silenced = true);
                out.extend(self.mute(unsilenced, now, |p| p.silenced = false));
                out
            }
            ActionRecord::Silences { silenced, .. } => {
                let set: std::collections::HashSet<&KeyName> = silenced.iter().collect();
                let keys: Vec<KeyName> = self.problems.keys().cloned().collect();
                let (now_silenced, not): (Vec<KeyName>, Vec<KeyName>) =
                    keys.into_iter().partition(|k| set.contains(k));
                let mut out = self.mute(&now_silenced, now, |p| p.silenced = true);
                out.extend(self.mute(&not, now, |p| p.silenced = false));
                out
            }
        }
    }

    /// Sets what `set` says on each of `keys` that is a problem; an alert whose firing changes
    /// with it is resolved at `now` or fired again.
    fn mute(&mut self, keys: &[KeyName], now: i64, set: impl Fn(&mut Problem)) -> Vec<Alert> {
        let mut out = Vec::new();
        for key in keys {
            if !self.problems.contains_key(key) {
                continue;
            }
            out.extend(self.transition(key, now, |this| {
                if let Some(problem) = this.problems.get_mut(key) {
                    set(problem);
                }
            }));
        }
        out
    }

    /// Whether `event` is in an alert state that the query matches.
    fn alerts_on(&self, event: &Event) -> bool {
        event
            .state
            .as_ref()
            .is_some_and(|state| self.rules.states.contains(state))
            && self.rules.query.as_ref().is_none_or(|q| q.matches(event))
    }

    fn labels(&self, event: &Event) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        // Copied first, so the four fixed labels win (the names are checked at start anyway).
        for name in &self.rules.labels {
            let attribute = event.attributes.iter().find(|(k, _)| k == name);
            if let Some((_, value)) = attribute {
                labels.insert(name.clone(), value.clone());
            } else if event.tags.iter().any(|t| t == name) {
                labels.insert(name.clone(), "true".to_owned());
            }
        }
        labels.insert("alertname".to_owned(), ALERT_NAME.to_owned());
        // Absent parts are left out: an empty label is no label to Alertmanager.
        for (name, value) in [
            ("host", &event.host),
            ("service", &event.service),
            ("state", &event.state),
        ] {
            if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
                labels.insert(name.to_owned(), value.clone());
            }
        }
        labels
    }

    /// The one alert of a flapping key: no `state` label (it keeps changing), `flapping="true"`.
    fn flapping_alert(&self, event: &Event, since: i64, changes: usize) -> Alert {
        let mut labels = self.labels(event);
        labels.remove("state");
        labels.insert("flapping".to_owned(), "true".to_owned());
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "description".to_owned(),
            format!(
                "flapping: {changes} changes of state within {} minutes",
                super::flap::FLAP_WINDOW / 60_000_000
            ),
        );
        let link = self.link(event);
        if let Some(link) = &link {
            annotations.insert("link".to_owned(), link.clone());
        }
        Alert {
            labels,
            annotations,
            starts_at: since,
            resolved_at: None,
            generator_url: link,
        }
    }

    fn link(&self, event: &Event) -> Option<String> {
        self.rules
            .external_url
            .as_deref()
            .map(|url| link(url, event))
    }

    fn alert(&self, problem: &Problem, resolved_at: Option<i64>) -> Alert {
        let event = &problem.event;
        let mut annotations = BTreeMap::new();
        let description = match (event.state.as_deref(), &event.description) {
            (Some("expired"), _) => "went silent: no event within its TTL".to_owned(),
            (_, Some(text)) => text.clone(),
            (_, None) => String::new(),
        };
        if !description.is_empty() {
            annotations.insert("description".to_owned(), description);
        }
        if let Some(metric) = event.metric {
            annotations.insert("metric".to_owned(), metric.as_f64().to_string());
        }
        let link = self.link(event);
        if let Some(link) = &link {
            annotations.insert("link".to_owned(), link.clone());
        }
        Alert {
            labels: self.labels(event),
            annotations,
            starts_at: problem.since,
            resolved_at,
            generator_url: link,
        }
    }
}

/// The dashboard filtered to the key: `URL?query=host = "H" and service = "S"`, encoded.
fn link(base: &str, event: &Event) -> String {
    let part = |name: &str, value: &Option<String>| match value {
        Some(value) => format!(
            "{name} = \"{}\"",
            value.replace('\\', "\\\\").replace('"', "\\\"")
        ),
        None => format!("{name} = nil"),
    };
    let query = format!(
        "{} and {}",
        part("host", &event.host),
        part("service", &event.service)
    );
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}query={encoded}")
}

#[cfg(test)]
mod tests;
