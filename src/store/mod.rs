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
//! `recovery` (what a start reads back), `log_check` (whether the log beside an existing
//! database can still hold what was acknowledged: a start refuses one that lost it), [`error`]. The store knows events and changes only
//! ([`crate::event`], [`crate::change`]): never the engine that makes them.

mod encoding;
mod error;
mod log_check;
mod recovery;
mod wal;

pub use encoding::{Encoded, StoredChange, StoredKind, WriteStep};
pub use error::StoreError;

/// The change log's record format, for the fuzz target and the tests of its reader.
pub use wal::{encode_record as encode_log_record, parse_records as parse_log};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use prost::Message;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

#[cfg(test)]
use crate::change::Change;
use crate::event::Event;
use encoding::{apply_action, delete_event, put_event, Effect};
use recovery::{recover, recover_read_only, replay};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Encoded index key → encoded event.
const INDEX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("index");
/// seq → encoded [`StoredChange`].
const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
/// Encoded index key → an operator's ack of it (JSON of `action::AckInfo`), written from the
/// action records like the index from changes.
const ACKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("acks");
/// Holes in history: the first `seq` of one → its last. A cluster node whose own history ended
/// before the snapshot it had to start from never had the changes between (see
/// [`Store::record_gap`]); readers are told instead of paging over them.
const GAPS: TableDefinition<u64, u64> = TableDefinition::new("gaps");
/// Holes kept; the oldest is forgotten beyond (each comes from one restart that had to skip).
const MAX_GAPS: u64 = 1024;
/// Silence id → the silence (JSON of `action::Silence`), written from the silence records.
const SILENCES: TableDefinition<u64, &[u8]> = TableDefinition::new("silences");

/// Page cache of the database file (redb's default is 1 GiB). The hot set is small — the index
/// (≈ a few hundred bytes per key) and the end of history being appended — and history reads
/// are rare and sequential (the OS page cache serves them), so a small cache keeps the server's
/// memory flat while history grows on disk.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

const META_EPOCH: &str = "epoch";
const META_SEQ: &str = "seq";
/// The change log file's length at the last checkpoint (see [`log_check`]).
const META_LOG_BYTES: &str = "log_bytes";
/// The `seq` at which the last stop was clean: its final checkpoint left nothing in the log the
/// database lacks. Removed by the next start that can write the database.
const META_CLEAN_STOP: &str = "clean_stop";
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
    /// What replaying the change log found (shown in `/metrics`).
    pub replay: Replay,
}

/// What a start found in the change log: how many changes it replayed, and what damage it met.
/// A clean stop leaves none; anything else is real damage (or, for the last record, a write cut
/// short by a crash), and is also logged.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replay {
    pub replayed: usize,
    /// Damaged stretches skipped, with valid records after them: acknowledged changes lost.
    pub skipped: usize,
    /// The last record was whole but damaged (see [`wal::ReadReport::damaged_tail`]).
    pub damaged_tail: bool,
}

impl Replay {
    fn new(replayed: usize, report: &wal::ReadReport) -> Replay {
        Replay {
            replayed,
            skipped: report.skipped,
            damaged_tail: report.damaged_tail,
        }
    }
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
    /// Refuses what [`Store::open_with`] refuses without consent. The server always says what it
    /// consents to; tests open so.
    #[cfg(test)]
    pub fn open(dir: &Path) -> Result<(Store, Recovered), StoreError> {
        Store::open_with(dir, Consent::default())
    }

    /// Opens (or creates) the database under `dir`. Refused unless the operator consents:
    ///
    /// - a missing or empty database beside a change log from an earlier run
    ///   (`--allow-fresh-database`: a new database, what the log still holds replayed into it,
    ///   everything else the old database held is gone). Why: an empty database file (a failed
    ///   copy or restore, a full disk at the wrong moment) would otherwise silently become a
    ///   fresh, empty history; the log beside it is the evidence that there was data.
    /// - a database not stopped cleanly beside a change log that is missing, empty, cut short
    ///   or not a change log ([`log_check`]; `--allow-data-loss`: what the log still holds is
    ///   replayed, the changes acknowledged since the database's last checkpoint that only the
    ///   lost part held are gone). Why: those changes were acknowledged, and starting without
    ///   them would lose them without a word.
    ///
    /// Either way the log is started anew once what it holds is durable in the database.
    pub fn open_with(dir: &Path, consent: Consent) -> Result<(Store, Recovered), StoreError> {
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
        if earlier_log && !consent.fresh_database {
            return Err(StoreError::EarlierLog {
                db: db_path,
                log: log_path,
            });
        }
        if earlier_log {
            tracing::warn!(db = %db_path.display(), "--allow-fresh-database: starting a new database beside an earlier change log; replaying what the log holds");
        }
        let db = open_database(&db_path)?;
        let log_lost = !db_is_new && check_log(&db, &db_path, &log_path, consent.data_loss)?;
        let (db, recovered, wal, stale) = match recover(&db, &log_path) {
            Ok((recovered, mut wal)) => {
                if earlier_log || log_lost {
                    // Replayed and durable: the old records must not outlive their numbering,
                    // nor a damaged start be found again by the next start.
                    wal.erase()?;
                    record_log_bytes(&db, &wal)?;
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

    /// Closes the database and opens it again, then writes into it the logged changes it lacks,
    /// durably, and starts the log over (a checkpoint).
    ///
    /// Why: after an I/O error (a full disk) redb refuses every later transaction ("previous I/O
    /// error"), even once space is back. Reopened, it is at its last durable commit (the last
    /// checkpoint); the change log holds every change since, so nothing acknowledged is missing.
    /// Index updates that were not changes, written since that checkpoint, are lost (the next
    /// update of each key brings it back). Fails (to be retried) while readers still hold the
    /// old handle or the disk is still full.
    pub fn reopen(&self) -> Result<usize, StoreError> {
        // The same lock order as `checkpoint`: the log, then the database.
        let mut wal = self
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
            // From a start that could not write it: this run may have logged more.
            meta.remove(META_CLEAN_STOP)?;
            logged.len()
        };
        // Durable (redb's default): everything the log holds is in the database now. Without
        // starting the log over, its records would sit before the next ones, already below
        // the database's `seq`, until the next checkpoint.
        txn.commit()?;
        wal.clear();
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
                            match &record.effect {
                                Effect::Put(event) => put_event(&mut index, event)?,
                                Effect::Delete(event) => delete_event(&mut index, event)?,
                                Effect::Action(action) => {
                                    apply_action(action, &mut acks, &mut silences, &mut meta)?
                                }
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
        self.checkpoint_marking(false)
    }

    /// The last checkpoint of a clean stop: marks the database stopped cleanly at its `seq`, so
    /// that the next start knows the log held nothing beyond it (see [`log_check`]).
    pub fn close(&self) -> Result<(), StoreError> {
        self.checkpoint_marking(true)
    }

    fn checkpoint_marking(&self, clean: bool) -> Result<(), StoreError> {
        let mut wal = self
            .wal
            .lock()
            .map_err(|_| StoreError::Poisoned("change log"))?;
        let mut txn = self.db()?.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut meta = txn.open_table(META)?;
            // Written only when it changed (the log grew): most checkpoints write nothing but
            // redb's own commit, which matters on a disk with no room left.
            let recorded = meta.get(META_LOG_BYTES)?.map(|v| v.value().to_vec());
            if let Some(len) = wal.file_len() {
                if recorded.as_deref() != Some(len.to_be_bytes().as_slice()) {
                    meta.insert(META_LOG_BYTES, len.to_be_bytes().as_slice())?;
                }
            }
            let seq = meta.get(META_SEQ)?.map(|v| v.value().to_vec());
            if let (true, Some(seq)) = (clean, seq) {
                meta.insert(META_CLEAN_STOP, seq.as_slice())?;
            }
        }
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

    /// The oldest `seq` from which history is whole up to now, if any history is kept: the
    /// oldest retained one, or the first after the newest hole.
    pub fn oldest_seq(&self) -> Result<Option<u64>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(HISTORY)?;
        let oldest = table.first()?.map(|(k, _)| k.value());
        let after_gap = match txn.open_table(GAPS) {
            Ok(gaps) => gaps.last()?.map(|(_, to)| to.value().saturating_add(1)),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(error) => return Err(error.into()),
        };
        Ok(oldest.max(after_gap))
    }

    /// Records that history lacks the changes `from..=to` for good, durably. Called before the
    /// engine writes anything after them.
    pub fn record_gap(&self, from: u64, to: u64) -> Result<(), StoreError> {
        let txn = self.db()?.begin_write()?;
        {
            let mut gaps = txn.open_table(GAPS)?;
            gaps.insert(from, to)?;
            while gaps.len()? > MAX_GAPS {
                gaps.pop_first()?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The first hole in history after `since` (`from..=to`, `to > since`), if there is one.
    pub fn gap_after(&self, since: u64) -> Result<Option<(u64, u64)>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let gaps = match txn.open_table(GAPS) {
            Ok(gaps) => gaps,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        for row in gaps.iter()? {
            let (from, to) = row?;
            if to.value() > since {
                return Ok(Some((from.value(), to.value())));
            }
        }
        Ok(None)
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

/// What the operator consented to at start (see [`Store::open_with`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct Consent {
    /// `--allow-fresh-database`
    pub fresh_database: bool,
    /// `--allow-data-loss`
    pub data_loss: bool,
}

/// Checks the change log beside an existing database ([`log_check`]): whether it lost what it
/// held (then it is to be started anew once what is left of it is replayed). Refused unless
/// nothing acknowledged can be missing (a clean stop) or `allow_loss`.
fn check_log(
    db: &Database,
    db_path: &Path,
    log_path: &Path,
    allow_loss: bool,
) -> Result<bool, StoreError> {
    let expected = log_check::Expected::read(db)?;
    let problem = log_check::check(log_path, &expected).map_err(|source| StoreError::Io {
        path: log_path.to_owned(),
        source,
    })?;
    let Some(problem) = problem else {
        return Ok(false);
    };
    let (log, seq) = (log_path.display(), expected.seq);
    if expected.clean {
        tracing::warn!(%log, seq, "the change log {problem}, but the database was stopped cleanly at seq {seq}: no acknowledged change is missing; the log starts anew");
    } else if allow_loss {
        tracing::warn!(%log, seq, "--allow-data-loss: the change log {problem}; changes acknowledged after seq {seq} (the database's last checkpoint) that only the lost part held are gone; starting from what is left");
    } else {
        return Err(StoreError::LogLost {
            log: log_path.to_owned(),
            db: db_path.to_owned(),
            problem: problem.to_string(),
            seq,
        });
    }
    Ok(true)
}

/// Records the log file's length durably (after the log was started anew, which may make it
/// shorter than the length the last checkpoint recorded).
fn record_log_bytes(db: &Database, wal: &wal::Wal) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    if let Some(len) = wal.file_len() {
        txn.open_table(META)?
            .insert(META_LOG_BYTES, len.to_be_bytes().as_slice())?;
    }
    txn.commit()?;
    Ok(())
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
