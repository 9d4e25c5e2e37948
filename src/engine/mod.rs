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

pub use state::{Change, Snapshot};

use crate::broadcast::{Published, Receiver, Sender};
use crate::event::Event;
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

/// A snapshot and the live stream that continues it.
pub struct Subscription {
    pub snapshot: Snapshot,
    pub changes: Receiver,
}

enum Command {
    Apply {
        events: Vec<Event>,
        ack: Option<oneshot::Sender<Ack>>,
    },
    Subscribe {
        reply: oneshot::Sender<Subscription>,
    },
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub init_state: String,
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
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Subscribe { reply })
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
    let engine = state::Engine::new(config.init_state);
    let task = tokio::spawn(run(engine, rx, changes_tx, counters));
    (EngineHandle { tx }, task)
}

async fn run(
    mut engine: state::Engine,
    mut rx: mpsc::Receiver<Command>,
    changes_tx: Sender,
    counters: Arc<Counters>,
) {
    let mut commands = Vec::with_capacity(COMMANDS_PER_WAKE);
    let mut changes = Vec::new();
    while rx.recv_many(&mut commands, COMMANDS_PER_WAKE).await > 0 {
        for command in commands.drain(..) {
            match command {
                Command::Apply { events, ack } => {
                    Counters::add(&counters.events, events.len() as u64);
                    engine.apply(events, &mut changes);
                    Counters::add(&counters.changes, changes.len() as u64);
                    for change in changes.drain(..) {
                        // No receivers is fine: nobody is watching.
                        let _ = changes_tx.send(Published::new(change));
                    }
                    if let Some(ack) = ack {
                        // The sender may have gone (client disconnected): nothing to tell.
                        let _ = ack.send(Ok(()));
                    }
                }
                Command::Subscribe { reply } => {
                    let _ = reply.send(Subscription {
                        changes: changes_tx.subscribe(),
                        snapshot: engine.snapshot(),
                    });
                }
            }
        }
    }
    tracing::debug!(keys = engine.len(), seq = engine.seq(), "engine stopped");
}
