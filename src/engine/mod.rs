//! The one owner of the index.
//!
//! Transports hand batches over a bounded queue ([`EngineHandle`]); a single task applies them in
//! order to the [`state::Engine`] state machine, publishes the resulting changes, and only then
//! acknowledges the batch — so a Riemann `ok` means "applied". When the queue is full, senders
//! wait: that is the backpressure that makes a fast TCP client slow down instead of losing events.
//!
//! Snapshots are taken by this same task, together with the broadcast subscription, so a client's
//! live stream starts exactly after its snapshot's `seq`: no gap, no duplicate.

pub mod state;

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot};

pub use state::{Change, Snapshot, EXPIRED};

use crate::broadcast::{Published, Receiver, Sender};
use crate::event::{now_micros, Event};
use crate::metrics::Counters;

/// How many commands the engine takes per wake-up: amortises the channel cost under load
/// without letting one burst starve subscriptions for long.
const COMMANDS_PER_WAKE: usize = 256;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("server is shutting down")]
    Closed,
}

/// What a batch's acknowledgement carries.
pub type Ack = Result<(), EngineError>;

/// A snapshot and the live stream of changes that continues it.
pub struct Subscription {
    pub snapshot: Snapshot,
    pub changes: Receiver,
}

/// A snapshot and the live stream of every index update (not just changes) that continues it:
/// what Riemann's own `/index?subscribe=true` streams.
pub struct UpdatesSubscription {
    pub snapshot: Snapshot,
    pub updates: broadcast::Receiver<Arc<Event>>,
}

enum Command {
    Apply {
        events: Vec<Event>,
        ack: Option<oneshot::Sender<Ack>>,
    },
    Subscribe {
        reply: oneshot::Sender<Subscription>,
    },
    SubscribeUpdates {
        reply: oneshot::Sender<UpdatesSubscription>,
    },
    Snapshot {
        reply: oneshot::Sender<Snapshot>,
    },
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub init_state: String,
    /// TTL for events that carry none, in seconds.
    pub default_ttl_secs: f64,
    /// How often expired entries are looked for.
    pub reap_interval: std::time::Duration,
    /// Batches waiting for the engine before senders are made to wait.
    pub queue_capacity: usize,
    /// Changes buffered for the slowest dashboard before it must resynchronise.
    pub broadcast_capacity: usize,
}

/// Cheap, cloneable access to the engine task.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
}

impl EngineHandle {
    /// Queues a batch and returns the receiver of its acknowledgement. Waits while the queue is
    /// full (backpressure).
    pub async fn submit(&self, events: Vec<Event>) -> Result<oneshot::Receiver<Ack>, EngineError> {
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Command::Apply {
                events,
                ack: Some(ack),
            })
            .await
            .map_err(|_| EngineError::Closed)?;
        Ok(rx)
    }

    /// Queues a batch nobody waits on (UDP has no reply).
    pub async fn submit_unacknowledged(&self, events: Vec<Event>) -> Result<(), EngineError> {
        self.tx
            .send(Command::Apply { events, ack: None })
            .await
            .map_err(|_| EngineError::Closed)
    }

    /// Applies a batch and waits until it is applied.
    pub async fn apply(&self, events: Vec<Event>) -> Ack {
        self.submit(events)
            .await?
            .await
            .unwrap_or(Err(EngineError::Closed))
    }

    /// A snapshot and the changes after it.
    pub async fn subscribe(&self) -> Result<Subscription, EngineError> {
        self.request(|reply| Command::Subscribe { reply }).await
    }

    /// A snapshot and every index update after it.
    pub async fn subscribe_updates(&self) -> Result<UpdatesSubscription, EngineError> {
        self.request(|reply| Command::SubscribeUpdates { reply })
            .await
    }

    /// Every indexed event, as of now.
    pub async fn snapshot(&self) -> Result<Snapshot, EngineError> {
        self.request(|reply| Command::Snapshot { reply }).await
    }

    /// Queues a snapshot request behind everything already queued (so it sees those batches
    /// applied) and returns where the snapshot will arrive.
    pub async fn request_snapshot(&self) -> Result<oneshot::Receiver<Snapshot>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Snapshot { reply })
            .await
            .map_err(|_| EngineError::Closed)?;
        Ok(rx)
    }

    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(command(reply))
            .await
            .map_err(|_| EngineError::Closed)?;
        rx.await.map_err(|_| EngineError::Closed)
    }
}

/// Starts the engine task. It runs until every [`EngineHandle`] is dropped, after applying
/// everything already queued — so shutdown answers what is in flight.
pub fn spawn(
    config: EngineConfig,
    counters: Arc<Counters>,
) -> (EngineHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
    let (changes_tx, _) = broadcast::channel(config.broadcast_capacity.max(1));
    let (updates_tx, _) = broadcast::channel(config.broadcast_capacity.max(1));
    let engine = state::Engine::new(config.init_state, config.default_ttl_secs);
    let owner = Owner {
        engine,
        changes_tx,
        updates_tx,
        counters,
        changes: Vec::new(),
        indexed: Vec::new(),
    };
    let task = tokio::spawn(owner.run(rx, config.reap_interval));
    (EngineHandle { tx }, task)
}

/// The task's state: the state machine plus where its output goes.
struct Owner {
    engine: state::Engine,
    changes_tx: Sender,
    updates_tx: broadcast::Sender<Arc<Event>>,
    counters: Arc<Counters>,
    /// Scratch buffers, reused across batches.
    changes: Vec<Change>,
    indexed: Vec<Arc<Event>>,
}

impl Owner {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>, reap_interval: std::time::Duration) {
        let mut commands = Vec::with_capacity(COMMANDS_PER_WAKE);
        let mut reap =
            tokio::time::interval(reap_interval.max(std::time::Duration::from_millis(10)));
        reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = rx.recv_many(&mut commands, COMMANDS_PER_WAKE) => {
                    if received == 0 {
                        break;
                    }
                    for command in commands.drain(..) {
                        self.handle(command);
                    }
                }
                _ = reap.tick() => self.expire(now_micros()),
            }
        }
        tracing::debug!(
            keys = self.engine.len(),
            seq = self.engine.seq(),
            "engine stopped"
        );
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Apply { events, ack } => {
                Counters::add(&self.counters.events, events.len() as u64);
                // Only collect index updates when someone watches them.
                let watch_updates = self.updates_tx.receiver_count() > 0;
                self.engine.apply(
                    events,
                    &mut self.changes,
                    watch_updates.then_some(&mut self.indexed),
                );
                for event in self.indexed.drain(..) {
                    let _ = self.updates_tx.send(event);
                }
                self.publish_changes();
                if let Some(ack) = ack {
                    // The sender may have gone (client disconnected): nothing to tell.
                    let _ = ack.send(Ok(()));
                }
            }
            Command::Subscribe { reply } => {
                let _ = reply.send(Subscription {
                    changes: self.changes_tx.subscribe(),
                    snapshot: self.engine.snapshot(),
                });
            }
            Command::SubscribeUpdates { reply } => {
                let _ = reply.send(UpdatesSubscription {
                    updates: self.updates_tx.subscribe(),
                    snapshot: self.engine.snapshot(),
                });
            }
            Command::Snapshot { reply } => {
                let _ = reply.send(self.engine.snapshot());
            }
        }
    }

    fn expire(&mut self, now: i64) {
        if self.engine.expire(now, &mut self.changes) == 0 {
            return;
        }
        if self.updates_tx.receiver_count() > 0 {
            for change in &self.changes {
                let _ = self.updates_tx.send(Arc::clone(&change.event));
            }
        }
        self.publish_changes();
    }

    fn publish_changes(&mut self) {
        Counters::add(&self.counters.changes, self.changes.len() as u64);
        for change in self.changes.drain(..) {
            // No receivers is fine: nobody is watching.
            let _ = self.changes_tx.send(Published::new(change));
        }
    }
}
