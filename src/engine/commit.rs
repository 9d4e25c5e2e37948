//! What leaves the engine, in the engine's order: groups of changes to make durable, publish and
//! acknowledge, and reads to answer once everything before them is out.
//!
//! Why a stage of its own: a durable commit costs an fsync (≈0.1 ms on a fast disk, milliseconds
//! on a slow one). If the engine waited for it, every connection would wait with it — also the
//! ones whose messages changed nothing, which is nearly all of them under a normal load. So with
//! a store, the engine hands each group here and goes on applying; the *committer* thread writes
//! every group that queued up while the previous fsync ran in one transaction (the group commit
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

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Ack, EngineError, Subscription};
use crate::broadcast::{Published, Sender};
use crate::engine::state::{Change, Snapshot};
use crate::event::{now_micros, Event};
use crate::metrics::Counters;
use crate::store::{Encoded, Retention, Store};

/// Outputs the committer takes into one transaction at most: bounds a commit's size and the
/// time the first of them waits for the last.
const OUTPUTS_PER_COMMIT: usize = 1024;
/// History rows deleted per flush at most, so pruning never holds up commits for long.
const PRUNE_BUDGET: usize = 10_000;
/// The change log is checkpointed with every flush (each second) and also once it holds this
/// much: bounds its size on disk and the replay after a crash.
const CHECKPOINT_LOG_BYTES: u64 = 16 * 1024 * 1024;

/// One thing the engine produced, to be let out in order.
pub(super) enum Output {
    /// Changes applied in one engine wake-up, and the acknowledgements of the messages that
    /// caused them.
    Group {
        changes: Vec<Change>,
        acks: Vec<oneshot::Sender<Ack>>,
        /// The engine's `seq` after this group: what a restart continues from.
        seq: u64,
    },
    Subscribe {
        snapshot: Snapshot,
        reply: oneshot::Sender<Subscription>,
    },
    Snapshot {
        snapshot: Snapshot,
        reply: oneshot::Sender<Snapshot>,
    },
    /// Index updates that were not changes, written once a second, followed by a history prune.
    Flush { dirty: Vec<Arc<Event>>, seq: u64 },
}

/// Publishes changes, releases acknowledgements and answers reads: the last step of every output,
/// after the commit (or inline, without a store).
pub(super) struct Publisher {
    pub changes_tx: Sender,
    pub counters: Arc<Counters>,
}

impl Publisher {
    /// `result` is the outcome of the commit that covered this output.
    pub(super) fn deliver(&self, output: Output, result: &Ack) {
        match output {
            Output::Group { changes, acks, .. } => {
                Counters::add(&self.counters.changes, changes.len() as u64);
                for change in changes {
                    // No receivers is fine: nobody is watching.
                    let _ = self.changes_tx.send(Published::new(change));
                }
                for ack in acks {
                    // The sender may have gone (client disconnected): nothing to tell.
                    let _ = ack.send(result.clone());
                }
            }
            Output::Subscribe { snapshot, reply } => {
                let _ = reply.send(self.subscribe(snapshot));
            }
            Output::Snapshot { snapshot, reply } => {
                let _ = reply.send(snapshot);
            }
            Output::Flush { .. } => {}
        }
    }

    /// The snapshot and the changes after it: made exactly after the changes the snapshot
    /// contains were published.
    fn subscribe(&self, snapshot: Snapshot) -> Subscription {
        Subscription {
            changes: self.changes_tx.subscribe(),
            snapshot,
        }
    }
}

/// The engine's side of the committer.
pub(super) struct Committer {
    tx: mpsc::Sender<Output>,
    thread: tokio::task::JoinHandle<()>,
}

impl Committer {
    /// Starts the committer thread. `capacity` bounds the outputs waiting for it: when the disk
    /// falls that far behind, the engine waits, and so (through the engine's queue) do senders.
    pub(super) fn spawn(
        store: Arc<Store>,
        retention: Retention,
        publisher: Publisher,
        capacity: usize,
    ) -> Committer {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        // A blocking thread: redb's commit is a synchronous fsync.
        let thread = tokio::task::spawn_blocking(move || run(&store, retention, &publisher, rx));
        Committer { tx, thread }
    }

    /// Queues an output; waits while the committer is `capacity` outputs behind.
    pub(super) async fn send(&self, output: Output, publisher_fallback: &Publisher) {
        if let Err(mpsc::error::SendError(output)) = self.tx.send(output).await {
            // The thread is gone (it panicked): nothing can be stored any more. Say so to
            // everyone waiting rather than leaving them hanging.
            let error = Err(EngineError::Storage("the committer stopped".into()));
            publisher_fallback.deliver(output, &error);
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

fn run(store: &Store, retention: Retention, publisher: &Publisher, mut rx: mpsc::Receiver<Output>) {
    let mut pending = Vec::with_capacity(OUTPUTS_PER_COMMIT);
    let mut subscribed = Vec::new();
    // Set once redb refused a write: the change log then holds changes redb lacks, so it must not
    // be checkpointed away. A restart replays it.
    let mut log_pinned = false;
    while let Some(first) = rx.blocking_recv() {
        pending.push(first);
        while pending.len() < OUTPUTS_PER_COMMIT {
            match rx.try_recv() {
                Ok(output) => pending.push(output),
                Err(_) => break,
            }
        }
        let (seq, flushed) = summarize(&pending);
        let dirty: Vec<Arc<Event>> = pending
            .iter_mut()
            .flat_map(|output| match output {
                Output::Flush { dirty, .. } => std::mem::take(dirty),
                _ => Vec::new(),
            })
            .collect();
        // Durable first: the changes go to the log, and only then are they let out.
        let encoded = Encoded::new(
            pending.iter().flat_map(|output| match output {
                Output::Group { changes, .. } => changes.as_slice(),
                _ => &[],
            }),
            now_micros(),
        );
        let logged = store.log(&encoded).map_err(|error| {
            tracing::error!(%error, "could not log changes; replying with an error");
            EngineError::Storage(error.to_string())
        });
        // Let out in order. A subscription is made at its place in that order (so its stream
        // starts exactly after its snapshot) but handed over only after the redb write below, so
        // that a resuming client finds every change up to its snapshot in history.
        for output in pending.drain(..) {
            match output {
                Output::Subscribe { snapshot, reply } => {
                    subscribed.push((publisher.subscribe(snapshot), reply));
                }
                other => publisher.deliver(other, &logged),
            }
        }
        if let (Some(seq), Ok(())) = (seq, &logged) {
            if let Err(error) = store.write(&encoded, &dirty, seq) {
                tracing::error!(%error, "could not write to the store; keeping the change log until a restart");
                log_pinned = true;
            }
        }
        for (subscription, reply) in subscribed.drain(..) {
            let _ = reply.send(subscription);
        }
        if flushed {
            match store.prune(retention, now_micros(), PRUNE_BUDGET) {
                Ok(0) => {}
                Ok(removed) => tracing::debug!(removed, "pruned history"),
                Err(error) => tracing::error!(%error, "could not prune history"),
            }
        }
        if !log_pinned && (flushed || store.log_bytes() > CHECKPOINT_LOG_BYTES) {
            if let Err(error) = store.checkpoint() {
                // The log keeps everything meanwhile; the next checkpoint tries again.
                tracing::error!(%error, "could not checkpoint the store");
            }
        }
    }
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
