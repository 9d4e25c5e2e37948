//! Why a store operation failed. The underlying I/O or redb error is kept as the source; every
//! message starts with `store: ` and names the file when there is one.
//!
//! Why each message also spells out its source: it reaches operators and clients through its
//! `Display` alone (a log line's `%error`, the refusal a sender is answered with, the one line
//! a failed start prints), so the cause must be in it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb refused an operation (after an I/O error, such as a full disk, it refuses every
    /// later one until the database is reopened).
    #[error("store: {0}")]
    Database(#[source] redb::Error),
    #[error("store: cannot create {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing a file of the store (the change log).
    #[error("store: {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The change log is full because checkpoints fail: appends wait for one.
    #[error("store: {}: the change log holds {len} bytes since the last checkpoint (limit {limit}); waiting for a checkpoint", path.display())]
    LogFull { path: PathBuf, len: u64, limit: u64 },
    /// A missing or empty database beside a change log of an earlier run (see
    /// [`super::Store::open_with`]).
    #[error("store: {} is missing or empty but {} holds changes of an earlier run: starting would begin a new, empty history and index. Restore the database file, or pass --allow-fresh-database to start anew (replaying what the log still holds)", db.display(), log.display())]
    EarlierLog { db: PathBuf, log: PathBuf },
    /// A change log that lost what it held beside a database not stopped cleanly (see
    /// [`super::Store::open_with`]).
    #[error("store: {} {problem}, but {} was not stopped cleanly: any change acknowledged after its last checkpoint (seq {seq}) was only in that log and would be lost. Restore the log, or pass --allow-data-loss to start from what is left", log.display(), db.display())]
    LogLost {
        log: PathBuf,
        db: PathBuf,
        problem: String,
        seq: u64,
    },
    /// Opening failed, and so did the fallback `step` tried after it.
    #[error("{first} (then, {step}: {source})")]
    FallbackFailed {
        first: Box<StoreError>,
        step: &'static str,
        #[source]
        source: Box<StoreError>,
    },
    /// A thread panicked holding the lock named (`database`, `change log`).
    #[error("store: {0} lock poisoned")]
    Poisoned(&'static str),
    #[error("store: the database is being reopened after an error")]
    Reopening,
    #[error("store: the database holds no epoch yet")]
    NoEpoch,
    /// A test made the change log fail, as a full disk would.
    #[error("store: injected failure: no space left on device")]
    Injected,
}

impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(e: E) -> Self {
        StoreError::Database(e.into())
    }
}

impl StoreError {
    pub(super) fn fallback(first: StoreError, step: &'static str, source: StoreError) -> Self {
        StoreError::FallbackFailed {
            first: Box::new(first),
            step,
            source: Box::new(source),
        }
    }
}
