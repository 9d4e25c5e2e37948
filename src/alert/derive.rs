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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::action::{ActionRecord, KeyName};
use crate::change::{Change, ChangeKind, Snapshot, StateChange};
use crate::event::Event;
use crate::query::Query;

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
    fn firing(&self) -> bool {
        !self.acked && !self.silenced
    }
}

/// The alert state of every key: see the module's documentation.
#[derive(Debug)]
pub struct Firing {
    rules: Rules,
    problems: HashMap<KeyName, Problem>,
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
            seq: 0,
            count: 0,
        }
    }

    /// Alerts firing now.
    pub fn firing(&self) -> Vec<Alert> {
        let mut alerts: Vec<Alert> = self
            .problems
            .values()
            .filter(|p| p.firing())
            .map(|p| self.alert(p, None))
            .collect();
        // The same order on every node and every resend.
        alerts.sort_by(|a, b| a.labels.cmp(&b.labels));
        alerts
    }

    /// How many alerts fire now.
    pub fn firing_count(&self) -> usize {
        self.count
    }

    /// Starts over from `snapshot` (at the start, or after missing changes): what fired before
    /// and no longer does is resolved at `now`; everything firing is sent again. After a
    /// restart a key's `startsAt` is its latest event's time (the snapshot holds no older one);
    /// Alertmanager keeps the earlier start of an alert it still holds.
    pub fn resync(&mut self, snapshot: &Snapshot, now: i64) -> Vec<Alert> {
        let acks = &snapshot.actions.acks;
        let acked: std::collections::HashSet<KeyName> = acks.iter().map(|a| a.key()).collect();
        let silenced: std::collections::HashSet<&KeyName> =
            snapshot.actions.silenced.iter().collect();
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
        let mut out: Vec<Alert> = before
            .values()
            .filter(|p| p.firing())
            .map(|p| self.alert(p, Some(now)))
            .filter(|old| {
                !self
                    .problems
                    .values()
                    .any(|p| p.firing() && self.labels(&p.event) == old.labels)
            })
            .collect();
        let firing = self.firing();
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
        let out = match &change.kind {
            ChangeKind::State(state) => self.apply_state(state, now),
            ChangeKind::Action(record) => self.apply_record(record, now),
        };
        // Each alert out is one that starts or stops firing.
        let fired = out.iter().filter(|a| a.resolved_at.is_none()).count();
        self.count = (self.count + fired).saturating_sub(out.len() - fired);
        out
    }

    fn apply_state(&mut self, change: &StateChange, now: i64) -> Vec<Alert> {
        let key = key_of(&change.event);
        let old = self.problems.remove(&key);
        let mut out = Vec::new();
        if let Some(old) = old.as_ref().filter(|p| p.firing()) {
            out.push(self.alert(old, Some(now)));
        }
        if !change.removed && self.alerts_on(&change.event) {
            let problem = Problem {
                event: Arc::clone(&change.event),
                since: change.event.time_micros,
                // An ack lasts until the key is ok again (or it ends otherwise: an unack record).
                acked: old.as_ref().is_some_and(|p| p.acked),
                silenced: change.silenced,
            };
            if problem.firing() {
                out.push(self.alert(&problem, None));
            }
            self.problems.insert(key, problem);
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
            let Some(problem) = self.problems.get_mut(key) else {
                continue;
            };
            let was = problem.firing();
            set(problem);
            let is = problem.firing();
            let problem = problem.clone();
            match (was, is) {
                (true, false) => out.push(self.alert(&problem, Some(now))),
                (false, true) => out.push(self.alert(&problem, None)),
                _ => {}
            }
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
        let link = self
            .rules
            .external_url
            .as_deref()
            .map(|url| link(url, event));
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
