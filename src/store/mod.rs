//! Durable index and transition history, in an embedded redb database.
//!
//! Why redb: pure Rust (no C toolchain or system library), one file, ACID transactions, and
//! concurrent readers alongside the single writer — which is exactly the engine's shape: one
//! owner writes, HTTP handlers read history.
//!
//! The engine's committer calls [`Store::log`] once for all the changes that queued up while
//! the previous log write ran (group commit) *before* it publishes them or acknowledges the
//! messages that caused them: one synchronous append to a write-ahead log ([`wal`]). It writes
//! them into redb without an fsync ([`Store::write`]) a few milliseconds later at most (at once
//! when it is idle or a history reader waits); [`Store::checkpoint`] (every second, or when the
//! log grows large) makes redb durable and empties the log. So an acknowledged change is on
//! disk, and a published `seq` is never handed out twice, even across `kill -9` or a power cut.
//! Index updates that are not changes are written by the periodic flush just before the
//! checkpoint, so a crash can lose at most that second of metric/description updates — never a
//! state. Operator-action records (acks, silences) travel the same way as changes: logged,
//! written into history, and applied to the `acks` table and the stored silence set as changes
//! are to the index.
//!
//! Layout: [`encoding`] (how changes and index rows are encoded), [`wal`] (the change log),
//! `recovery` (what a start reads back), [`error`]. The store knows events and changes only
//! ([`crate::event`], [`crate::change`]): never the engine that makes them.

mod encoding;
mod error;
mod recovery;
mod wal;

pub use encoding::{Encoded, StoredChange, WriteStep};
pub use error::StoreError;

/// The change log's record format, for the fuzz target and the tests of its reader.
pub use wal::{encode_record as encode_log_record, parse_records as parse_log};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use prost::Message;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

#[cfg(test)]
use crate::change::Change;
use crate::event::Event;
use encoding::{apply_action, delete_event, put_event};
use recovery::{recover, recover_read_only, replay};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Encoded index key → encoded event.
const INDEX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("index");
/// seq → encoded [`StoredChange`].
const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
/// Encoded index key → an operator's ack of it (JSON of `action::AckInfo`), written from the
/// action records like the index from changes.
const ACKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("acks");
/// Silence id → the silence (JSON of `action::Silence`), written from the silence records.
const SILENCES: TableDefinition<u64, &[u8]> = TableDefinition::new("silences");

/// Page cache of the database file (redb's default is 1 GiB). The hot set is small — the index
/// (≈ a few hundred bytes per key) and the end of history being appended — and history reads
/// are rare and sequential (the OS page cache serves them), so a small cache keeps the server's
/// memory flat while history grows on disk.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

const META_EPOCH: &str = "epoch";
const META_SEQ: &str = "seq";
/// The silence set as an earlier version kept it (JSON of `Vec<action::Silence>`, replaced by
/// each whole-set record): read while present, moved into [`SILENCES`] by the first delta.
const META_SILENCES: &str = "silences";

/// What a restart recovers.
pub struct Recovered {
    pub epoch: String,
    pub seq: u64,
    pub events: Vec<Event>,
    /// Acks and silences (the silenced keys are evaluated again by the engine).
    pub actions: crate::action::Actions,
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
/// Every file the store keeps in its directory.
pub const FILES: [&str; 2] = [DB_FILE, WAL_FILE];

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
    /// [`Store::open_allowing_fresh`]). The server always says which it wants; tests open so.
    #[cfg(test)]
    pub fn open(dir: &Path) -> Result<(Store, Recovered), StoreError> {
        Store::open_allowing_fresh(dir, false)
    }

    /// Opens (or creates) the database under `dir`; with `allow_fresh`, a missing or empty database beside a change log
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
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let db_path = dir.join(DB_FILE);
        let log_path = dir.join(WAL_FILE);
        let db_is_new = std::fs::metadata(&db_path).map_or(true, |m| m.len() == 0);
        // Evidence of an earlier run beside a new database.
        let earlier_log = db_is_new
            && wal::Wal::holds_any_record(&log_path).map_err(|source| StoreError::Io {
                path: log_path.clone(),
                source,
            })?;
        if earlier_log && !allow_fresh {
            return Err(StoreError::EarlierLog {
                db: db_path,
                log: log_path,
            });
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
                let db = match open_database(&db_path) {
                    Ok(db) => db,
                    Err(source) => return Err(StoreError::fallback(error, "reopening", source)),
                };
                let (recovered, wal) = match recover_read_only(&db, &log_path) {
                    Ok(read) => read,
                    Err(source) => return Err(StoreError::fallback(error, "reading", source)),
                };
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
            .map_err(|_| StoreError::Poisoned("database"))?
            .clone()
            .ok_or(StoreError::Reopening)
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
            .map_err(|_| StoreError::Poisoned("change log"))?;
        let mut slot = self
            .db
            .write()
            .map_err(|_| StoreError::Poisoned("database"))?;
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
            let mut acks = txn.open_table(ACKS)?;
            let mut silences = txn.open_table(SILENCES)?;
            let tables = (&mut acks, &mut silences, &mut meta);
            if let Some(seq) = replay(&logged, &mut history, &mut index, tables)? {
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
            return Err(StoreError::Injected);
        }
        self.wal
            .lock()
            .map_err(|_| StoreError::Poisoned("change log"))?
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
        txn.set_durability(Durability::None)?;
        {
            let mut history = txn.open_table(HISTORY)?;
            let mut index = txn.open_table(INDEX)?;
            let mut acks = txn.open_table(ACKS)?;
            let mut silences = txn.open_table(SILENCES)?;
            let mut meta = txn.open_table(META)?;
            for step in steps {
                match step {
                    WriteStep::Changes(encoded) => {
                        for record in &encoded.records {
                            history.insert(record.seq, record.bytes.as_slice())?;
                            if let Some(action) = &record.action {
                                apply_action(action, &mut acks, &mut silences, &mut meta)?;
                            } else if record.removed {
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
            .map_err(|_| StoreError::Poisoned("change log"))?;
        let mut txn = self.db()?.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        wal.clear();
        Ok(())
    }

    /// Bytes in the change log since the last checkpoint.
    pub fn log_bytes(&self) -> u64 {
        self.wal.lock().map_or(0, |wal| wal.len())
    }

    /// Changes with `seq > since`, oldest first, at most `limit`, that `keep` accepts.
    #[cfg(test)]
    pub fn history(
        &self,
        since: u64,
        limit: usize,
        keep: impl FnMut(&StoredChange) -> bool,
    ) -> Result<Vec<StoredChange>, StoreError> {
        self.history_within(since, limit, usize::MAX, keep)
    }

    /// [`Store::history`] that also stops once the kept records hold `max_bytes` (as stored):
    /// the record that reaches it is the last one read, so a read always makes progress.
    pub fn history_within(
        &self,
        since: u64,
        limit: usize,
        max_bytes: usize,
        mut keep: impl FnMut(&StoredChange) -> bool,
    ) -> Result<Vec<StoredChange>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(HISTORY)?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for row in table.range(since.saturating_add(1)..)? {
            if out.len() >= limit || bytes >= max_bytes {
                break;
            }
            let (_, value) = row?;
            let Ok(change) = StoredChange::decode(value.value()) else {
                continue;
            };
            if keep(&change) {
                bytes = bytes.saturating_add(value.value().len());
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
        txn.set_durability(Durability::None)?;
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
mod tests;
