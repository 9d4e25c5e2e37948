//! What a start recovers: the index, the last `seq` and the epoch from redb, plus the changes
//! only the change log holds (replayed into redb when it can be written).

use std::path::Path;

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable};

use super::encoding::{
    apply_action, decode_ack, delete_event, encode_key, encode_key_parts, put_event, read_silences,
    StoredChange, StoredKind,
};
use super::{
    new_epoch, wal, Recovered, Replay, StoreError, ACKS, HISTORY, INDEX, META, META_CLEAN_STOP,
    META_EPOCH, META_LOG_BYTES, META_SEQ, SILENCES,
};
use crate::action::{ActionRecord, Actions};
use crate::event::convert;
use crate::proto;

/// Replays into the database what only the change log holds, makes it durable and reads the
/// index back: what a start recovers. The log is started over.
pub(super) fn recover(db: &Database, log_path: &Path) -> Result<(Recovered, wal::Wal), StoreError> {
    let txn = db.begin_write()?;
    let (recovered, wal) = {
        let mut meta = txn.open_table(META)?;
        let epoch = match meta.get(META_EPOCH)? {
            Some(v) => String::from_utf8_lossy(v.value()).into_owned(),
            None => new_epoch(),
        };
        meta.insert(META_EPOCH, epoch.as_bytes())?;
        let checkpointed = meta
            .get(META_SEQ)?
            .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        // Changes acknowledged after the last checkpoint: only in the log.
        let (wal, logged, report) = wal::Wal::open(log_path, checkpointed)?;
        // What the next start checks the log against: its length now (preallocated), and no
        // clean stop until this run makes one.
        if let Some(len) = wal.file_len() {
            meta.insert(META_LOG_BYTES, len.to_be_bytes().as_slice())?;
        }
        meta.remove(META_CLEAN_STOP)?;
        let mut history = txn.open_table(HISTORY)?;
        let mut index = txn.open_table(INDEX)?;
        let mut acks = txn.open_table(ACKS)?;
        let mut silences = txn.open_table(SILENCES)?;
        let replayed = logged.len();
        let tables = (&mut acks, &mut silences, &mut meta);
        let seq = replay(&logged, &mut history, &mut index, tables)?.unwrap_or(checkpointed);
        if replayed > 0 {
            meta.insert(META_SEQ, seq.to_be_bytes().as_slice())?;
        }
        let mut events = Vec::new();
        for row in index.iter()? {
            let (_, value) = row?;
            match proto::Event::decode(value.value()) {
                Ok(e) => events.push(convert::from_proto(e, 0)),
                Err(error) => tracing::warn!(%error, "skipping undecodable index entry"),
            }
        }
        let mut actions = Actions {
            silences: read_silences(&meta, Some(&silences))?,
            ..Actions::default()
        };
        for row in acks.iter()? {
            let (_, value) = row?;
            actions.acks.extend(decode_ack(value.value()));
        }
        let recovered = Recovered {
            epoch,
            seq,
            events,
            actions,
            replay: Replay::new(replayed, &report),
        };
        (recovered, (wal, replayed, report))
    };
    txn.commit()?;
    let (mut wal, replayed, report) = wal;
    log_replay(replayed, &report, recovered.seq);
    // Everything the log held is now durable in redb.
    wal.clear();
    Ok((recovered, wal))
}

/// What a start on a database that cannot be written recovers: its index with the log's
/// changes applied in memory. The log is kept as it is (new records go after its own).
pub(super) fn recover_read_only(
    db: &Database,
    log_path: &Path,
) -> Result<(Recovered, wal::Wal), StoreError> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let epoch = meta
        .get(META_EPOCH)?
        .map(|v| String::from_utf8_lossy(v.value()).into_owned())
        .ok_or(StoreError::NoEpoch)?;
    let checkpointed = meta
        .get(META_SEQ)?
        .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0);
    let (wal, logged, report) = wal::Wal::open(log_path, checkpointed)?;
    let mut index = std::collections::HashMap::new();
    for row in txn.open_table(INDEX)?.iter()? {
        let (key, value) = row?;
        match proto::Event::decode(value.value()) {
            Ok(e) => {
                index.insert(key.value().to_vec(), convert::from_proto(e, 0));
            }
            Err(error) => tracing::warn!(%error, "skipping undecodable index entry"),
        }
    }
    // A database from before per-silence rows has no such table.
    let stored = read_silences(&meta, txn.open_table(SILENCES).ok().as_ref())?;
    let mut silences: std::collections::BTreeMap<u64, crate::action::Silence> =
        stored.into_iter().map(|s| (s.id, s)).collect();
    let mut acks = std::collections::BTreeMap::new();
    // A database from before acks existed has no such table.
    if let Ok(table) = txn.open_table(ACKS) {
        for row in table.iter()? {
            let (key, value) = row?;
            if let Some(ack) = decode_ack(value.value()) {
                acks.insert(key.value().to_vec(), ack);
            }
        }
    }
    for change in &logged {
        match change.kind() {
            StoredKind::State => {
                let event = change.event();
                if change.removed {
                    index.remove(&encode_key(&event));
                } else {
                    index.insert(encode_key(&event), event);
                }
            }
            StoredKind::Action(ActionRecord::Ack(ack)) => {
                let key = encode_key_parts(ack.host.as_deref(), ack.service.as_deref());
                acks.insert(key, ack);
            }
            StoredKind::Action(ActionRecord::Unack { host, service, .. }) => {
                acks.remove(&encode_key_parts(host.as_deref(), service.as_deref()));
            }
            StoredKind::Action(
                record @ (ActionRecord::Silence { .. } | ActionRecord::Silences { .. }),
            ) => record.apply_to_silences(&mut silences),
            StoredKind::Undecodable => {}
        }
    }
    let seq = logged.last().map_or(checkpointed, |change| change.seq);
    log_replay(logged.len(), &report, seq);
    let events = index.into_values().collect();
    let actions = Actions {
        acks: acks.into_values().collect(),
        silences: silences.into_values().collect(),
        ..Actions::default()
    };
    let recovered = Recovered {
        epoch,
        seq,
        events,
        actions,
        replay: Replay::new(logged.len(), &report),
    };
    Ok((recovered, wal))
}

fn log_replay(replayed: usize, report: &wal::ReadReport, seq: u64) {
    if report.skipped > 0 {
        tracing::error!(
            replayed,
            skipped = report.skipped,
            bytes_ignored = report.bytes_ignored,
            seq,
            "change log: corrupt records skipped (the acknowledged changes they held are lost); the valid records after them were replayed"
        );
    } else if replayed > 0 {
        tracing::info!(replayed, seq, "replayed changes from the change log");
    }
    if report.damaged_tail {
        tracing::warn!(
            replayed,
            seq,
            "change log: it ends with a whole record whose checksum fails: a write cut short by a crash (never acknowledged), or damage to the last acknowledged change (then lost)"
        );
    }
}

/// The tables operator-action records write: acks, silences, meta.
pub(super) type ActionTables<'a, 't> = (
    &'a mut redb::Table<'t, &'static [u8], &'static [u8]>,
    &'a mut redb::Table<'t, u64, &'static [u8]>,
    &'a mut redb::Table<'t, &'static str, &'static [u8]>,
);

/// Writes logged changes into history and the index: the `seq` of the last, if any.
pub(super) fn replay(
    logged: &[StoredChange],
    history: &mut redb::Table<u64, &[u8]>,
    index: &mut redb::Table<&[u8], &[u8]>,
    (acks, silences, meta): ActionTables<'_, '_>,
) -> Result<Option<u64>, StoreError> {
    let mut seq = None;
    for change in logged {
        history.insert(change.seq, change.encode_to_vec().as_slice())?;
        match change.kind() {
            StoredKind::State if change.removed => delete_event(index, &change.event())?,
            StoredKind::State => put_event(index, &change.event())?,
            StoredKind::Action(record) => apply_action(&record, acks, silences, meta)?,
            StoredKind::Undecodable => {}
        }
        seq = Some(change.seq);
    }
    Ok(seq)
}
