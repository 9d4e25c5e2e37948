//! Durable index and transition history, in an embedded redb database.
//!
//! Why redb: pure Rust (no C toolchain or system library), one file, ACID transactions, and
//! concurrent readers alongside the single writer — which is exactly the engine's shape: one
//! owner writes, HTTP handlers read history.
//!
//! The engine's committer calls [`Store::commit`] once for all the changes that queued up while
//! the previous commit ran (group commit) *before* it publishes them or acknowledges the messages
//! that caused them. That commit appends the changes to a write-ahead log and `fdatasync`s it
//! ([`wal`]), then writes them into redb without an fsync; [`Store::checkpoint`] (every second,
//! or when the log grows large) makes redb durable and empties the log. So an acknowledged change
//! is on disk, and a published `seq` is never handed out twice, even across `kill -9` or a power
//! cut. Index updates that are not changes are written by the periodic flush just before the
//! checkpoint, so a crash can lose at most that second of metric/description updates — never a
//! state.

mod wal;

/// The change log's record format, for the fuzz target and the tests of its reader.
pub use wal::{encode_record as encode_log_record, parse_records as parse_log, ReadReport};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use prost::Message;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::change::Change;
use crate::event::convert;
use crate::event::Event;
use crate::proto;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Encoded index key → encoded event.
const INDEX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("index");
/// seq → encoded [`StoredChange`].
const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");

/// Page cache of the database file (redb's default is 1 GiB). The hot set is small — the index
/// (≈ a few hundred bytes per key) and the end of history being appended — and history reads
/// are rare and sequential (the OS page cache serves them), so a small cache keeps the server's
/// memory flat while history grows on disk.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

const META_EPOCH: &str = "epoch";
const META_SEQ: &str = "seq";

#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(String);

impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(e: E) -> Self {
        StoreError(e.into().to_string())
    }
}

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
}

impl StoredChange {
    pub fn event(&self) -> Event {
        convert::from_proto(self.event.clone().unwrap_or_default(), 0)
    }

    pub fn previous(&self) -> Option<Event> {
        self.previous.clone().map(|p| convert::from_proto(p, 0))
    }

    /// Back to the engine's form, to be filtered and framed like a live change.
    pub fn into_change(self) -> Change {
        Change {
            seq: self.seq,
            event: std::sync::Arc::new(self.event()),
            previous: self.previous().map(std::sync::Arc::new),
            previous_state: self.previous_state,
            removed: self.removed,
        }
    }
}

/// Changes encoded once, for the change log and for history.
#[derive(Default)]
pub struct Encoded {
    records: Vec<Record>,
}

/// One encoded change.
struct Record {
    seq: u64,
    /// What the index gets for the key: this event, or (when `removed`) no row.
    event: std::sync::Arc<Event>,
    removed: bool,
    /// The encoded [`StoredChange`].
    bytes: Vec<u8>,
}

impl Encoded {
    pub fn new<'a>(changes: impl IntoIterator<Item = &'a Change>, now_micros: i64) -> Self {
        // One scratch buffer for the nested events of all the changes.
        let mut scratch = Vec::new();
        let records = changes
            .into_iter()
            .map(|change| Record {
                seq: change.seq,
                event: std::sync::Arc::clone(&change.event),
                removed: change.removed,
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

    /// Moves `other`'s changes after these.
    pub fn append(&mut self, mut other: Encoded) {
        self.records.append(&mut other.records);
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

/// What a restart recovers.
pub struct Recovered {
    pub epoch: String,
    pub seq: u64,
    pub events: Vec<Event>,
}

/// Bounds on history.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_changes: u64,
    pub max_age_micros: i64,
}

pub struct Store {
    /// `None` while a database that failed is being reopened (see [`Store::reopen`]).
    db: RwLock<Option<Arc<Database>>>,
    db_path: PathBuf,
    /// Only the committer thread appends; the lock is never contended, it just lets readers share
    /// the `Store`.
    wal: Mutex<wal::Wal>,
    /// See [`Store::opened_stale`].
    opened_stale: bool,
    /// Log writes to fail on purpose (tests of what the committer does then).
    injected_log_failures: std::sync::atomic::AtomicUsize,
}

/// The change log beside the database.
const WAL_FILE: &str = "changes.log";
/// The database file.
const DB_FILE: &str = "statecast.redb";

fn open_database(path: &Path) -> Result<Database, StoreError> {
    // redb caches up to 1 GiB of pages by default; bound it like every other buffer.
    Ok(Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)?)
}

impl Store {
    /// Opens (or creates) the database under `dir`, recovering the index, the last `seq` and the
    /// epoch. A fresh directory gets a fresh epoch: clients holding an old one must reset.
    /// Refuses a missing or empty database beside a change log that held records (see
    /// [`Store::open_allowing_fresh`]).
    pub fn open(dir: &Path) -> Result<(Store, Recovered), StoreError> {
        Store::open_allowing_fresh(dir, false)
    }

    /// [`Store::open`]; with `allow_fresh`, a missing or empty database beside a change log
    /// from an earlier run is started anew (`--allow-fresh-database`): what the log still holds
    /// is replayed into it, everything else the old database held is gone.
    ///
    /// Why refuse by default: an empty database file (a failed copy or restore, a full disk at
    /// the wrong moment) would otherwise silently become a fresh, empty history; the log beside
    /// it is the evidence that there was data, and the operator should decide.
    pub fn open_allowing_fresh(
        dir: &Path,
        allow_fresh: bool,
    ) -> Result<(Store, Recovered), StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        let db_path = dir.join(DB_FILE);
        let log_path = dir.join(WAL_FILE);
        let db_is_new = std::fs::metadata(&db_path).map_or(true, |m| m.len() == 0);
        // Evidence of an earlier run beside a new database.
        let earlier_log = db_is_new
            && wal::Wal::holds_any_record(&log_path)
                .map_err(|e| StoreError(format!("{}: {e}", log_path.display())))?;
        if earlier_log && !allow_fresh {
            return Err(StoreError(format!(
                "{} is missing or empty but {} holds changes of an earlier run: starting would begin a new, empty history and index. Restore the database file, or pass --allow-fresh-database to start anew (replaying what the log still holds)",
                db_path.display(),
                log_path.display()
            )));
        }
        if earlier_log {
            tracing::warn!(db = %db_path.display(), "--allow-fresh-database: starting a new database beside an earlier change log; replaying what the log holds");
        }
        let db = open_database(&db_path)?;
        let (db, recovered, wal, stale) = match recover(&db, &log_path) {
            Ok((recovered, mut wal)) => {
                if earlier_log {
                    // Replayed and durable: the old records must not outlive their numbering.
                    wal.erase()?;
                }
                (db, recovered, wal, false)
            }
            Err(error) => {
                // Typically a full disk: start from what can be read, keep the log as it is
                // (it holds what the database lacks) and write it into the database once
                // storage works again, like after any database failure.
                drop(db);
                let db = open_database(&db_path)
                    .map_err(|e| StoreError(format!("{error} (then, reopening: {e})")))?;
                let (recovered, wal) = recover_read_only(&db, &log_path)
                    .map_err(|e| StoreError(format!("{error} (then, reading: {e})")))?;
                tracing::error!(%error, "cannot write the database (disk full?): started from the database and the change log as they are; they are written into the database once that works again (retried)");
                (db, recovered, wal, true)
            }
        };
        let store = Store {
            db: RwLock::new(Some(Arc::new(db))),
            db_path,
            wal: Mutex::new(wal),
            opened_stale: stale,
            injected_log_failures: Default::default(),
        };
        Ok((store, recovered))
    }

    /// Whether the database could not be written at open: it lacks what the change log holds,
    /// and is to be [`Store::reopen`]ed before anything else is written to it.
    pub fn opened_stale(&self) -> bool {
        self.opened_stale
    }

    /// The database, unless it is closed for a [`Store::reopen`].
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .map_err(|_| StoreError("database lock poisoned".into()))?
            .clone()
            .ok_or_else(|| StoreError("the database is being reopened after an error".into()))
    }

    /// Closes the database and opens it again, then writes into it the logged changes it lacks.
    ///
    /// Why: after an I/O error (a full disk) redb refuses every later transaction ("previous I/O
    /// error"), even once space is back. Reopened, it is at its last durable commit (the last
    /// checkpoint); the change log holds every change since, so nothing acknowledged is missing.
    /// Index updates that were not changes, written since that checkpoint, are lost (the next
    /// update of each key brings it back). Fails (to be retried) while readers still hold the
    /// old handle or the disk is still full.
    pub fn reopen(&self) -> Result<usize, StoreError> {
        // The same lock order as `checkpoint`: the log, then the database.
        let wal = self
            .wal
            .lock()
            .map_err(|_| StoreError("change log lock poisoned".into()))?;
        let mut slot = self
            .db
            .write()
            .map_err(|_| StoreError("database lock poisoned".into()))?;
        slot.take();
        let db = open_database(&self.db_path)?;
        let txn = db.begin_write()?;
        let replayed = {
            let mut meta = txn.open_table(META)?;
            let checkpointed = meta
                .get(META_SEQ)?
                .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes))
                .unwrap_or(0);
            let (logged, _) = wal.read_back(checkpointed)?;
            let mut history = txn.open_table(HISTORY)?;
            let mut index = txn.open_table(INDEX)?;
            if let Some(seq) = replay(&logged, &mut history, &mut index)? {
                meta.insert(META_SEQ, seq.to_be_bytes().as_slice())?;
            }
            logged.len()
        };
        txn.commit()?;
        *slot = Some(Arc::new(db));
        Ok(replayed)
    }

    /// [`Store::log`] then [`Store::write`]: durable when this returns. (The committer runs the
    /// two steps apart; tests use them together.)
    #[cfg(test)]
    pub fn commit<'a>(
        &self,
        changes: impl IntoIterator<Item = &'a Change>,
        dirty: impl IntoIterator<Item = &'a std::sync::Arc<Event>>,
        seq: u64,
        now_micros: i64,
    ) -> Result<(), StoreError> {
        let encoded = Encoded::new(changes, now_micros);
        self.log([&encoded])?;
        let updates = WriteStep::Updates {
            forgotten: Vec::new(),
            updated: dirty.into_iter().cloned().collect(),
        };
        self.write(&[WriteStep::Changes(encoded), updates], seq)
    }

    /// Makes the next `count` [`Store::log`] calls fail, as a full disk would.
    #[cfg(test)]
    pub fn fail_next_logs(&self, count: usize) {
        self.injected_log_failures
            .store(count, std::sync::atomic::Ordering::Relaxed);
    }

    /// Appends the changes to the change log, in one write: they are durable when this returns.
    pub fn log<'a>(&self, parts: impl IntoIterator<Item = &'a Encoded>) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        if self.injected_log_failures.load(Ordering::Relaxed) > 0 {
            self.injected_log_failures.fetch_sub(1, Ordering::Relaxed);
            return Err(StoreError(
                "injected failure: no space left on device".into(),
            ));
        }
        self.wal
            .lock()
            .map_err(|_| StoreError("change log lock poisoned".into()))?
            .append(
                parts
                    .into_iter()
                    .flat_map(|encoded| encoded.records.iter())
                    .map(|record| record.bytes.as_slice()),
            )
    }

    /// One redb transaction, without an fsync: each step in order (changes into history and
    /// their events into the index; updated events into the index), and the last `seq`. Visible
    /// to readers when this returns; durable at the next [`Store::checkpoint`]. Changes must have
    /// been [`Store::log`]ged first.
    pub fn write(&self, steps: &[WriteStep], seq: u64) -> Result<(), StoreError> {
        let mut txn = self.db()?.begin_write()?;
        txn.set_durability(Durability::None)
            .map_err(|e| StoreError(e.to_string()))?;
        {
            let mut history = txn.open_table(HISTORY)?;
            let mut index = txn.open_table(INDEX)?;
            for step in steps {
                match step {
                    WriteStep::Changes(encoded) => {
                        for record in &encoded.records {
                            history.insert(record.seq, record.bytes.as_slice())?;
                            if record.removed {
                                delete_event(&mut index, &record.event)?;
                            } else {
                                put_event(&mut index, &record.event)?;
                            }
                        }
                    }
                    WriteStep::Updates { forgotten, updated } => {
                        for event in forgotten {
                            delete_event(&mut index, event)?;
                        }
                        for event in updated {
                            put_event(&mut index, event)?;
                        }
                    }
                }
            }
            let mut meta = txn.open_table(META)?;
            meta.insert(META_SEQ, seq.to_be_bytes().as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Makes everything committed so far durable in redb, then empties the change log.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let mut wal = self
            .wal
            .lock()
            .map_err(|_| StoreError("change log lock poisoned".into()))?;
        let mut txn = self.db()?.begin_write()?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| StoreError(e.to_string()))?;
        txn.commit()?;
        wal.clear();
        Ok(())
    }

    /// Bytes in the change log since the last checkpoint.
    pub fn log_bytes(&self) -> u64 {
        self.wal.lock().map_or(0, |wal| wal.len())
    }

    /// Changes with `seq > since`, oldest first, at most `limit`, that `keep` accepts.
    pub fn history(
        &self,
        since: u64,
        limit: usize,
        mut keep: impl FnMut(&StoredChange) -> bool,
    ) -> Result<Vec<StoredChange>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(HISTORY)?;
        let mut out = Vec::new();
        for row in table.range(since.saturating_add(1)..)? {
            if out.len() >= limit {
                break;
            }
            let (_, value) = row?;
            let Ok(change) = StoredChange::decode(value.value()) else {
                continue;
            };
            if keep(&change) {
                out.push(change);
            }
        }
        Ok(out)
    }

    /// The oldest retained `seq`, if any history is kept.
    pub fn oldest_seq(&self) -> Result<Option<u64>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(HISTORY)?;
        let oldest = table.first()?.map(|(k, _)| k.value());
        Ok(oldest)
    }

    /// Deletes history beyond the retention bounds, at most `budget` rows per call so the engine
    /// is never held up for long. Returns how many rows went.
    pub fn prune(
        &self,
        retention: Retention,
        now_micros: i64,
        budget: usize,
    ) -> Result<usize, StoreError> {
        let mut txn = self.db()?.begin_write()?;
        // Durable with the next checkpoint; losing a prune to a crash only means redoing it.
        txn.set_durability(Durability::None)
            .map_err(|e| StoreError(e.to_string()))?;
        let mut removed = 0;
        {
            let mut history = txn.open_table(HISTORY)?;
            let last = history.last()?.map(|(k, _)| k.value()).unwrap_or(0);
            let min_seq_by_count = last.saturating_sub(retention.max_changes);
            while removed < budget {
                let Some((seq, recorded_at)) = history.first()?.map(|(k, v)| {
                    let at = StoredChange::decode(v.value()).map_or(0, |c| c.recorded_at);
                    (k.value(), at)
                }) else {
                    break;
                };
                let too_many = seq <= min_seq_by_count;
                let too_old = now_micros.saturating_sub(recorded_at) > retention.max_age_micros;
                if !(too_many || too_old) {
                    break;
                }
                history.remove(seq)?;
                removed += 1;
            }
        }
        txn.commit()?;
        Ok(removed)
    }
}

/// Replays into the database what only the change log holds, makes it durable and reads the
/// index back: what a start recovers. The log is started over.
fn recover(db: &Database, log_path: &Path) -> Result<(Recovered, wal::Wal), StoreError> {
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
        let mut history = txn.open_table(HISTORY)?;
        let mut index = txn.open_table(INDEX)?;
        let replayed = logged.len();
        let seq = replay(&logged, &mut history, &mut index)?.unwrap_or(checkpointed);
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
        (Recovered { epoch, seq, events }, (wal, replayed, report))
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
fn recover_read_only(db: &Database, log_path: &Path) -> Result<(Recovered, wal::Wal), StoreError> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let epoch = meta
        .get(META_EPOCH)?
        .map(|v| String::from_utf8_lossy(v.value()).into_owned())
        .ok_or_else(|| StoreError("the database holds no epoch yet".into()))?;
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
    for change in &logged {
        let event = change.event();
        if change.removed {
            index.remove(&encode_key(&event));
        } else {
            index.insert(encode_key(&event), event);
        }
    }
    let seq = logged.last().map_or(checkpointed, |change| change.seq);
    log_replay(logged.len(), &report, seq);
    let events = index.into_values().collect();
    Ok((Recovered { epoch, seq, events }, wal))
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

/// Writes logged changes into history and the index: the `seq` of the last, if any.
fn replay(
    logged: &[StoredChange],
    history: &mut redb::Table<u64, &[u8]>,
    index: &mut redb::Table<&[u8], &[u8]>,
) -> Result<Option<u64>, StoreError> {
    let mut seq = None;
    for change in logged {
        history.insert(change.seq, change.encode_to_vec().as_slice())?;
        if change.removed {
            delete_event(index, &change.event())?;
        } else {
            put_event(index, &change.event())?;
        }
        seq = Some(change.seq);
    }
    Ok(seq)
}

fn put_event(index: &mut redb::Table<&[u8], &[u8]>, event: &Event) -> Result<(), StoreError> {
    let key = encode_key(event);
    let mut value = Vec::with_capacity(128);
    convert::encode_event(event, &mut value);
    index.insert(key.as_slice(), value.as_slice())?;
    Ok(())
}

fn delete_event(index: &mut redb::Table<&[u8], &[u8]>, event: &Event) -> Result<(), StoreError> {
    index.remove(encode_key(event).as_slice())?;
    Ok(())
}

/// A change encoded as a [`StoredChange`], straight from the engine's events (building the
/// `StoredChange` first would clone every string of both events).
/// `scratch` holds each nested event while its length is learned, reused between calls.
fn encode_change(change: &Change, recorded_at: i64, scratch: &mut Vec<u8>) -> Vec<u8> {
    use prost::encoding::{encode_key, encode_varint, int64, string, uint64, WireType};
    let mut buf = Vec::with_capacity(256);
    // Scalars at their default are left out, as prost does for these (non-optional) fields.
    if change.seq != 0 {
        uint64::encode(1, &change.seq, &mut buf);
    }
    if !change.previous_state.is_empty() {
        string::encode(2, &change.previous_state, &mut buf);
    }
    for (tag, event) in [(3, Some(&*change.event)), (4, change.previous.as_deref())] {
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
    if change.removed {
        prost::encoding::bool::encode(6, &change.removed, &mut buf);
    }
    buf
}

/// (host, service) as bytes: a presence byte and a length prefix per part, so `(None, "a")`,
/// `(Some(""), "a")` and `("a", None)` never collide.
fn encode_key(event: &Event) -> Vec<u8> {
    let mut key = Vec::new();
    for part in [&event.host, &event.service] {
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

/// An epoch only has to differ from every earlier one of this data directory: the creation
/// time in nanoseconds, mixed with the process id and std's random hasher seed.
pub fn new_epoch() -> String {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    format!("{:x}-{:016x}", nanos / 1_000_000_000, h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn tmp() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("statecast-store-{}", new_epoch()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn change(seq: u64, host: &str, state: &str) -> Change {
        Change {
            seq,
            previous_state: "ok".into(),
            event: Arc::new(Event {
                host: Some(host.into()),
                state: Some(state.into()),
                time_micros: 5,
                ..Default::default()
            }),
            previous: None,
            removed: false,
        }
    }

    fn removal(seq: u64, host: &str) -> Change {
        Change {
            previous_state: "expired".into(),
            removed: true,
            ..change(seq, host, "expired")
        }
    }

    #[test]
    fn a_change_is_encoded_as_prost_encodes_its_stored_change() {
        let mut with_previous = change(7, "db", "critical");
        with_previous.previous = Some(Arc::new(Event {
            host: Some("db".into()),
            service: Some("disk".into()),
            state: Some("ok".into()),
            description: Some("é".repeat(100)),
            metric: Some(crate::event::Metric::Float(0.5)),
            tags: vec!["a".into(), String::new()],
            attributes: vec![("k".into(), "v".into())],
            ttl: Some(30.0),
            time_micros: -1_500_000,
        }));
        let mut defaults = change(0, "x", "warning");
        defaults.previous_state = String::new();
        let cases = [
            (with_previous, 1_700_000_000_000_000),
            (defaults, 0),
            (removal(9, "gone"), 5),
        ];
        for (c, recorded_at) in cases {
            let expected = StoredChange {
                seq: c.seq,
                previous_state: c.previous_state.clone(),
                event: Some(convert::to_proto(&c.event)),
                previous: c.previous.as_deref().map(convert::to_proto),
                recorded_at,
                removed: c.removed,
            };
            let mut scratch = b"left over".to_vec();
            let encoded = encode_change(&c, recorded_at, &mut scratch);
            assert_eq!(encoded, expected.encode_to_vec());
        }
    }

    /// Removed keys leave the stored index, whether redb got the removal (a write), only the log
    /// has it (replayed on open), or the key left without a change (a flush).
    #[test]
    fn removed_and_forgotten_keys_leave_the_stored_index() {
        let dir = tmp();
        let hosts = |rec: &Recovered| {
            let mut hosts: Vec<String> = rec
                .events
                .iter()
                .map(|e| e.host.clone().unwrap_or_default())
                .collect();
            hosts.sort();
            hosts
        };
        {
            let (store, _) = Store::open(&dir).unwrap();
            let stateless = Arc::new(Event {
                host: Some("quiet".into()),
                ..Default::default()
            });
            let changes = [change(1, "a", "critical"), change(2, "b", "critical")];
            store.commit(&changes, &[stateless], 2, 1_000).unwrap();
            // a is removed through redb, b only in the log; quiet leaves without a change.
            let through_redb = Encoded::new(&[removal(3, "a")], 2_000);
            store.log([&through_redb]).unwrap();
            let flushed = WriteStep::Updates {
                forgotten: vec![Arc::new(Event {
                    host: Some("quiet".into()),
                    ..Default::default()
                })],
                updated: Vec::new(),
            };
            store
                .write(&[WriteStep::Changes(through_redb), flushed], 3)
                .unwrap();
            store.checkpoint().unwrap();
            let only_logged = Encoded::new(&[removal(4, "b")], 3_000);
            store.log([&only_logged]).unwrap();
        }
        let (store, rec) = Store::open(&dir).unwrap();
        assert_eq!(rec.seq, 4);
        assert!(hosts(&rec).is_empty(), "left: {:?}", hosts(&rec));
        let history = store.history(0, 10, |_| true).unwrap();
        let removed: Vec<(u64, bool)> = history.iter().map(|c| (c.seq, c.removed)).collect();
        assert_eq!(removed, vec![(1, false), (2, false), (3, true), (4, true)]);
        assert!(history[3].clone().into_change().removed);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn commit_recover_history_and_prune() {
        let dir = tmp();
        let epoch = {
            let (store, rec) = Store::open(&dir).unwrap();
            assert_eq!((rec.seq, rec.events.len()), (0, 0));
            let changes: Vec<Change> = (1..=5)
                .map(|i| change(i, &format!("h{i}"), "critical"))
                .collect();
            let dirty = vec![Arc::new(Event {
                host: Some("quiet".into()),
                ..Default::default()
            })];
            store.commit(&changes, &dirty, 5, 1_000).unwrap();
            let got = store.history(2, 10, |_| true).unwrap();
            assert_eq!(got.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
            assert_eq!(got[0].event().host.as_deref(), Some("h3"));
            assert_eq!(store.history(0, 2, |_| true).unwrap().len(), 2);
            rec.epoch
        };
        let (store, rec) = Store::open(&dir).unwrap();
        assert_eq!(rec.epoch, epoch, "same directory, same epoch");
        assert_eq!(rec.seq, 5);
        assert_eq!(rec.events.len(), 6);
        let retention = Retention {
            max_changes: 2,
            max_age_micros: i64::MAX,
        };
        assert_eq!(store.prune(retention, 2_000, 100).unwrap(), 3);
        assert_eq!(store.oldest_seq().unwrap(), Some(4));
        let by_age = Retention {
            max_changes: 100,
            max_age_micros: 10,
        };
        assert_eq!(
            store.prune(by_age, 2_000, 1).unwrap(),
            1,
            "budget respected"
        );
        drop(store);
        let other = tmp();
        let (_, fresh) = Store::open(&other).unwrap();
        assert_ne!(fresh.epoch, epoch, "fresh directory, new epoch");
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&other);
    }

    #[test]
    fn changes_only_in_the_log_are_replayed_on_open() {
        let dir = tmp();
        {
            let (store, _) = Store::open(&dir).unwrap();
            store
                .commit(&[change(1, "a", "critical")], &[], 1, 1_000)
                .unwrap();
            store.checkpoint().unwrap();
            // Logged (acknowledged) but the process dies before redb has it.
            let encoded = Encoded::new(&[change(2, "b", "critical"), change(3, "a", "ok")], 2_000);
            store.log([&encoded]).unwrap();
        }
        let (store, rec) = Store::open(&dir).unwrap();
        assert_eq!(rec.seq, 3);
        let mut states: Vec<(String, String)> = rec
            .events
            .iter()
            .map(|e| (e.host.clone().unwrap(), e.state.clone().unwrap()))
            .collect();
        states.sort();
        assert_eq!(
            states,
            vec![("a".into(), "ok".into()), ("b".into(), "critical".into())]
        );
        let seqs: Vec<u64> = store
            .history(0, 10, |_| true)
            .unwrap()
            .iter()
            .map(|c| c.seq)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        drop(store);
        // Replayed once: a second open finds the same, from redb alone.
        let (_, again) = Store::open(&dir).unwrap();
        assert_eq!((again.seq, again.events.len()), (3, 2));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keys_do_not_collide() {
        let k = |h: Option<&str>, s: Option<&str>| {
            encode_key(&Event {
                host: h.map(Into::into),
                service: s.map(Into::into),
                ..Default::default()
            })
        };
        assert_ne!(k(None, Some("a")), k(Some(""), Some("a")));
        assert_ne!(k(Some("a"), None), k(None, Some("a")));
        assert_ne!(k(Some("ab"), Some("c")), k(Some("a"), Some("bc")));
    }

    #[test]
    fn an_empty_database_beside_a_log_is_refused_unless_allowed() {
        let dir = tmp();
        {
            let (store, _) = Store::open(&dir).unwrap();
            store
                .commit(&[change(1, "a", "critical")], &[], 1, 1_000)
                .unwrap();
        }
        std::fs::File::create(dir.join(DB_FILE)).unwrap();
        let error = Store::open(&dir).err().expect("refused").to_string();
        assert!(error.contains("--allow-fresh-database"), "{error}");
        assert_eq!(std::fs::metadata(dir.join(DB_FILE)).unwrap().len(), 0);
        let (store, rec) = Store::open_allowing_fresh(&dir, true).unwrap();
        assert_eq!((rec.seq, rec.events.len()), (1, 1), "the log is replayed");
        assert!(
            !wal::Wal::holds_any_record(&dir.join(WAL_FILE)).unwrap(),
            "the old log is erased once replayed"
        );
        drop(store);
        let (_, again) = Store::open(&dir).unwrap();
        assert_eq!(again.seq, 1, "a plain restart now works");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reopen_writes_what_only_the_log_holds() {
        let dir = tmp();
        let (store, _) = Store::open(&dir).unwrap();
        store
            .commit(&[change(1, "a", "critical")], &[], 1, 1_000)
            .unwrap();
        store.checkpoint().unwrap();
        // Logged (acknowledged), then the database fails before it gets the change.
        let encoded = Encoded::new(&[change(2, "b", "critical")], 2_000);
        store.log([&encoded]).unwrap();
        assert_eq!(store.reopen().unwrap(), 1);
        let seqs: Vec<u64> = store
            .history(0, 10, |_| true)
            .unwrap()
            .iter()
            .map(|c| c.seq)
            .collect();
        assert_eq!(seqs, vec![1, 2]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
