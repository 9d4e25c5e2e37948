//! What leaves the engine, in the engine's order, and the last step every output takes: changes
//! published, acknowledgements released, reads answered. With a store the committer (`commit`)
//! runs that step after the commit; without one the engine runs it inline.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::{Ack, Subscription};
use crate::broadcast::{MetricsSender, Sender};
use crate::change::{Change, ChangeKind, MetricBatch, Snapshot};
use crate::event::Event;
use crate::metrics::Counters;

/// One thing the engine produced, to be let out in order.
pub(crate) enum Output {
    /// Changes applied from one batch (or one expiry sweep), and the acknowledgements of the
    /// messages that caused them.
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
    /// Index updates that were not changes (and keys that left the index without one), written
    /// once a second, followed by a history prune and a checkpoint.
    Flush {
        dirty: Vec<Arc<Event>>,
        forgotten: Vec<Arc<Event>>,
        seq: u64,
    },
    /// Answered once history holds every change before it.
    Sync { reply: oneshot::Sender<()> },
    /// One interval's live values: let out behind the changes applied before them, so that a
    /// dashboard never gets a change older than values it already has.
    Metrics(Arc<MetricBatch>),
}

/// Delivers each output: publishes changes, releases acknowledgements and answers reads — the
/// last step of every output, after the commit (or inline, without a store). Not the cluster's
/// publisher (which puts inputs into the stream): this one lets the engine's outputs out.
pub(crate) struct Deliverer {
    pub changes_tx: Sender,
    /// Live values, one batch per `--metrics-interval` (see [`MetricBatch`]).
    pub metrics_tx: MetricsSender,
    pub counters: Arc<Counters>,
}

impl Deliverer {
    /// `result` is the outcome of the commit that covered this output.
    pub(crate) fn deliver(&self, output: Output, result: &Ack) {
        match output {
            Output::Group { changes, acks, .. } => {
                // Operator-action records are not state changes.
                let count = changes
                    .iter()
                    .filter(|c| match c.kind {
                        ChangeKind::State(_) => true,
                        ChangeKind::Action(_) => false,
                    })
                    .count();
                Counters::add(&self.counters.changes, count as u64);
                for change in changes {
                    // No receivers is fine: nobody is watching.
                    self.changes_tx.send(change);
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
            Output::Sync { reply } => {
                let _ = reply.send(());
            }
            Output::Metrics(batch) => {
                // No receivers is fine: nobody is watching.
                let _ = self.metrics_tx.send(batch);
            }
            Output::Flush { .. } => {}
        }
    }

    /// The snapshot and the changes after it: made exactly after the changes the snapshot
    /// contains were published.
    pub(crate) fn subscribe(&self, snapshot: Snapshot) -> Subscription {
        Subscription {
            changes: self.changes_tx.subscribe(),
            metrics: self.metrics_tx.subscribe(),
            snapshot,
        }
    }
}
