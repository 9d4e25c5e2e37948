//! The one owner of the index.
//!
//! Transports hand batches over a bounded queue ([`EngineHandle`]); a single task applies them in
//! order to the [`state::Engine`] state machine. A batch that changed no state is acknowledged as
//! soon as it is applied; one that did is acknowledged in two stages ([`Applied`]): its events
//! before the first change at once, the rest only after its changes are published — and, with a
//! [`Store`], after they are on disk (see [`commit`]): a Riemann `ok` for a message that changed a
//! state means "durable", and a published `seq` is never handed out again after a crash. When the
//! queue is full, senders wait: that is the backpressure that makes a fast TCP client slow down
//! instead of losing events.
//!
//! Snapshots are taken by this same task and released behind the changes they contain, together
//! with the broadcast subscription, so a client's live stream starts exactly after its snapshot's
//! `seq`: no gap, no duplicate.
//!
//! Layout: `state` (the deterministic state machine: index, change detection, expiry), `output`
//! (what leaves the engine and how it is let out), `commit` (the committer thread, with a store).
//! The engine uses the store and the broadcaster downstream of it; neither knows the engine: what
//! they share with it is [`crate::change`].

mod commit;
pub mod order;
mod output;
pub mod state;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot};

pub use crate::change::{Change, ChangeKind, Snapshot};
pub use state::IndexFull;

use crate::broadcast::{MetricsReceiver, Receiver};
use crate::event::{now_micros, Event};
use crate::metrics::Counters;
use crate::store::{Recovered, Retention, Store};
use commit::Committer;
use output::{Deliverer, Output};

/// How many commands the engine takes per wake-up: amortises the channel cost under load
/// without letting one burst starve subscriptions for long.
const COMMANDS_PER_WAKE: usize = 256;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("server is shutting down")]
    Closed,
    #[error("not stored: {0}")]
    Storage(String),
    #[error("index full: it holds the limit of {max_keys} (host, service) keys (--max-keys); events for new keys are refused")]
    IndexFull { max_keys: usize },
    /// An operator action the engine's state does not allow (nothing of it applied).
    #[error(transparent)]
    Refused(#[from] crate::action::ActionRefusal),
    /// Input an ordered log holds but no node applies (stored after its deadline, or overtaken
    /// by a later input of its connection): a promise, on every node, for good.
    #[error("not applied: {0}")]
    NotApplied(String),
    /// What is known when the answer could not wait longer (in a cluster: stored in the stream
    /// but not yet applied here, or not acknowledged by the stream).
    #[error("not confirmed: {0}")]
    Unconfirmed(String),
}

/// What a batch's acknowledgement carries once everything it promises holds.
pub type Ack = Result<(), EngineError>;

/// A batch's answer, as soon as it is applied.
///
/// Why two stages: a change is acknowledged only once it is durable (a log write, ≈0.1 ms),
/// but the events before the batch's first change changed nothing, so their messages can be
/// answered at once. A pipelining client then keeps sending while the change waits for the disk,
/// instead of the whole batch (a whole read of messages) waiting with it.
#[derive(Debug)]
pub enum Applied {
    /// Nothing in the batch changed a state (or it failed as a whole): this is the answer.
    Done(Ack),
    /// Events `..first_change` changed nothing and are acknowledged now; the rest once `durable`
    /// says so.
    Changed {
        first_change: usize,
        durable: oneshot::Receiver<Ack>,
    },
    /// An operator action was applied as `seq` (its first record); `durable` says when its
    /// records are out (on disk, with a store). A refused action is `Done(Err(Refused))`.
    Action {
        seq: u64,
        durable: oneshot::Receiver<Ack>,
    },
}

impl Applied {
    /// Waits for the whole batch's answer.
    pub async fn finished(self) -> Ack {
        match self {
            Applied::Done(ack) => ack,
            Applied::Changed { durable, .. } | Applied::Action { durable, .. } => {
                durable.await.unwrap_or(Err(EngineError::Closed))
            }
        }
    }
}

/// An operator action's answer once applied: the `seq` of its first record, and when its records
/// are out (on disk, with a store). The answer type of [`EngineHandle::act`].
#[derive(Debug)]
pub struct ActionApplied {
    pub seq: u64,
    pub durable: oneshot::Receiver<Ack>,
}

/// A snapshot and the live stream of changes that continues it, with the live values
/// (`--metrics-interval`) taken after it.
pub struct Subscription {
    pub snapshot: Snapshot,
    pub changes: Receiver,
    pub metrics: MetricsReceiver,
}

/// A snapshot and the live stream of every index update (not just changes) that continues it:
/// what Riemann's own `/index?subscribe=true` streams.
pub struct UpdatesSubscription {
    pub snapshot: Snapshot,
    pub updates: broadcast::Receiver<Arc<Event>>,
}

/// One item of the engine's ordered input.
///
/// Why one type: the engine is a deterministic state machine over this sequence, so every node of
/// a cluster that applies the same sequence holds the same index and hands out the same `seq`s.
/// Where the sequence comes from — this process's queue, or a stream every node consumes — is
/// the [`Sequencer`]'s business, never the engine's.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// One batch of events (one socket read, one request), each with its time already set.
    Events(Vec<Event>),
    /// The clock, as data: expire everything due at `now_micros` (operator state too: acks
    /// past their expiry, silence windows).
    Tick { now_micros: i64 },
    /// An operator action (ack, silence, clear), with its own time and author.
    Action(Box<crate::action::Action>),
}

/// One client connection, for ordering: inputs submitted through a handle made by
/// [`EngineHandle::for_connection`] are numbered in submit order, so a sequencer that publishes
/// them apart can still make them take effect in that order.
#[derive(Debug)]
pub struct Connection {
    /// Unique within this process.
    pub id: u64,
    next: AtomicU64,
    last_deadline: AtomicI64,
}

/// Connection ids handed out so far in this process.
static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

impl Connection {
    fn new() -> Self {
        Self {
            id: CONNECTIONS.fetch_add(1, Ordering::Relaxed) + 1,
            next: AtomicU64::new(0),
            last_deadline: AtomicI64::new(i64::MIN),
        }
    }

    /// The number of the connection's next input, with its deadline: `deadline_micros`, or the
    /// previous input's if that is later (a wall clock set back must not give a later input an
    /// earlier deadline). Called in submit order (a connection submits one input at a time).
    pub fn next_input(&self, deadline_micros: i64) -> (u64, i64) {
        let number = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let previous = self
            .last_deadline
            .fetch_max(deadline_micros, Ordering::Relaxed);
        (number, previous.max(deadline_micros))
    }
}

/// Puts input in order for the engine: the seam between transports and the engine.
///
/// Without one, [`EngineHandle`] queues input straight to the engine task; a cluster installs
/// one that publishes each input to the shared stream and hands back the acknowledgement the
/// engine gives when that input comes back, in stream order, from the consumer.
pub trait Sequencer: Send + Sync + 'static {
    /// Orders `input` and returns where its acknowledgement will arrive (`None`: nobody waits).
    /// `connection`: the client connection it came from, whose send order must be kept.
    fn submit<'a>(
        &'a self,
        input: Input,
        ack: Option<oneshot::Sender<Applied>>,
        connection: Option<&'a Arc<Connection>>,
    ) -> SubmitFuture<'a>;

    /// Why input cannot be ordered now, if it cannot (what `/readyz` reports).
    fn unavailable(&self) -> Option<String>;
}

/// What [`Sequencer::submit`] returns: done once the input is accepted for ordering (in a
/// cluster, once it is in the stream, or refused).
pub type SubmitFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), EngineError>> + Send + 'a>>;

/// Everything needed to start an engine at a point of its input: the index, the last `seq`
/// and the input position it covers (a cluster's stream sequence; 0 for a local queue).
#[derive(Debug, Clone)]
pub struct Image {
    pub snapshot: Snapshot,
    pub position: u64,
    /// Which inputs of the log still to come take effect (see [`order`]).
    pub order: order::OrderTable,
}

/// One input of a message of an ordered log (see [`EngineHandle::apply_logged`]).
pub struct Logged {
    pub input: Input,
    pub ack: Option<oneshot::Sender<Applied>>,
    /// What the log says about it: whether it takes effect is decided by [`order`].
    pub stamp: order::Stamp,
}

enum Command {
    /// The inputs of one message of an ordered log, at `position` there.
    ApplyLogged {
        inputs: Vec<Logged>,
        position: u64,
    },
    Apply {
        input: Input,
        ack: Option<oneshot::Sender<Applied>>,
        /// Where the input stands in an ordered log (a cluster stream), if it came from one:
        /// such input is never refused for a local reason (storage failing), since every other
        /// node applies it too.
        position: Option<u64>,
        /// What the log says about it: whether it takes effect is decided by [`order`].
        stamp: Option<order::Stamp>,
    },
    Image {
        reply: oneshot::Sender<Image>,
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
    Sync {
        reply: oneshot::Sender<()>,
    },
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub init_state: String,
    /// TTL for events that carry none, in seconds.
    pub default_ttl_secs: f64,
    /// How often expired entries are looked for.
    pub reap_interval: std::time::Duration,
    /// How long an expired entry stays indexed before it is removed (`None`: until it reports
    /// again).
    pub expired_keep: Option<std::time::Duration>,
    /// (host, service) keys the index may hold.
    pub max_keys: usize,
    /// History bounds, when a store is used.
    pub retention: Retention,
    /// Batches waiting for the engine before senders are made to wait.
    pub queue_capacity: usize,
    /// Changes buffered for the slowest dashboard before it must resynchronise.
    pub broadcast_capacity: usize,
    /// Whether the engine's own clock makes the expiry ticks (single node). A cluster turns it
    /// off: its ticks come through the stream, so every node expires at the same point.
    pub local_clock: bool,
    /// Where the metrics of applied events go (`--series on`): handed over without waiting.
    pub series: Option<crate::series::SeriesFeed>,
    /// How often the keys whose metric or description moved are handed to dashboards (`None`:
    /// never). Local to each node in a cluster: live values are not state.
    pub metrics_interval: Option<std::time::Duration>,
    /// The bound on one `metrics` frame's bytes (`--metrics-max-bytes`): what a batch's shared
    /// frame carries at most; the rest is carried into the next batch.
    pub metrics_max_bytes: usize,
}

/// Outputs waiting for the committer before the engine waits for it: at most this many groups
/// (one batch's changes, or one expiry sweep's) are applied ahead of the disk.
const COMMIT_QUEUE: usize = 64;

/// Cheap, cloneable access to the engine task.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
    /// The committer's storage flag, with a store: what `/readyz` reports.
    storage: Option<Arc<commit::StorageHealth>>,
    /// Orders input before the engine sees it (a cluster); `None`: straight to the queue.
    sequencer: Option<Arc<dyn Sequencer>>,
    /// The client connection this handle submits for (see [`EngineHandle::for_connection`]).
    connection: Option<Arc<Connection>>,
}

impl EngineHandle {
    /// Queues a batch and returns the receiver of its acknowledgement. Waits while the queue is
    /// full (backpressure).
    pub async fn submit(
        &self,
        events: Vec<Event>,
    ) -> Result<oneshot::Receiver<Applied>, EngineError> {
        let (ack, rx) = oneshot::channel();
        self.submit_input(Input::Events(events), Some(ack)).await?;
        Ok(rx)
    }

    /// Queues a batch nobody waits on (UDP has no reply).
    pub async fn submit_unacknowledged(&self, events: Vec<Event>) -> Result<(), EngineError> {
        self.submit_input(Input::Events(events), None).await
    }

    /// Orders any input: through the sequencer when there is one.
    pub async fn submit_input(
        &self,
        input: Input,
        ack: Option<oneshot::Sender<Applied>>,
    ) -> Result<(), EngineError> {
        match &self.sequencer {
            Some(sequencer) => sequencer.submit(input, ack, self.connection.as_ref()).await,
            None => self.apply_ordered(input, ack, None).await,
        }
    }

    /// A handle for one client connection: its inputs take effect in the order they are
    /// submitted through it, also in a cluster (where each is published on its own).
    pub fn for_connection(&self) -> Self {
        Self {
            connection: Some(Arc::new(Connection::new())),
            ..self.clone()
        }
    }

    /// Hands input that is already in order to the engine task (what a sequencer's consumer
    /// calls), with its position in the ordered log, if any. Waits while the queue is full.
    pub async fn apply_ordered(
        &self,
        input: Input,
        ack: Option<oneshot::Sender<Applied>>,
        position: Option<u64>,
    ) -> Result<(), EngineError> {
        self.tx
            .send(Command::Apply {
                input,
                ack,
                position,
                stamp: None,
            })
            .await
            .map_err(|_| EngineError::Closed)
    }

    /// [`EngineHandle::apply_ordered`] for the inputs of one message of an ordered log at
    /// `position`, each with what the log says of it: input late or overtaken is not applied
    /// (see [`order`]). They are applied together: an image never falls between them, since its
    /// position could not say which of them it covers.
    pub async fn apply_logged(
        &self,
        inputs: Vec<Logged>,
        position: u64,
    ) -> Result<(), EngineError> {
        self.tx
            .send(Command::ApplyLogged { inputs, position })
            .await
            .map_err(|_| EngineError::Closed)
    }

    /// This handle with `sequencer` ordering its input (a cluster installs one).
    pub fn with_sequencer(&self, sequencer: Arc<dyn Sequencer>) -> Self {
        Self {
            tx: self.tx.clone(),
            storage: self.storage.clone(),
            sequencer: Some(sequencer),
            connection: self.connection.clone(),
        }
    }

    /// The engine's whole restorable state, behind everything queued before this call: what a
    /// cluster snapshot stores.
    pub async fn image(&self) -> Result<Image, EngineError> {
        self.request(|reply| Command::Image { reply }).await
    }

    /// Applies a batch and waits until it is applied.
    pub async fn apply(&self, events: Vec<Event>) -> Ack {
        match self.submit(events).await?.await {
            Ok(applied) => applied.finished().await,
            Err(_) => Err(EngineError::Closed),
        }
    }

    /// Orders an operator action and waits until it is applied (or refused), with an answer of
    /// its own kind: a caller has no batch answers to rule out. The reply channel is shared by
    /// every input (a [`Sequencer`] carries one type), so it is read here, beside
    /// `Owner::apply_action`, which answers an action only with `Applied::Action` or an error.
    pub async fn act(&self, action: crate::action::Action) -> Result<ActionApplied, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.submit_input(Input::Action(Box::new(action)), Some(tx))
            .await?;
        match rx.await.map_err(|_| EngineError::Closed)? {
            Applied::Action { seq, durable } => Ok(ActionApplied { seq, durable }),
            Applied::Done(Err(error)) => Err(error),
            // Not an action's answer: told as an outage rather than a false success.
            Applied::Done(Ok(())) | Applied::Changed { .. } => Err(EngineError::Closed),
        }
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

    /// Returns once the store's history holds every change applied before this call (history
    /// readers that must not miss one call this first).
    pub async fn sync(&self) -> Result<(), EngineError> {
        self.request(|reply| Command::Sync { reply }).await
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

    /// Batches and requests waiting for the engine (`--engine-queue` bounds it).
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Why the engine cannot take batches now, if it cannot: storage failing (the committer's
    /// flag, see `commit::StorageHealth`) or the engine stopped. Two atomic loads: cheap enough
    /// for a health check polled every second.
    pub fn unavailable(&self) -> Option<String> {
        if self.tx.is_closed() {
            return Some("the engine has stopped".into());
        }
        if let Some(reason) = self.sequencer.as_ref().and_then(|s| s.unavailable()) {
            return Some(reason);
        }
        let failure = self.storage.as_ref()?.failure()?;
        Some(format!("storage unavailable: {failure}"))
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

/// Starts the engine task, restoring from `store` when there is one — or from `image` when one
/// is given (a cluster node starts from the cluster's snapshot: its own store then keeps history
/// only). It runs until every [`EngineHandle`] is dropped, after applying everything already
/// queued — so shutdown answers what is in flight.
pub fn spawn(
    config: EngineConfig,
    counters: Arc<Counters>,
    store: Option<(Arc<Store>, Recovered)>,
    image: Option<Image>,
) -> (EngineHandle, tokio::task::JoinHandle<()>) {
    let store = store.map(|(store, recovered)| (store as Arc<dyn commit::Durable>, recovered));
    spawn_on(config, counters, store, image)
}

/// [`spawn`] committing to any [`commit::Durable`] storage: the server's [`Store`], or in unit
/// tests an in-memory one, so the two-stage acknowledgements can be checked without a disk.
pub(crate) fn spawn_on(
    config: EngineConfig,
    counters: Arc<Counters>,
    store: Option<(Arc<dyn commit::Durable>, Recovered)>,
    image: Option<Image>,
) -> (EngineHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
    let changes_tx = crate::broadcast::Sender::new(config.broadcast_capacity);
    let (updates_tx, _) = broadcast::channel(config.broadcast_capacity.max(1));
    let mut engine = new_engine(&config);
    let deliverer = Deliverer {
        changes_tx,
        metrics_tx: crate::broadcast::metrics_channel(),
        counters: Arc::clone(&counters),
    };
    let (position, order) = match &image {
        Some(image) => restore_image(&mut engine, image, &counters),
        None => (0, order::OrderTable::default()),
    };
    let committer = store.map(|(store, recovered)| {
        if image.is_none() {
            restore_recovered(&mut engine, recovered);
        }
        engine.track_unsaved();
        let deliverer = Deliverer {
            changes_tx: deliverer.changes_tx.clone(),
            metrics_tx: deliverer.metrics_tx.clone(),
            counters: Arc::clone(&counters),
        };
        Committer::spawn(store, config.retention, deliverer, COMMIT_QUEUE)
    });
    let storage = committer
        .as_ref()
        .map(|committer| Arc::clone(&committer.health));
    let mut owner = Owner {
        engine,
        updates_tx,
        counters,
        deliverer,
        committer,
        changes: Vec::new(),
        indexed: Vec::new(),
        acks: Vec::new(),
        index_full_logged: None,
        position,
        order,
        series: config.series.clone(),
        metric_batches: 0,
        last_batch: None,
        metrics_max_bytes: config.metrics_max_bytes,
    };
    owner.count_keys();
    let clock = config.local_clock.then_some(config.reap_interval);
    if config.metrics_interval.is_some() {
        owner.engine.track_moved();
    }
    let task = tokio::spawn(owner.run(rx, clock, config.metrics_interval));
    (
        EngineHandle {
            tx,
            storage,
            sequencer: None,
            connection: None,
        },
        task,
    )
}

/// The state machine as configured, still empty.
fn new_engine(config: &EngineConfig) -> state::Engine {
    let mut engine = state::Engine::new(config.init_state.clone(), config.default_ttl_secs);
    engine.set_expired_keep(config.expired_keep);
    engine.set_max_keys(config.max_keys);
    engine
}

/// Starts `engine` from the cluster's snapshot; returns the position in the ordered log it
/// stands for and which inputs of that log take effect.
fn restore_image(
    engine: &mut state::Engine,
    image: &Image,
    counters: &Counters,
) -> (u64, order::OrderTable) {
    tracing::info!(
        keys = image.snapshot.events.len(),
        seq = image.snapshot.seq,
        position = image.position,
        "starting from a snapshot"
    );
    counters
        .cluster
        .start_position
        .store(image.position, std::sync::atomic::Ordering::Relaxed);
    let events = image
        .snapshot
        .events
        .iter()
        .map(|e| (**e).clone())
        .collect();
    engine.restore(image.snapshot.seq, events);
    engine.restore_actions(image.snapshot.actions.clone(), true);
    (image.position, image.order.clone())
}

/// Starts `engine` from what its own store recovered (when there is no cluster snapshot).
fn restore_recovered(engine: &mut state::Engine, recovered: Recovered) {
    tracing::info!(
        keys = recovered.events.len(),
        seq = recovered.seq,
        epoch = %recovered.epoch,
        "restored index from the store"
    );
    engine.restore(recovered.seq, recovered.events);
    engine.restore_actions(recovered.actions, false);
}

/// Refused batches are logged at most this often (each is counted).
const INDEX_FULL_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// How often index updates that are not changes are written, and history is pruned.
const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The task's state: the state machine plus where its output goes.
struct Owner {
    engine: state::Engine,
    updates_tx: broadcast::Sender<Arc<Event>>,
    counters: Arc<Counters>,
    /// Lets outputs out directly when there is no committer (no store), and answers for a
    /// committer that died.
    deliverer: Deliverer,
    committer: Option<Committer>,
    /// Applied but not yet handed on: the current group.
    changes: Vec<Change>,
    /// Acknowledgements of the current group's batches that changed a state.
    acks: Vec<oneshot::Sender<Ack>>,
    /// Scratch buffer for newly indexed events, for watchers of every index update.
    indexed: Vec<Arc<Event>>,
    /// When an "index full" refusal was last logged.
    index_full_logged: Option<std::time::Instant>,
    /// The position in the ordered log of the last input applied from one (0: none).
    position: u64,
    /// Which inputs of the ordered log take effect.
    order: order::OrderTable,
    /// The metrics of applied events go there (see [`EngineConfig::series`]).
    series: Option<crate::series::SeriesFeed>,
    /// Metric batches built so far: the next one's [`MetricBatch::seq`](crate::change::MetricBatch).
    metric_batches: u64,
    /// The last metric batch: what its shared frame could not carry goes first in the next.
    last_batch: Option<Arc<crate::change::MetricBatch>>,
    /// [`EngineConfig::metrics_max_bytes`].
    metrics_max_bytes: usize,
}

impl Owner {
    /// `clock`: the reap interval when the engine makes its own ticks (see
    /// [`EngineConfig::local_clock`]); `metrics`: [`EngineConfig::metrics_interval`].
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        clock: Option<std::time::Duration>,
        metrics: Option<std::time::Duration>,
    ) {
        let mut commands = Vec::with_capacity(COMMANDS_PER_WAKE);
        let mut reap = tokio::time::interval(
            clock
                .unwrap_or(std::time::Duration::from_secs(3600))
                .max(std::time::Duration::from_millis(10)),
        );
        reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush = tokio::time::interval(FLUSH_INTERVAL);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut live =
            tokio::time::interval(metrics.unwrap_or(std::time::Duration::from_secs(3600)));
        live.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = rx.recv_many(&mut commands, COMMANDS_PER_WAKE) => {
                    if received == 0 {
                        break;
                    }
                    for command in commands.drain(..) {
                        self.handle(command).await;
                    }
                    self.end_group().await;
                    // Nothing more waiting: the series thread gets what this burst gathered.
                    if rx.is_empty() {
                        self.flush_series();
                    }
                }
                // While storage fails, nothing new is applied: expiry waits too.
                _ = reap.tick(), if clock.is_some() && self.storage_failure().is_none() => {
                    self.tick(now_micros()).await;
                }
                _ = flush.tick() => {
                    self.flush_series();
                    if self.storage_failure().is_none() {
                        self.flush().await;
                    }
                }
                _ = live.tick(), if metrics.is_some() => self.publish_moved().await,
            }
        }
        self.end_group().await;
        self.flush_series();
        self.flush().await;
        if let Some(committer) = self.committer.take() {
            committer.close().await;
        }
        tracing::debug!(
            keys = self.engine.len(),
            seq = self.engine.seq(),
            "engine stopped"
        );
    }

    /// Sends the series points gathered from the batches applied so far (see
    /// [`crate::series::SeriesFeed`]).
    fn flush_series(&mut self) {
        if let Some(feed) = &mut self.series {
            feed.flush();
        }
    }

    /// Expires what is due at `now_micros`.
    async fn tick(&mut self, now_micros: i64) {
        let first = self.changes.len();
        if self.engine.expire(now_micros, &mut self.changes) > 0 {
            if self.updates_tx.receiver_count() > 0 {
                // Expiry tombstones are index updates too (a removal is not: the key's last
                // update was its tombstone).
                for change in &self.changes[first..] {
                    match &change.kind {
                        ChangeKind::State(state) if !state.removed => {
                            let _ = self.updates_tx.send(Arc::clone(&state.event));
                        }
                        ChangeKind::State(_) | ChangeKind::Action(_) => {}
                    }
                }
            }
            self.end_group().await;
            self.count_keys();
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::ApplyLogged { inputs, position } => {
                for logged in inputs {
                    self.apply_input(logged.input, logged.ack, Some(position), Some(logged.stamp))
                        .await;
                }
                self.position = position;
            }
            Command::Apply {
                input,
                ack,
                position,
                stamp,
            } => self.apply_input(input, ack, position, stamp).await,
            Command::Image { reply } => {
                self.end_group().await;
                let image = Image {
                    snapshot: self.engine.snapshot(),
                    position: self.position,
                    order: self.order.clone(),
                };
                let _ = reply.send(image);
            }
            // Reads are released behind the changes they contain (see `commit`), so a snapshot
            // never contains a change its subscriber will also receive live, nor one that could
            // still be lost.
            Command::Subscribe { reply } => {
                self.end_group().await;
                let snapshot = self.engine.snapshot();
                self.output(Output::Subscribe { snapshot, reply }).await;
            }
            Command::SubscribeUpdates { reply } => {
                // Index updates are streamed as applied (they are not promised durable).
                let _ = reply.send(UpdatesSubscription {
                    updates: self.updates_tx.subscribe(),
                    snapshot: self.engine.snapshot(),
                });
            }
            Command::Snapshot { reply } => {
                self.end_group().await;
                let snapshot = self.engine.snapshot();
                self.output(Output::Snapshot { snapshot, reply }).await;
            }
            Command::Sync { reply } => {
                self.end_group().await;
                self.output(Output::Sync { reply }).await;
            }
        }
    }

    /// Applies one input, at `position` of an ordered log if it came from one, unless `stamp`
    /// says it does not take effect.
    async fn apply_input(
        &mut self,
        input: Input,
        mut ack: Option<oneshot::Sender<Applied>>,
        position: Option<u64>,
        stamp: Option<order::Stamp>,
    ) {
        if let Some(position) = position {
            self.position = position;
        }
        if let Some(stamp) = stamp {
            if !self.admitted(&stamp, &mut ack) {
                return;
            }
        }
        match input {
            Input::Events(events) => self.apply(events, ack, position.is_some()).await,
            Input::Tick { now_micros } => {
                if position.is_some() || self.storage_failure().is_none() {
                    self.tick(now_micros).await;
                }
                if let Some(ack) = ack {
                    let _ = ack.send(Applied::Done(Ok(())));
                }
            }
            Input::Action(action) => self.apply_action(*action, ack, position.is_some()).await,
        }
    }

    /// Why input must be refused now, if it must: storage failing — refused before it is
    /// applied, so in-memory state does not run ahead of what can be stored (see
    /// `commit::StorageHealth`). Input from an ordered log (`from_log`) is never refused.
    fn storage_refusal(&self, from_log: bool) -> Option<EngineError> {
        let error = self.storage_failure().filter(|_| !from_log)?;
        Some(EngineError::Storage(format!(
            "storage unavailable: {error}; refused, nothing applied (send again later)"
        )))
    }

    /// Whether input must be refused now ([`Owner::storage_refusal`]); if so, `ack` is answered.
    fn refused(&self, ack: &mut Option<oneshot::Sender<Applied>>, from_log: bool) -> bool {
        let Some(refusal) = self.storage_refusal(from_log) else {
            return false;
        };
        if let Some(ack) = ack.take() {
            let _ = ack.send(Applied::Done(Err(refusal)));
        }
        true
    }

    /// Applies one batch of events. `from_log`: it came from an ordered log every node applies,
    /// so a local reason (storage failing) must not refuse it — the committer holds its changes
    /// until storage is back, and the log keeps them meanwhile.
    async fn apply(
        &mut self,
        events: Vec<Event>,
        mut ack: Option<oneshot::Sender<Applied>>,
        from_log: bool,
    ) {
        if self.refused(&mut ack, from_log) {
            return;
        }
        let count = events.len() as u64;
        let watched = self.updates_tx.receiver_count() > 0;
        // Made as the batch is applied (each point names its key by its entry's slot); handed
        // over once it is.
        let mut points = self
            .series
            .as_ref()
            .map(|_| crate::series::key::Points::with_capacity(events.len()));
        let applied = self.engine.apply_with_points(
            events,
            &mut self.changes,
            watched.then_some(&mut self.indexed),
            points.as_mut(),
        );
        let first_change = match applied {
            Ok(first_change) => first_change,
            Err(IndexFull { max_keys }) => {
                Counters::add(&self.counters.events_refused, count);
                // UDP senders hear nothing back: the log says it, once a minute at most.
                let now = std::time::Instant::now();
                if self
                    .index_full_logged
                    .is_none_or(|at| now.duration_since(at) >= INDEX_FULL_LOG_EVERY)
                {
                    self.index_full_logged = Some(now);
                    tracing::warn!(
                        max_keys,
                        refused_total = Counters::get(&self.counters.events_refused),
                        "index full: refusing events for new (host, service) keys (raise --max-keys, or lower --expired-keep)"
                    );
                }
                if let Some(ack) = ack {
                    let _ = ack.send(Applied::Done(Err(EngineError::IndexFull { max_keys })));
                }
                return;
            }
        };
        Counters::add(&self.counters.events, count);
        if let (Some(feed), Some(points)) = (&mut self.series, points) {
            feed.add(points);
        }
        // Before any acknowledgement: a sender that got its `ok` sees its keys counted.
        self.count_keys();
        for event in self.indexed.drain(..) {
            let _ = self.updates_tx.send(event);
        }
        match (first_change, ack) {
            (Some(first_change), ack) => {
                if let Some(ack) = ack {
                    // What came before the first change is answered now; the rest
                    // once the changes are out (durable, with a store).
                    let (durable_tx, durable) = oneshot::channel();
                    let _ = ack.send(Applied::Changed {
                        first_change,
                        durable,
                    });
                    self.acks.push(durable_tx);
                }
                // Hand the changes on now rather than at the end of this wake-up: the
                // committer starts its log write sooner, and the sender waits less.
                self.end_group().await;
            }
            (None, Some(ack)) => {
                // Nothing to publish or make durable: applied is all "ok" promises.
                let _ = ack.send(Applied::Done(Ok(())));
            }
            (None, None) => {}
        }
    }

    /// Applies one operator action; `from_log` as for [`Owner::apply`].
    async fn apply_action(
        &mut self,
        action: crate::action::Action,
        mut ack: Option<oneshot::Sender<Applied>>,
        from_log: bool,
    ) {
        if self.refused(&mut ack, from_log) {
            return;
        }
        match self.engine.apply_action(action, &mut self.changes) {
            Ok(seq) => {
                self.count_keys();
                if let Some(ack) = ack {
                    let (durable_tx, durable) = oneshot::channel();
                    let _ = ack.send(Applied::Action { seq, durable });
                    self.acks.push(durable_tx);
                }
                self.end_group().await;
            }
            Err(refusal) => {
                if let Some(ack) = ack {
                    let _ = ack.send(Applied::Done(Err(refusal.into())));
                }
            }
        }
    }

    /// Whether input of the ordered log stamped `stamp` takes effect (see [`order`]); if not, it
    /// is counted and `ack` told so.
    fn admitted(
        &mut self,
        stamp: &order::Stamp,
        ack: &mut Option<oneshot::Sender<Applied>>,
    ) -> bool {
        let verdict = self.order.admit(stamp);
        let (counter, why) = match verdict {
            order::Verdict::Apply => return true,
            order::Verdict::Late => (
                &self.counters.cluster.dropped_late,
                "the cluster stream stored it after its deadline (--cluster-timeout), when its sender had been told it was refused; no node applies it".to_owned(),
            ),
            order::Verdict::Overtaken { last } => (
                &self.counters.cluster.dropped_overtaken,
                format!("a later message of the same connection (its input {last}) was applied before it reached the cluster stream; no node applies it, so the connection's send order holds"),
            ),
        };
        Counters::add(counter, 1);
        if let Some(ack) = ack.take() {
            let _ = ack.send(Applied::Done(Err(EngineError::NotApplied(why))));
        }
        false
    }

    /// Publishes the index size for `/metrics` (one relaxed store per wake-up).
    fn count_keys(&self) {
        self.counters.index_keys.store(
            self.engine.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The storage error while storage is failing (see `commit::StorageHealth`).
    fn storage_failure(&self) -> Option<String> {
        self.committer
            .as_ref()
            .and_then(|committer| committer.health.failure())
    }

    /// Hands the current group on: to the committer, or straight out without a store.
    async fn end_group(&mut self) {
        if self.changes.is_empty() && self.acks.is_empty() {
            return;
        }
        let group = Output::Group {
            changes: std::mem::take(&mut self.changes),
            acks: std::mem::take(&mut self.acks),
            seq: self.engine.seq(),
        };
        self.output(group).await;
    }

    async fn output(&self, output: Output) {
        match &self.committer {
            Some(committer) => committer.send(output, &self.deliverer).await,
            None => self.deliverer.deliver(output, &Ok(())),
        }
    }

    /// Hands the latest values of the keys that moved since the last interval on to dashboards,
    /// as one batch every session shares (the engine does nothing per dashboard), behind the
    /// changes applied before them; every interval, empty when nothing moved (each batch lets
    /// a dashboard send one frame). Nobody watching: the marks are cleared, nothing is built.
    /// The batch's `queue` (the order of the frames shared by dashboards without a query) starts
    /// with the keys the last batch's shared frame could not carry, at their latest values, then
    /// the other moved keys in key order: the keys that waited longest go first, and each
    /// interval costs the keys that moved or wait, never the event rate.
    async fn publish_moved(&mut self) {
        let mut events = self.engine.take_moved();
        if self.deliverer.metrics_tx.receiver_count() == 0 {
            self.last_batch = None;
            return;
        }
        // Sent even when nothing moved: it paces the dashboards' frames of their own values.
        let carried = self.carried();
        self.end_group().await;
        events.sort_unstable_by(|a, b| {
            (a.host.as_deref(), a.service.as_deref())
                .cmp(&(b.host.as_deref(), b.service.as_deref()))
        });
        let queue = crate::broadcast::carried_then_moved(carried, &events);
        self.metric_batches += 1;
        let (seq, time_ms) = (self.metric_batches, now_micros() / 1000);
        let batch = crate::change::MetricBatch::with_queue(
            seq,
            time_ms,
            events,
            queue,
            self.metrics_max_bytes,
        );
        let batch = Arc::new(batch);
        self.last_batch = Some(Arc::clone(&batch));
        self.output(Output::Metrics(batch)).await;
    }

    /// What the last batch's shared frame could not carry, each at its indexed value now (see
    /// [`crate::broadcast::carried`]).
    fn carried(&mut self) -> Vec<Arc<Event>> {
        let Some(last) = self.last_batch.take() else {
            return Vec::new();
        };
        crate::broadcast::carried(&last, |e| self.engine.current(e))
    }

    /// Hands index updates that were not changes to the committer (the latest event of each
    /// updated key), which also trims history and checkpoints.
    async fn flush(&mut self) {
        if self.committer.is_none() {
            return;
        }
        self.end_group().await;
        let dirty = self.engine.take_unsaved();
        let forgotten = self.engine.take_forgotten();
        let seq = self.engine.seq();
        self.output(Output::Flush {
            dirty,
            forgotten,
            seq,
        })
        .await;
    }
}

#[cfg(test)]
mod tests;
