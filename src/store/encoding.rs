//! How changes and indexed events are laid out on disk: the `StoredChange` of history and the
//! change log, the index's key and value, and the write steps the committer hands the store.

use crate::action::{AckInfo, ActionRecord, Silence};
use crate::change::{Change, ChangeKind, StateChange};
use crate::event::convert;
use crate::event::Event;
use crate::proto;

use super::error::StoreError;

/// A change as kept in history.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredChange {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(string, tag = "2")]
    pub previous_state: String,
    #[prost(message, optional, tag = "3")]
    pub event: Option<proto::Event>,
    #[prost(message, optional, tag = "4")]
    pub previous: Option<proto::Event>,
    /// When the change was committed (µs since the epoch): what age-based retention uses.
    #[prost(int64, tag = "5")]
    pub recorded_at: i64,
    /// The key left the index (see [`Change::removed`]).
    #[prost(bool, tag = "6")]
    pub removed: bool,
    /// An operator-action record, as JSON of [`ActionRecord`] (see [`Change::action`]); empty
    /// for a state change.
    #[prost(bytes = "vec", tag = "7")]
    pub action: Vec<u8>,
    /// See [`Change::silenced`].
    #[prost(bool, tag = "8")]
    pub silenced: bool,
    /// See [`Change::cleared_by`].
    #[prost(string, optional, tag = "9")]
    pub cleared_by: Option<String>,
}

impl StoredChange {
    pub fn event(&self) -> Event {
        convert::from_proto(self.event.clone().unwrap_or_default(), 0)
    }

    pub fn previous(&self) -> Option<Event> {
        self.previous.clone().map(|p| convert::from_proto(p, 0))
    }

    /// What this record is. The one place that reads the layout's rule — non-empty `action`
    /// bytes make an operator-action record, whose other fields mean nothing — so that every
    /// reader matches on a [`StoredKind`] instead. The layout itself is unchanged since records
    /// had no `action` (they still read as state changes), so no version is needed.
    pub fn kind(&self) -> StoredKind {
        if self.action.is_empty() {
            return StoredKind::State;
        }
        match serde_json::from_slice(&self.action) {
            Ok(record) => StoredKind::Action(record),
            Err(error) => {
                tracing::warn!(seq = self.seq, %error, "skipping an undecodable action record");
                StoredKind::Undecodable
            }
        }
    }

    /// Back to the engine's form, to be filtered and framed like a live change; `None` for an
    /// action record that does not decode (skipped, with a warning: not a fake state change).
    pub fn into_change(self) -> Option<Change> {
        let kind = match self.kind() {
            StoredKind::Action(record) => ChangeKind::Action(std::sync::Arc::new(record)),
            StoredKind::Undecodable => return None,
            StoredKind::State => ChangeKind::State(StateChange {
                event: std::sync::Arc::new(self.event()),
                previous: self.previous().map(std::sync::Arc::new),
                previous_state: self.previous_state,
                removed: self.removed,
                silenced: self.silenced,
                cleared_by: self.cleared_by,
            }),
        };
        Some(Change {
            seq: self.seq,
            kind,
        })
    }
}

/// What a [`StoredChange`] holds, decided from its bytes once.
#[derive(Debug)]
pub enum StoredKind {
    /// A state change: its fields are the record's own.
    State,
    /// An operator-action record.
    Action(ActionRecord),
    /// An operator-action record that does not decode (a damaged or newer record): readers
    /// skip it.
    Undecodable,
}

/// Changes encoded once, for the change log and for history.
#[derive(Default)]
pub struct Encoded {
    pub(super) records: Vec<Record>,
}

/// One encoded change.
pub(super) struct Record {
    pub(super) seq: u64,
    pub(super) effect: Effect,
    /// The encoded [`StoredChange`].
    pub(super) bytes: Vec<u8>,
}

/// What a change does to the stored state besides history.
pub(super) enum Effect {
    /// The index gets this event for its key.
    Put(std::sync::Arc<Event>),
    /// The key's row goes (this is its last event).
    Delete(std::sync::Arc<Event>),
    /// An operator-action record: it touches the stored acks and silences, not the index.
    Action(std::sync::Arc<ActionRecord>),
}

impl Encoded {
    pub fn new<'a>(changes: impl IntoIterator<Item = &'a Change>, now_micros: i64) -> Self {
        // One scratch buffer for the nested events of all the changes.
        let mut scratch = Vec::new();
        let records = changes
            .into_iter()
            .map(|change| Record {
                seq: change.seq,
                effect: match &change.kind {
                    ChangeKind::State(state) if state.removed => {
                        Effect::Delete(std::sync::Arc::clone(&state.event))
                    }
                    ChangeKind::State(state) => Effect::Put(std::sync::Arc::clone(&state.event)),
                    ChangeKind::Action(record) => Effect::Action(std::sync::Arc::clone(record)),
                },
                bytes: encode_change(change, now_micros, &mut scratch),
            })
            .collect();
        Encoded { records }
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }
}

/// What was made durable (or needs no log) but is not in redb yet, in the engine's order.
///
/// Why an order: the index updates of a flush (events that were not changes) and the changes
/// around them may touch the same key. Applied changes-first-then-updates, an update flushed
/// *before* a change to its key would overwrite that change's event in redb's index, and the
/// next checkpoint would make the older state durable — wrong after a restart.
pub enum WriteStep {
    /// Changes, already in the change log: into history and the index.
    Changes(Encoded),
    /// A flush: the keys that left the index without a change (their rows go), then the latest
    /// event of keys updated without a change (their rows are written).
    Updates {
        forgotten: Vec<std::sync::Arc<Event>>,
        updated: Vec<std::sync::Arc<Event>>,
    },
}

pub(super) fn put_event(
    index: &mut redb::Table<&[u8], &[u8]>,
    event: &Event,
) -> Result<(), StoreError> {
    let key = encode_key(event);
    let mut value = Vec::with_capacity(128);
    convert::encode_event(event, &mut value);
    index.insert(key.as_slice(), value.as_slice())?;
    Ok(())
}

pub(super) fn delete_event(
    index: &mut redb::Table<&[u8], &[u8]>,
    event: &Event,
) -> Result<(), StoreError> {
    index.remove(encode_key(event).as_slice())?;
    Ok(())
}

/// A change encoded as a [`StoredChange`], straight from the engine's events (building the
/// `StoredChange` first would clone every string of both events).
/// `scratch` holds each nested event while its length is learned, reused between calls.
pub(super) fn encode_change(change: &Change, recorded_at: i64, scratch: &mut Vec<u8>) -> Vec<u8> {
    use prost::encoding::{encode_key, encode_varint, int64, string, uint64, WireType};
    let mut buf = Vec::with_capacity(256);
    // Scalars at their default are left out, as prost does for these (non-optional) fields.
    if change.seq != 0 {
        uint64::encode(1, &change.seq, &mut buf);
    }
    let state = match &change.kind {
        ChangeKind::State(state) => state,
        ChangeKind::Action(record) => {
            if recorded_at != 0 {
                int64::encode(5, &recorded_at, &mut buf);
            }
            // Serializing plain data into a Vec cannot fail.
            let json = serde_json::to_vec(&**record).unwrap_or_default();
            prost::encoding::bytes::encode(7, &json, &mut buf);
            return buf;
        }
    };
    if !state.previous_state.is_empty() {
        string::encode(2, &state.previous_state, &mut buf);
    }
    for (tag, event) in [(3, Some(&*state.event)), (4, state.previous.as_deref())] {
        if let Some(event) = event {
            // A nested message is its length, then its bytes.
            scratch.clear();
            convert::encode_event(event, scratch);
            encode_key(tag, WireType::LengthDelimited, &mut buf);
            encode_varint(scratch.len() as u64, &mut buf);
            buf.extend_from_slice(scratch);
        }
    }
    if recorded_at != 0 {
        int64::encode(5, &recorded_at, &mut buf);
    }
    if state.removed {
        prost::encoding::bool::encode(6, &state.removed, &mut buf);
    }
    if state.silenced {
        prost::encoding::bool::encode(8, &state.silenced, &mut buf);
    }
    if let Some(by) = &state.cleared_by {
        string::encode(9, by, &mut buf);
    }
    buf
}

/// What a record does to the stored operator state: an ack is written or deleted; a silence
/// delta writes or deletes its one silence (a row per id, so a change writes what changed); an
/// old whole-set record (a log written by an earlier version) replaces them all. State changes
/// do nothing here.
pub(super) fn apply_action(
    record: &ActionRecord,
    acks: &mut redb::Table<&[u8], &[u8]>,
    silences: &mut redb::Table<u64, &[u8]>,
    meta: &mut redb::Table<&str, &[u8]>,
) -> Result<(), StoreError> {
    match record {
        ActionRecord::Ack(ack) => {
            let key = encode_key_parts(ack.host.as_deref(), ack.service.as_deref());
            let value = serde_json::to_vec(ack).unwrap_or_default();
            acks.insert(key.as_slice(), value.as_slice())?;
        }
        ActionRecord::Unack { host, service, .. } => {
            let key = encode_key_parts(host.as_deref(), service.as_deref());
            acks.remove(key.as_slice())?;
        }
        ActionRecord::Silence { id, silence, .. } => {
            migrate_silences(silences, meta)?;
            match silence {
                Some(silence) => {
                    let value = serde_json::to_vec(silence).unwrap_or_default();
                    silences.insert(*id, value.as_slice())?;
                }
                None => {
                    silences.remove(*id)?;
                }
            }
        }
        ActionRecord::Silences { silences: set, .. } => {
            meta.remove(super::META_SILENCES)?;
            silences.retain(|_, _| false)?;
            for silence in set {
                let value = serde_json::to_vec(silence).unwrap_or_default();
                silences.insert(silence.id, value.as_slice())?;
            }
        }
    }
    Ok(())
}

/// Moves a silence set an earlier version kept as one meta value into the per-id table, once.
fn migrate_silences(
    silences: &mut redb::Table<u64, &[u8]>,
    meta: &mut redb::Table<&str, &[u8]>,
) -> Result<(), StoreError> {
    let Some(old) = meta.remove(super::META_SILENCES)? else {
        return Ok(());
    };
    let set = decode_silences(old.value());
    drop(old);
    silences.retain(|_, _| false)?;
    for silence in set {
        let value = serde_json::to_vec(&silence).unwrap_or_default();
        silences.insert(silence.id, value.as_slice())?;
    }
    Ok(())
}

/// The stored silences: the set an earlier version kept in meta if it is still there, else the
/// per-id rows (a silence that does not decode is skipped with a warning).
pub(super) fn read_silences(
    meta: &impl redb::ReadableTable<&'static str, &'static [u8]>,
    silences: Option<&impl redb::ReadableTable<u64, &'static [u8]>>,
) -> Result<Vec<Silence>, StoreError> {
    if let Some(old) = meta.get(super::META_SILENCES)? {
        return Ok(decode_silences(old.value()));
    }
    let mut set = Vec::new();
    if let Some(table) = silences {
        for row in table.iter()? {
            let (_, value) = row?;
            match serde_json::from_slice(value.value()) {
                Ok(silence) => set.push(silence),
                Err(error) => tracing::warn!(%error, "skipping an undecodable stored silence"),
            }
        }
    }
    Ok(set)
}

/// A stored ack, or `None` (with a warning) when it does not decode.
pub(super) fn decode_ack(bytes: &[u8]) -> Option<AckInfo> {
    serde_json::from_slice(bytes)
        .inspect_err(|error| tracing::warn!(%error, "skipping an undecodable stored ack"))
        .ok()
}

/// The stored silence set (empty when there is none or it does not decode).
pub(super) fn decode_silences(bytes: &[u8]) -> Vec<Silence> {
    serde_json::from_slice(bytes)
        .inspect_err(|error| tracing::warn!(%error, "ignoring the undecodable stored silences"))
        .unwrap_or_default()
}

/// (host, service) as bytes: a presence byte and a length prefix per part, so `(None, "a")`,
/// `(Some(""), "a")` and `("a", None)` never collide.
pub(super) fn encode_key(event: &Event) -> Vec<u8> {
    encode_key_parts(event.host.as_deref(), event.service.as_deref())
}

/// [`encode_key`] from the parts.
pub(super) fn encode_key_parts(host: Option<&str>, service: Option<&str>) -> Vec<u8> {
    let mut key = Vec::new();
    for part in [host, service] {
        match part {
            None => key.push(0),
            Some(s) => {
                key.push(1);
                key.extend_from_slice(&(s.len() as u32).to_be_bytes());
                key.extend_from_slice(s.as_bytes());
            }
        }
    }
    key
}
