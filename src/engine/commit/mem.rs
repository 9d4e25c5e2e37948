//! An in-memory [`Durable`] for tests: no disk, and the two things a test needs to see the
//! committer's stages apart — log writes that wait until the test lets them through
//! ([`MemStore::hold_logs`]), and log writes that fail as on a full disk
//! ([`MemStore::set_failing`]).

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::Durable;
use crate::store::{Encoded, Retention, StoreError, WriteStep};

/// The longest a held log write waits for [`MemStore::release_logs`].
const MAX_HOLD: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub(crate) struct MemStore {
    state: Mutex<State>,
    /// Wakes a held log write when the test releases it.
    released: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Changes per successful log write that had any, in order.
    logged: Vec<usize>,
    /// Log writes waiting while held (at most the committer's one thread).
    waiting: usize,
    held: bool,
    /// Log writes fail while set.
    failing: bool,
    /// The `seq` of the last write.
    written_seq: Option<u64>,
    log_bytes: u64,
}

impl MemStore {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// From now on, log writes wait until [`MemStore::release_logs`].
    pub(crate) fn hold_logs(&self) {
        self.state().held = true;
    }

    /// Lets held log writes (and later ones) through.
    pub(crate) fn release_logs(&self) {
        self.state().held = false;
        self.released.notify_all();
    }

    /// Makes log writes fail (as on a full disk) until called with `false`.
    pub(crate) fn set_failing(&self, failing: bool) {
        self.state().failing = failing;
    }

    /// Changes per successful log write, in order.
    pub(crate) fn logged(&self) -> Vec<usize> {
        self.state().logged.clone()
    }

    /// Whether a log write is waiting to be released (the committer reached the disk).
    pub(crate) fn log_waiting(&self) -> bool {
        self.state().waiting > 0
    }

    /// The `seq` of the last write where readers see it.
    pub(crate) fn written_seq(&self) -> Option<u64> {
        self.state().written_seq
    }
}

impl Durable for MemStore {
    fn opened_stale(&self) -> bool {
        false
    }

    fn reopen(&self) -> Result<usize, StoreError> {
        Ok(0)
    }

    fn log(&self, parts: &[&Encoded]) -> Result<(), StoreError> {
        let mut state = self.state();
        state.waiting += 1;
        // Bounded: a test that fails while holding must not leave the committer thread (and
        // with it the test's runtime, which waits for it) blocked for good.
        let deadline = Instant::now() + MAX_HOLD;
        while state.held {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .released
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.waiting -= 1;
        if state.failing {
            return Err(StoreError::Injected);
        }
        let changes: usize = parts.iter().map(|encoded| encoded.len()).sum();
        // Reads and flushes pass through with nothing to write, as on the real log.
        if changes > 0 {
            state.logged.push(changes);
            state.log_bytes += changes as u64;
        }
        Ok(())
    }

    fn write(&self, _steps: &[WriteStep], seq: u64) -> Result<(), StoreError> {
        self.state().written_seq = Some(seq);
        Ok(())
    }

    fn prune(&self, _: Retention, _: i64, _: usize) -> Result<usize, StoreError> {
        Ok(0)
    }

    fn checkpoint(&self) -> Result<(), StoreError> {
        self.state().log_bytes = 0;
        Ok(())
    }

    fn close(&self) -> Result<(), StoreError> {
        self.checkpoint()
    }

    fn log_bytes(&self) -> u64 {
        self.state().log_bytes
    }
}
