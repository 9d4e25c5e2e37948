//! What the committer needs of durable storage, as a trait: the seam that lets the committer and
//! the engine's two-stage acknowledgements (applied, then committed) be tested without a disk.
//!
//! [`Store`] is the one implementation the server runs; tests use `mem::MemStore`, an
//! in-memory store whose log writes can be held or made to fail (compare raft-rs's `Storage`
//! trait and its `MemStorage`). The trait says nothing about how history is read: readers of
//! history use the [`Store`] directly, the committer only writes.

use crate::store::{Encoded, Retention, Store, StoreError, WriteStep};

/// The committer's view of storage; every call comes from the committer thread, in order.
pub(crate) trait Durable: Send + Sync + 'static {
    /// Whether the store was opened on a disk it could not write (it is reopened first).
    fn opened_stale(&self) -> bool;
    /// Reopens a database that failed; returns how many logged changes it wrote into it.
    fn reopen(&self) -> Result<usize, StoreError>;
    /// Appends the encoded changes to the change log in one write: durable when this returns.
    fn log(&self, parts: &[&Encoded]) -> Result<(), StoreError>;
    /// Writes logged changes and index updates where readers see them, up to `seq`.
    fn write(&self, steps: &[WriteStep], seq: u64) -> Result<(), StoreError>;
    /// Deletes history beyond `retention`, at most `budget` rows; how many went.
    fn prune(
        &self,
        retention: Retention,
        now_micros: i64,
        budget: usize,
    ) -> Result<usize, StoreError>;
    /// Makes everything written durable and starts the log over.
    fn checkpoint(&self) -> Result<(), StoreError>;
    /// The checkpoint of a clean stop.
    fn close(&self) -> Result<(), StoreError>;
    /// Bytes in the change log since the last checkpoint.
    fn log_bytes(&self) -> u64;
}

impl Durable for Store {
    fn opened_stale(&self) -> bool {
        Store::opened_stale(self)
    }

    fn reopen(&self) -> Result<usize, StoreError> {
        Store::reopen(self)
    }

    fn log(&self, parts: &[&Encoded]) -> Result<(), StoreError> {
        Store::log(self, parts.iter().copied())
    }

    fn write(&self, steps: &[WriteStep], seq: u64) -> Result<(), StoreError> {
        Store::write(self, steps, seq)
    }

    fn prune(
        &self,
        retention: Retention,
        now_micros: i64,
        budget: usize,
    ) -> Result<usize, StoreError> {
        Store::prune(self, retention, now_micros, budget)
    }

    fn checkpoint(&self) -> Result<(), StoreError> {
        Store::checkpoint(self)
    }

    fn close(&self) -> Result<(), StoreError> {
        Store::close(self)
    }

    fn log_bytes(&self) -> u64 {
        Store::log_bytes(self)
    }
}
