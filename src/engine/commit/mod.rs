//! The committer: makes what leaves the engine ([`super::output::Output`], in the engine's order)
//! durable before it is let out — groups of changes to store, publish and acknowledge, and reads
//! to answer once everything before them is out.
//!
//! Why a stage of its own: a durable commit costs an fsync (≈0.1 ms on a fast disk, milliseconds
//! on a slow one). If the engine waited for it, every connection would wait with it — also the
//! ones whose messages changed nothing, which is nearly all of them under a normal load. So with
//! a store, the engine hands each group here and goes on applying; the *committer* thread writes
//! every group that queued up while the previous fsync ran in one log write (the group commit
//! widens exactly when the disk is the bottleneck), then publishes their changes and releases
//! their acknowledgements. A message that changed nothing is acknowledged by the engine at once:
//! only changes are promised to be durable before their `ok` (non-changes are flushed each second).
//!
//! Reads (snapshots, subscriptions) are taken by the engine and passed through the same queue, so
//! one is answered only after every change it contains is on disk and published: a subscriber's
//! live stream still starts exactly after its snapshot's `seq`, and a query never sees a change
//! that could still be lost.
//!
//! Without a store there is nothing to wait for and the engine delivers each output inline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

mod durable;
#[cfg(test)]
pub(crate) mod mem;

pub(crate) use durable::Durable;

use super::output::{Deliverer, Output};
use super::EngineError;
use crate::event::now_micros;
use crate::store::{Encoded, Retention, StoreError, WriteStep};

/// Outputs the committer takes into one log write at most: bounds a write's size and the time
/// the first of them waits for the last.
const OUTPUTS_PER_COMMIT: usize = 1024;
/// History rows deleted per flush at most, so pruning never holds up commits for long.
const PRUNE_BUDGET: usize = 10_000;
/// The change log is checkpointed with every flush (each second) and also once it holds this
/// much: bounds its size on disk and the replay after a crash.
const CHECKPOINT_LOG_BYTES: u64 = 16 * 1024 * 1024;

/// Whether storage is failing: set by the committer when a log write fails, cleared once a retry
/// of it succeeded; read by the engine, which refuses new batches meanwhile.
///
/// Why the engine must know: it applies a batch before the committer makes its changes durable.
/// If it went on applying while the log cannot be written, in-memory state (and every `seq` it
/// hands out) would run ahead of what is stored, with nothing to publish it against. Refusing
/// before applying keeps what is held back to the few groups already in flight.
#[derive(Default)]
pub(super) struct StorageHealth {
    failing: AtomicBool,
    error: Mutex<String>,
}

impl StorageHealth {
    /// The storage error, while storage is failing.
    pub(super) fn failure(&self) -> Option<String> {
        if !self.failing.load(Ordering::Acquire) {
            return None;
        }
        Some(self.error.lock().map(|e| e.clone()).unwrap_or_default())
    }

    fn fail(&self, error: String) {
        if let Ok(mut slot) = self.error.lock() {
            *slot = error;
        }
        self.failing.store(true, Ordering::Release);
    }

    fn recovered(&self) {
        self.failing.store(false, Ordering::Release);
    }
}

/// The engine's side of the committer.
pub(super) struct Committer {
    tx: mpsc::Sender<Output>,
    thread: tokio::task::JoinHandle<()>,
    pub(super) health: Arc<StorageHealth>,
}

impl Committer {
    /// Starts the committer thread. `capacity` bounds the outputs waiting for it: when the disk
    /// falls that far behind, the engine waits, and so (through the engine's queue) do senders.
    pub(super) fn spawn(
        store: Arc<dyn Durable>,
        retention: Retention,
        deliverer: Deliverer,
        capacity: usize,
    ) -> Committer {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let health = Arc::new(StorageHealth::default());
        let shared = Arc::clone(&health);
        // A blocking thread: the log write waits for the disk (O_DSYNC), and redb is synchronous.
        let thread = tokio::task::spawn_blocking(move || {
            let mut committing = Committing::new(&*store, retention, &deliverer, shared);
            committing.run(rx, capacity.max(1) * HELD_PER_QUEUED);
        });
        Committer { tx, thread, health }
    }

    /// Queues an output; waits while the committer is `capacity` outputs behind.
    pub(super) async fn send(&self, output: Output, deliverer_fallback: &Deliverer) {
        if let Err(mpsc::error::SendError(output)) = self.tx.send(output).await {
            // The thread is gone (it panicked): nothing can be stored any more. Say so to
            // everyone waiting rather than leaving them hanging.
            let error = Err(EngineError::Storage("the committer stopped".into()));
            deliverer_fallback.deliver(output, &error);
        }
    }

    /// Lets everything queued out, then stops.
    pub(super) async fn close(self) {
        drop(self.tx);
        if let Err(error) = self.thread.await {
            tracing::error!(%error, "committer thread failed");
        }
    }
}

/// How long changes may sit in the log only (durable, published) before they are written into
/// redb for history readers, when the committer is busy. Writing redb once per few milliseconds
/// instead of once per fsync saves most of its fixed per-transaction cost under load; readers
/// that need history to be complete (a resuming dashboard, `/api/history`) ask for a write first
/// ([`Output::Subscribe`], [`Output::Sync`]), and an idle committer writes at once.
const WRITE_DELAY: std::time::Duration = std::time::Duration::from_millis(5);
/// Changes that may wait for that write at most.
const WRITE_BATCH: usize = 10_000;
/// First and longest wait between retries of failing storage (doubling in between).
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// While storage fails, a warning says so this often (the first failure is an ERROR).
const STILL_FAILING_EVERY: Duration = Duration::from_secs(10);
/// Outputs held while storage fails, per slot of the committer's queue, before the committer
/// stops taking more (the engine then waits, and senders with it). The engine refuses new
/// batches while storage fails, so only reads and the groups already in flight arrive.
const HELD_PER_QUEUED: usize = 4;

/// The committer thread's state.
struct Committing<'a> {
    store: &'a dyn Durable,
    retention: Retention,
    deliverer: &'a Deliverer,
    health: Arc<StorageHealth>,
    /// Logged and published (or flushed), not yet in redb: in the engine's order.
    unwritten: Vec<WriteStep>,
    /// Changes in `unwritten`.
    unwritten_changes: usize,
    unwritten_seq: Option<u64>,
    unwritten_since: Option<Instant>,
    /// Outputs whose log write failed, and everything after them, in order: retried, then let
    /// out. Their senders were answered with an error at once.
    held: Vec<Output>,
    /// What `held` writes (its changes, encoded once, and its flushes' updates).
    held_steps: Vec<WriteStep>,
    /// Set once redb refused a write or a checkpoint: it is reopened before anything else is
    /// written to it, and until then the change log (which holds every change redb lacks) is
    /// not checkpointed away.
    db_failed: bool,
    /// When storage is retried next, and the wait after that.
    next_retry: Option<Instant>,
    retry_delay: Duration,
    last_warned: Option<Instant>,
}

impl<'a> Committing<'a> {
    fn new(
        store: &'a dyn Durable,
        retention: Retention,
        deliverer: &'a Deliverer,
        health: Arc<StorageHealth>,
    ) -> Self {
        // A store opened on a disk it could not write is reopened first, like a failed one.
        let db_failed = store.opened_stale();
        if db_failed {
            health.fail(
                "database unavailable: it could not be written at start (disk full?); retrying"
                    .into(),
            );
        }
        Committing {
            store,
            retention,
            deliverer,
            health,
            unwritten: Vec::new(),
            unwritten_changes: 0,
            unwritten_seq: None,
            unwritten_since: None,
            held: Vec::new(),
            held_steps: Vec::new(),
            db_failed,
            next_retry: db_failed.then(Instant::now),
            retry_delay: RETRY_FIRST,
            last_warned: None,
        }
    }

    fn run(&mut self, mut rx: mpsc::Receiver<Output>, max_held: usize) {
        let runtime = tokio::runtime::Handle::current();
        let mut pending = Vec::with_capacity(OUTPUTS_PER_COMMIT);
        loop {
            // Due retries first: a steady stream of outputs must not put them off.
            if self.next_retry.is_some_and(|at| Instant::now() >= at) {
                self.retry(&rx);
                continue;
            }
            let first = match self.next_retry {
                None => match rx.blocking_recv() {
                    Some(output) => output,
                    None => break,
                },
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    if self.held.len() >= max_held {
                        // Held enough: take nothing more until storage is back (the engine, and
                        // then senders, wait) — unless the engine is gone (shutdown).
                        if rx.is_closed() {
                            break;
                        }
                        std::thread::sleep(wait);
                        self.retry(&rx);
                        continue;
                    }
                    match runtime.block_on(tokio::time::timeout(wait, rx.recv())) {
                        Ok(Some(output)) => output,
                        Ok(None) => break,
                        Err(_) => {
                            self.retry(&rx);
                            continue;
                        }
                    }
                }
            };
            pending.push(first);
            while pending.len() < OUTPUTS_PER_COMMIT {
                match rx.try_recv() {
                    Ok(output) => pending.push(output),
                    Err(_) => break,
                }
            }
            self.cycle(&mut pending, &rx);
        }
        if self.next_retry.is_some() {
            // One last try at shutdown.
            self.retry(&rx);
        }
        if !self.held.is_empty() {
            let changes: usize = self
                .held
                .iter()
                .map(|output| match output {
                    Output::Group { changes, .. } => changes.len(),
                    _ => 0,
                })
                .sum();
            tracing::error!(
                changes,
                "stopping with changes that storage never took (their senders were told so)"
            );
        }
        self.write();
        // The last checkpoint marks a clean stop: the log holds nothing the database lacks.
        self.checkpoint_marking(true);
    }

    /// One group commit: log everything pending, let it out in order, and write redb when due.
    fn cycle(&mut self, pending: &mut Vec<Output>, rx: &mpsc::Receiver<Output>) {
        let steps = write_steps(pending, now_micros());
        if let Some(error) = self.health.failure() {
            // Behind held outputs: held too, in order.
            self.hold(pending.drain(..), steps, &error);
            return;
        }
        // Durable first: the changes go to the log, and only then are they let out.
        if let Err(error) = self.log(&steps) {
            let error = error.to_string();
            tracing::error!(%error, "could not log changes: answering with an error, holding them and retrying; new batches are refused until a retry succeeds");
            self.health.fail(error.clone());
            self.last_warned = Some(Instant::now());
            self.schedule_retry();
            self.hold(pending.drain(..), steps, &error);
            return;
        }
        self.let_out(pending, steps, rx.is_empty());
    }

    /// Appends the changes among `steps` to the log (one synchronous write), timed for
    /// `statecast_commit_seconds`.
    fn log(&self, steps: &[WriteStep]) -> Result<(), StoreError> {
        let parts: Vec<&Encoded> = changes_in(steps).collect();
        if parts.iter().all(|encoded| encoded.is_empty()) {
            // Nothing to write (only reads or flushes): not a commit, not timed.
            return self.store.log(&parts);
        }
        let started = Instant::now();
        let logged = self.store.log(&parts);
        self.deliverer
            .counters
            .commit_seconds
            .observe(started.elapsed());
        logged
    }

    /// Keeps outputs whose changes could not be logged, answering their senders now.
    fn hold(&mut self, outputs: impl Iterator<Item = Output>, steps: Vec<WriteStep>, error: &str) {
        let refusal = Err(EngineError::Storage(format!(
            "storage unavailable: {error}; will retry"
        )));
        for mut output in outputs {
            match &mut output {
                Output::Group { acks, .. } => {
                    for ack in acks.drain(..) {
                        let _ = ack.send(refusal.clone());
                    }
                }
                // History readers get what is stored (nothing held is in it) without waiting
                // for the outage to end.
                Output::Sync { .. } => {
                    self.write();
                    self.deliverer.deliver(output, &Ok(()));
                    continue;
                }
                _ => {}
            }
            self.held.push(output);
        }
        self.held_steps.extend(steps);
    }

    /// Lets logged outputs out in order and writes redb when due.
    fn let_out(&mut self, outputs: &mut Vec<Output>, steps: Vec<WriteStep>, idle: bool) {
        let (seq, flushed) = summarize(outputs);
        // Let out in order. A subscription is made at its place in that order (so its stream
        // starts exactly after its snapshot) but handed over only once redb has every change
        // before it, so that a resuming client finds them all in history.
        let mut waiting_for_write = Vec::new();
        for output in outputs.drain(..) {
            match output {
                Output::Subscribe { snapshot, reply } => {
                    let subscription = self.deliverer.subscribe(snapshot);
                    waiting_for_write.push(Box::new(move || {
                        let _ = reply.send(subscription);
                    }) as Box<dyn FnOnce()>);
                }
                Output::Sync { reply } => waiting_for_write.push(Box::new(move || {
                    let _ = reply.send(());
                })),
                other => self.deliverer.deliver(other, &Ok(())),
            }
        }
        for step in steps {
            if let WriteStep::Changes(ref encoded) = step {
                self.unwritten_changes += encoded.len();
                self.unwritten_since.get_or_insert_with(Instant::now);
            }
            self.unwritten.push(step);
        }
        if seq.is_some() {
            self.unwritten_seq = seq;
        }
        let due = self
            .unwritten_since
            .is_some_and(|since| since.elapsed() >= WRITE_DELAY)
            || self.unwritten_changes >= WRITE_BATCH;
        // Idle: nothing arrived during the fsync, so the write costs nobody any waiting.
        if idle || due || flushed || !waiting_for_write.is_empty() {
            self.write();
        }
        for reply in waiting_for_write {
            reply();
        }
        if flushed && !self.db_failed {
            match self.store.prune(self.retention, now_micros(), PRUNE_BUDGET) {
                Ok(0) => {}
                Ok(removed) => tracing::debug!(removed, "pruned history"),
                Err(error) => self.database_failed("could not prune history", &error),
            }
        }
        if flushed || self.store.log_bytes() > CHECKPOINT_LOG_BYTES {
            self.write();
            self.checkpoint();
        }
    }

    /// Tries failing storage again: reopens a failed database, then logs what is held and lets
    /// it out. Until both succeed, tries again later.
    fn retry(&mut self, rx: &mpsc::Receiver<Output>) {
        self.next_retry = None;
        if self.db_failed {
            match self.store.reopen() {
                Ok(replayed) => {
                    tracing::info!(
                        replayed,
                        "database reopened after an error; the changes only the log held are written into it"
                    );
                    self.db_failed = false;
                }
                Err(error) => {
                    self.still_failing(&error.to_string());
                    return;
                }
            }
        }
        if !self.held.is_empty() {
            // Checkpoint first: the log starts over in the blocks it already has, so the held
            // changes need no new space on a disk that just came back (a log past its
            // preallocation grows the file). A failing checkpoint leaves the log as it is.
            if self.store.log_bytes() > 0 {
                self.write();
                self.checkpoint();
            }
            let held_steps = std::mem::take(&mut self.held_steps);
            let logged = self.log(&held_steps);
            self.held_steps = held_steps;
            if let Err(error) = logged {
                self.still_failing(&error.to_string());
                return;
            }
            let mut outputs = std::mem::take(&mut self.held);
            let steps = std::mem::take(&mut self.held_steps);
            let changes: usize = outputs
                .iter()
                .map(|output| match output {
                    Output::Group { changes, .. } => changes.len(),
                    _ => 0,
                })
                .sum();
            tracing::info!(
                changes,
                "storage is back: the held changes are stored and published; accepting batches again"
            );
            self.let_out(&mut outputs, steps, rx.is_empty());
        }
        if self.db_failed {
            // The write or checkpoint just made failed again: batches stay refused.
            return;
        }
        self.health.recovered();
        self.retry_delay = RETRY_FIRST;
        self.last_warned = None;
    }

    fn schedule_retry(&mut self) {
        if self.next_retry.is_none() {
            self.next_retry = Some(Instant::now() + self.retry_delay);
            self.retry_delay = (self.retry_delay * 2).min(RETRY_MAX);
        }
    }

    fn still_failing(&mut self, error: &str) {
        self.schedule_retry();
        if self.health.failure().is_some() {
            self.health.fail(error.to_owned());
        }
        if self
            .last_warned
            .is_none_or(|at| at.elapsed() >= STILL_FAILING_EVERY)
        {
            self.last_warned = Some(Instant::now());
            tracing::warn!(
                %error,
                held = self.held.len(),
                database_failed = self.db_failed,
                "storage still failing; retrying"
            );
        }
    }

    /// redb refused a write: it is reopened (retried), and until that has made the log's
    /// changes durable in it, new batches are refused like on a failing log.
    ///
    /// Why refuse although the log still works: everything taken meanwhile would go to the log
    /// only, which grows with the stream, while the reopen must write all of the log into the
    /// database at once. On a disk that filled up, a stream that goes on refills the space that
    /// comes back before the reopen can use it, and the outage never ends.
    fn database_failed(&mut self, what: &str, error: &StoreError) {
        if !self.db_failed {
            tracing::error!(%error, "{what}; the change log keeps every change, the database is reopened (retried until it works) and new batches are refused until then");
        }
        self.db_failed = true;
        self.health.fail(format!("database unavailable: {error}"));
        self.schedule_retry();
    }

    /// Writes what was logged since the last write into redb (no fsync): history readers see it.
    fn write(&mut self) {
        let Some(seq) = self.unwritten_seq.take() else {
            return;
        };
        let steps = std::mem::take(&mut self.unwritten);
        self.unwritten_changes = 0;
        self.unwritten_since = None;
        if self.db_failed {
            // The reopen writes the logged changes; index updates without a change wait for
            // the key's next update.
            return;
        }
        if let Err(error) = self.store.write(&steps, seq) {
            self.database_failed("could not write to the database", &error);
        }
    }

    /// Makes redb durable and starts the log over — unless redb missed a write.
    fn checkpoint(&mut self) {
        self.checkpoint_marking(false);
    }

    /// A checkpoint; with `clean`, the last one of a clean stop ([`Durable::close`]).
    fn checkpoint_marking(&mut self, clean: bool) {
        if self.db_failed {
            return;
        }
        let done = if clean {
            self.store.close()
        } else {
            self.store.checkpoint()
        };
        if let Err(error) = done {
            // The log keeps everything meanwhile.
            self.database_failed("could not checkpoint the database", &error);
        }
    }
}

/// The encoded changes among `steps`: what the log gets.
fn changes_in(steps: &[WriteStep]) -> impl Iterator<Item = &Encoded> {
    steps.iter().filter_map(|step| match step {
        WriteStep::Changes(encoded) => Some(encoded),
        WriteStep::Updates { .. } => None,
    })
}

/// What `outputs` give redb, in their order: the changes of each run of groups (one encoding,
/// shared with the log) and the index updates of each flush between them. The flushes' updates
/// are taken out of `outputs`.
fn write_steps(outputs: &mut [Output], recorded_at: i64) -> Vec<WriteStep> {
    fn changes_of(outputs: &[Output], recorded_at: i64, steps: &mut Vec<WriteStep>) {
        let encoded = Encoded::new(
            outputs.iter().flat_map(|output| match output {
                Output::Group { changes, .. } => changes.as_slice(),
                _ => &[],
            }),
            recorded_at,
        );
        if !encoded.is_empty() {
            steps.push(WriteStep::Changes(encoded));
        }
    }
    let mut steps = Vec::new();
    let mut run_start = 0;
    for at in 0..outputs.len() {
        if let Output::Flush {
            dirty, forgotten, ..
        } = &mut outputs[at]
        {
            let updates = WriteStep::Updates {
                forgotten: std::mem::take(forgotten),
                updated: std::mem::take(dirty),
            };
            changes_of(&outputs[run_start..at], recorded_at, &mut steps);
            steps.push(updates);
            run_start = at + 1;
        }
    }
    changes_of(&outputs[run_start..], recorded_at, &mut steps);
    steps
}

/// The `seq` the outputs bring the store to (if they write anything), and whether a flush is
/// among them.
fn summarize(outputs: &[Output]) -> (Option<u64>, bool) {
    let mut seq = None;
    let mut flushed = false;
    for output in outputs {
        match output {
            Output::Group {
                changes, seq: s, ..
            } if !changes.is_empty() => seq = Some(*s),
            Output::Flush { seq: s, .. } => {
                seq = Some(*s);
                flushed = true;
            }
            _ => {}
        }
    }
    (seq, flushed)
}

#[cfg(test)]
mod tests;
