//! Operator actions in the state machine: acks per key, silences, clear.
//!
//! Everything here is decided from the engine's state and the input's own times, never a
//! clock: an action carries when it was made; [`Engine::expire`] (a tick) ends expired acks and
//! starts and ends silence windows; applying a change ends the ack of a key that returns to ok
//! and marks the change `silenced` when an active silence matches it. Each outcome is a record
//! ([`ActionRecord`]) with the next `seq`, in the engine's order, so every node that applies the
//! same input hands out the same records with the same numbers.
//!
//! The silenced-key set holds the problem keys (a state, not ok) an active silence matches. It
//! is evaluated for a key whenever it changes state (against every active silence), and when a
//! silence changes only for the keys that silence can change: one that becomes active (created,
//! edited, started) is evaluated against the problem keys not silenced yet; one that stops
//! (deleted, ended, replaced) against the silenced keys, and those it matches are judged again
//! against the silences left. So a silence change costs one query over the problem keys (plus
//! the keys it released), not every silence over every key, and its record carries what changed
//! (the silence, the keys silenced and released), not the whole set. An update that changes no
//! state (a metric) does not re-evaluate a key: its judgement stands until its next change of
//! state. Problems only, so the set stays the size of the problem list, not of the index.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::key::KeyRef;
use super::Engine;
use crate::action::{
    AckInfo, Action, ActionKind, ActionRecord, ActionRefusal, Actions, KeyName, Silence,
    SilenceChange, UnackReason, MAX_SILENCES, SILENCES_MEMORY,
};
use crate::change::{Change, ChangeKind, StateChange};
use crate::event::Event;
use crate::query::Query;

/// The state an ack resolves on.
const OK: &str = "ok";

/// A silence and its compiled query.
#[derive(Debug)]
struct Live {
    silence: Silence,
    query: Query,
}

/// The operator state the engine keeps. Ordered maps: iteration order is part of what the
/// engine outputs (the silence list, the silenced keys), so it must not depend on hashing.
#[derive(Debug, Default)]
pub(super) struct Operator {
    acks: BTreeMap<KeyName, AckInfo>,
    /// (expires_at, key) of acks with an expiry: what a tick ends.
    ack_expiry: BTreeSet<(i64, KeyName)>,
    silences: BTreeMap<u64, Live>,
    silenced: BTreeSet<KeyName>,
    /// The latest time the input has shown (ticks, actions): when silences are judged active.
    clock: i64,
}

impl Operator {
    /// No acks, no silences, nothing silenced: changes need no look here.
    fn is_idle(&self) -> bool {
        self.acks.is_empty() && self.silences.is_empty() && self.silenced.is_empty()
    }
}

/// Whether the key's state is a problem (a state, not ok): what an ack needs, and what the
/// silenced set lists (an ok key matched by a silence is no news; its change frames still
/// carry `silenced`, so a page knows once it turns).
fn is_problem(event: &Event) -> bool {
    event.state.as_deref().is_some_and(|state| state != OK)
}

fn key_name(event: &Event) -> KeyName {
    (event.host.clone(), event.service.clone())
}

fn key_ref<'a>(host: &'a Option<String>, service: &'a Option<String>) -> KeyRef<'a> {
    KeyRef::of_parts(host.as_deref(), service.as_deref())
}

/// `host/service` for messages.
fn show_key(host: &Option<String>, service: &Option<String>) -> String {
    format!(
        "({}, {})",
        host.as_deref().map_or("null".into(), |h| format!("{h:?}")),
        service
            .as_deref()
            .map_or("null".into(), |s| format!("{s:?}"))
    )
}

impl Engine {
    /// Applies an operator action: its records go to `changes`; returns the `seq` of the first
    /// (the action's own), or why it was refused (then nothing of it was applied).
    pub fn apply_action(
        &mut self,
        action: Action,
        changes: &mut Vec<Change>,
    ) -> Result<u64, ActionRefusal> {
        let clock = self.operator.clock;
        self.operator.clock = clock.max(action.at_micros);
        let applied = self.apply_action_checked(action, changes);
        if applied.is_err() {
            // Refused: not even the clock moves.
            self.operator.clock = clock;
        }
        applied
    }

    /// [`Engine::apply_action`] once the clock has moved: every check comes before any change.
    fn apply_action_checked(
        &mut self,
        action: Action,
        changes: &mut Vec<Change>,
    ) -> Result<u64, ActionRefusal> {
        let Action {
            at_micros,
            by,
            kind,
        } = action;
        let first = self.seq + 1;
        match kind {
            ActionKind::Ack {
                host,
                service,
                note,
                expires_at,
            } => {
                let ack = AckInfo {
                    host,
                    service,
                    note,
                    by,
                    at: at_micros,
                    expires_at,
                };
                self.ack(ack, changes)?;
            }
            ActionKind::Unack { host, service } => self.unack((host, service), by, changes)?,
            ActionKind::Silence {
                id,
                query,
                comment,
                starts_at,
                ends_at,
                compiled,
            } => {
                let request = SilenceRequest {
                    id,
                    query,
                    comment,
                    starts_at,
                    ends_at,
                    compiled,
                };
                self.silence(request, at_micros, by, first, changes)?;
            }
            ActionKind::Unsilence { id } => {
                if !self.operator.silences.contains_key(&id) {
                    return Err(no_silence(id));
                }
                self.drop_silence(id, SilenceChange::Deleted, changes);
            }
            ActionKind::Clear { host, service } => self.clear(&host, &service, by, changes)?,
        }
        Ok(first)
    }

    /// Acknowledges a problem: refused for a key not indexed, not in a problem state, or an
    /// expiry already past.
    fn ack(&mut self, ack: AckInfo, changes: &mut Vec<Change>) -> Result<(), ActionRefusal> {
        let entry = self
            .index
            .get(&key_ref(&ack.host, &ack.service))
            .ok_or_else(|| not_indexed(&ack.host, &ack.service))?;
        if !is_problem(&entry.event) {
            return Err(ActionRefusal::Conflict(format!(
                "{} is {}: there is no problem to acknowledge",
                show_key(&ack.host, &ack.service),
                entry.event.state.as_deref().unwrap_or("without a state")
            )));
        }
        if ack.expires_at.is_some_and(|at| at <= ack.at) {
            return Err(ActionRefusal::Invalid("expires_at is in the past".into()));
        }
        self.set_ack(ack.clone());
        self.push_record(ActionRecord::Ack(ack), changes);
        Ok(())
    }

    /// Ends an ack by hand: refused when the key is not acknowledged.
    fn unack(
        &mut self,
        key: KeyName,
        by: String,
        changes: &mut Vec<Change>,
    ) -> Result<(), ActionRefusal> {
        if !self.operator.acks.contains_key(&key) {
            return Err(ActionRefusal::NotFound(format!(
                "{} is not acknowledged",
                show_key(&key.0, &key.1)
            )));
        }
        let by = Some(by).filter(|by| !by.is_empty());
        self.end_ack(key, UnackReason::Deleted, by, changes);
        Ok(())
    }

    /// Creates (no id) or edits a silence; `first` is the seq of its record, a new silence's id.
    fn silence(
        &mut self,
        request: SilenceRequest,
        at_micros: i64,
        by: String,
        first: u64,
        changes: &mut Vec<Change>,
    ) -> Result<(), ActionRefusal> {
        let SilenceRequest {
            id,
            query,
            comment,
            starts_at,
            ends_at,
            compiled,
        } = request;
        check_silence_window(at_micros, starts_at, ends_at)?;
        let created_at = self.silence_created_at(id, at_micros)?;
        let compiled = compile_silence(&query, compiled)?;
        self.check_silence_memory(id, &compiled)?;
        let silence = Silence {
            id: id.unwrap_or(first),
            query,
            comment,
            by,
            created_at,
            starts_at,
            ends_at,
            active: starts_at <= self.operator.clock,
        };
        let change = if id.is_some() {
            SilenceChange::Edited
        } else {
            SilenceChange::Created
        };
        let live = Live {
            silence,
            query: compiled,
        };
        self.put_silence(live, change, changes);
        Ok(())
    }

    /// When the silence `id` was created: an edit keeps the original's time (refused when
    /// there is none), a new one is created now — refused at [`MAX_SILENCES`].
    fn silence_created_at(&self, id: Option<u64>, at_micros: i64) -> Result<i64, ActionRefusal> {
        match id {
            Some(id) => match self.operator.silences.get(&id) {
                Some(live) => Ok(live.silence.created_at),
                None => Err(no_silence(id)),
            },
            None if self.operator.silences.len() >= MAX_SILENCES => Err(ActionRefusal::Conflict(
                format!("there are {MAX_SILENCES} silences, the limit: end one first"),
            )),
            None => Ok(at_micros),
        }
    }

    /// Removes a key from the index by hand (a change that removes it from every dashboard).
    fn clear(
        &mut self,
        host: &Option<String>,
        service: &Option<String>,
        by: String,
        changes: &mut Vec<Change>,
    ) -> Result<(), ActionRefusal> {
        let entry = self
            .index
            .remove(&key_ref(host, service))
            .ok_or_else(|| not_indexed(host, service))?;
        let event = entry.event;
        let change = StateChange {
            removed: true,
            cleared_by: Some(by),
            ..self.state_change(event.state.clone(), Arc::clone(&event), Some(event))
        };
        changes.push(self.next_change(change));
        self.after_change(changes);
        Ok(())
    }
}

/// A silence action's own fields (those of [`ActionKind::Silence`]).
struct SilenceRequest {
    id: Option<u64>,
    query: String,
    comment: String,
    starts_at: i64,
    ends_at: i64,
    compiled: Option<Query>,
}

/// A silence must end in the future and after it starts.
fn check_silence_window(at_micros: i64, starts_at: i64, ends_at: i64) -> Result<(), ActionRefusal> {
    if ends_at <= at_micros || ends_at <= starts_at {
        return Err(ActionRefusal::Invalid(
            "ends_at must be later than now and than starts_at".into(),
        ));
    }
    Ok(())
}

/// The silence's query: compiled already by whoever checked it first (the HTTP handler), or
/// parsed here (an action replayed from the log or the cluster stream).
fn compile_silence(query: &str, compiled: Option<Query>) -> Result<Query, ActionRefusal> {
    match compiled {
        Some(compiled) => Ok(compiled),
        None => Query::parse_silence(query)
            .map_err(|error| ActionRefusal::Invalid(format!("bad query: {error}"))),
    }
}

impl Engine {
    /// Sets (or replaces) an ack.
    fn set_ack(&mut self, ack: AckInfo) {
        let key = ack.key();
        if let Some(old) = self.operator.acks.remove(&key) {
            if let Some(at) = old.expires_at {
                self.operator.ack_expiry.remove(&(at, key.clone()));
            }
        }
        if let Some(at) = ack.expires_at {
            self.operator.ack_expiry.insert((at, key.clone()));
        }
        self.operator.acks.insert(key, ack);
    }

    /// Ends the ack of `key` (which must exist), with its record.
    fn end_ack(
        &mut self,
        key: KeyName,
        reason: UnackReason,
        by: Option<String>,
        changes: &mut Vec<Change>,
    ) {
        let Some(ack) = self.operator.acks.remove(&key) else {
            return;
        };
        if let Some(at) = ack.expires_at {
            self.operator.ack_expiry.remove(&(at, key.clone()));
        }
        let (host, service) = key;
        self.push_record(
            ActionRecord::Unack {
                host,
                service,
                reason,
                by,
            },
            changes,
        );
    }

    fn push_record(&mut self, record: ActionRecord, changes: &mut Vec<Change>) {
        self.seq += 1;
        changes.push(Change::action(self.seq, record));
    }

    /// What follows the state change just pushed to `changes`: it is marked silenced (and the
    /// silenced set follows it); a key back to ok or gone loses its ack.
    pub(super) fn after_change(&mut self, changes: &mut Vec<Change>) {
        // Without acks or silences (the usual case under load) a change costs nothing here.
        if self.operator.is_idle() {
            return;
        }
        let Some(Change {
            kind: ChangeKind::State(change),
            ..
        }) = changes.last_mut()
        else {
            return;
        };
        let key = key_name(&change.event);
        let silenced = !change.removed && self.silences_match(&change.event);
        change.silenced = silenced;
        if silenced && is_problem(&change.event) {
            self.operator.silenced.insert(key.clone());
        } else {
            self.operator.silenced.remove(&key);
        }
        let resolved = change.event.state.as_deref() == Some(OK);
        let reason = if change.removed {
            UnackReason::Removed
        } else {
            UnackReason::Resolved
        };
        if (change.removed || resolved) && self.operator.acks.contains_key(&key) {
            self.end_ack(key, reason, None, changes);
        }
    }

    /// Refuses a silence (new, or replacing `id`) whose patterns would take the silences past
    /// [`SILENCES_MEMORY`]. The cost is the query's, the same on every node.
    fn check_silence_memory(&self, id: Option<u64>, query: &Query) -> Result<(), ActionRefusal> {
        let others: usize = self
            .operator
            .silences
            .values()
            .filter(|live| Some(live.silence.id) != id)
            .map(|live| live.query.memory())
            .sum();
        if others.saturating_add(query.memory()) > SILENCES_MEMORY {
            return Err(ActionRefusal::Conflict(format!(
                "the patterns of this silence need up to {} KiB and the silences already hold up \
                 to {} KiB of the {} MiB they may: end a silence, or use fewer or simpler patterns",
                query.memory() / 1024,
                others / 1024,
                SILENCES_MEMORY >> 20
            )));
        }
        Ok(())
    }

    /// Whether an active silence matches `event`.
    fn silences_match(&self, event: &Event) -> bool {
        self.operator
            .silences
            .values()
            .any(|live| live.silence.active && live.query.matches(event))
    }

    /// Puts a silence (new, or replacing one with its id) and re-judges only what it can
    /// change: the keys the replaced version (if active) matches lose it unless another active
    /// silence matches them; problem keys not silenced that the new version (if active)
    /// matches gain it. Its record carries both lists.
    fn put_silence(&mut self, live: Live, change: SilenceChange, changes: &mut Vec<Change>) {
        let id = live.silence.id;
        let old = self.operator.silences.insert(id, live);
        let unsilenced = match old {
            Some(old) if old.silence.active => self.unsilence_matched_by(&old.query),
            _ => Vec::new(),
        };
        let silenced = self.silence_matched_by(id);
        self.silence_record(id, change, silenced, unsilenced, changes);
    }

    /// Removes silence `id` (which exists) and re-judges the keys it matches.
    fn drop_silence(&mut self, id: u64, change: SilenceChange, changes: &mut Vec<Change>) {
        let unsilenced = match self.operator.silences.remove(&id) {
            Some(old) if old.silence.active => self.unsilence_matched_by(&old.query),
            _ => Vec::new(),
        };
        self.silence_record(id, change, Vec::new(), unsilenced, changes);
    }

    /// Silence `id` became active (created, edited, started): the problem keys not silenced
    /// that it matches are now. Costs one evaluation of its query per such key.
    fn silence_matched_by(&mut self, id: u64) -> Vec<KeyName> {
        let Some(live) = self.operator.silences.get(&id) else {
            return Vec::new();
        };
        if !live.silence.active {
            return Vec::new();
        }
        let silenced = &self.operator.silenced;
        let mut added: Vec<KeyName> = self
            .index
            .values()
            .filter(|entry| is_problem(&entry.event))
            .map(|entry| (entry, key_name(&entry.event)))
            .filter(|(entry, key)| !silenced.contains(key) && live.query.matches(&entry.event))
            .map(|(_, key)| key)
            .collect();
        // The index is a hash map: its order is not the same on every node; the record's is.
        added.sort_unstable();
        self.operator.silenced.extend(added.iter().cloned());
        added
    }

    /// A silence with `query` stopped being active (deleted, ended, replaced): the silenced
    /// keys it matches are judged again against the silences left; those none matches are no
    /// longer silenced. Only silenced keys are looked at, and only those `query` matches are
    /// judged again.
    fn unsilence_matched_by(&mut self, query: &Query) -> Vec<KeyName> {
        let removed: Vec<KeyName> = self
            .operator
            .silenced
            .iter()
            .filter(|key| {
                self.index
                    .get(&key_ref(&key.0, &key.1))
                    .is_none_or(|entry| {
                        query.matches(&entry.event) && !self.silences_match(&entry.event)
                    })
            })
            .cloned()
            .collect();
        for key in &removed {
            self.operator.silenced.remove(key);
        }
        removed
    }

    fn silence_record(
        &mut self,
        id: u64,
        change: SilenceChange,
        silenced: Vec<KeyName>,
        unsilenced: Vec<KeyName>,
        changes: &mut Vec<Change>,
    ) {
        let silence = self
            .operator
            .silences
            .get(&id)
            .map(|live| live.silence.clone());
        let record = ActionRecord::Silence {
            id,
            change,
            silence,
            silenced,
            unsilenced,
        };
        self.push_record(record, changes);
    }

    fn silence_list(&self) -> Vec<Silence> {
        self.operator
            .silences
            .values()
            .map(|live| live.silence.clone())
            .collect()
    }

    /// The clock, as data, for operator state: acks past their expiry end, silences start
    /// and end. Returns how many records it made.
    pub(super) fn tick_actions(&mut self, now_micros: i64, changes: &mut Vec<Change>) -> usize {
        let before = changes.len();
        self.operator.clock = self.operator.clock.max(now_micros);
        while let Some((at, _)) = self.operator.ack_expiry.first() {
            if *at > now_micros {
                break;
            }
            let Some((_, key)) = self.operator.ack_expiry.pop_first() else {
                break;
            };
            self.end_ack(key, UnackReason::Expired, None, changes);
        }
        // Each silence that ends or starts is its own record, in id order.
        let due: Vec<(u64, SilenceChange)> = self
            .operator
            .silences
            .values()
            .filter_map(|live| {
                let silence = &live.silence;
                if silence.ends_at <= now_micros {
                    Some((silence.id, SilenceChange::Ended))
                } else if !silence.active && silence.starts_at <= now_micros {
                    Some((silence.id, SilenceChange::Started))
                } else {
                    None
                }
            })
            .collect();
        for (id, change) in due {
            if change == SilenceChange::Ended {
                self.drop_silence(id, change, changes);
            } else if let Some(live) = self.operator.silences.get_mut(&id) {
                live.silence.active = true;
                let silenced = self.silence_matched_by(id);
                self.silence_record(id, change, silenced, Vec::new(), changes);
            }
        }
        changes.len() - before
    }

    /// The operator state, for a snapshot.
    pub(super) fn actions_snapshot(&self) -> Actions {
        Actions {
            acks: self.operator.acks.values().cloned().collect(),
            silences: self.silence_list(),
            silenced: self.operator.silenced.iter().cloned().collect(),
            clock: self.operator.clock,
        }
    }

    /// Restores the operator state (after [`Engine::restore`] of the index). A silence whose
    /// query no longer compiles is dropped with a warning. `silenced` is taken as given when
    /// `exact` (an image another node made), else evaluated again over the restored index.
    pub fn restore_actions(&mut self, actions: Actions, exact: bool) {
        self.operator.clock = self.operator.clock.max(actions.clock);
        for ack in actions.acks {
            self.set_ack(ack);
        }
        for silence in actions.silences {
            match Query::parse_silence(&silence.query) {
                Ok(query) => {
                    self.operator.clock = self.operator.clock.max(silence.created_at);
                    self.operator
                        .silences
                        .insert(silence.id, Live { silence, query });
                }
                Err(error) => {
                    tracing::warn!(id = silence.id, %error, "dropping a stored silence whose query does not compile")
                }
            }
        }
        if exact {
            self.operator.silenced = actions.silenced.into_iter().collect();
        } else {
            self.operator.silenced = self
                .index
                .values()
                .filter(|entry| is_problem(&entry.event))
                .filter(|entry| self.silences_match(&entry.event))
                .map(|entry| key_name(&entry.event))
                .collect();
        }
    }
}

fn not_indexed(host: &Option<String>, service: &Option<String>) -> ActionRefusal {
    ActionRefusal::NotFound(format!("{} is not in the index", show_key(host, service)))
}

fn no_silence(id: u64) -> ActionRefusal {
    ActionRefusal::NotFound(format!("there is no silence {id}"))
}

#[cfg(test)]
mod tests;
