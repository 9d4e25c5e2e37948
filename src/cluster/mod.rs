//! Cluster mode: several statecast nodes, one ordered input in a NATS JetStream stream.
//!
//! The engine is a deterministic state machine over its ordered input (see [`crate::engine`]);
//! here that order comes from a stream every node consumes, so every node holds the same index
//! and hands out the same changes with the same `seq`s — a dashboard can resume on any node.
//!
//! - Ingest publishes each input ([`sequencer`]), with whatever other inputs wait at the same
//!   moment in one stream message; the client's `ok` waits until the input is in the stream and
//!   applied by this node's engine.
//! - Every node applies the stream in order ([`consumer`]) from where its state stands.
//! - Time is data: ticks go through the stream ([`clock`]).
//! - A node starts from the newest snapshot in the bucket and replays the stream after it
//!   ([`snapshot`]); the stream's retention must outlast the snapshot interval. A node whose own
//!   history ends before that snapshot starts from its own image instead while the stream still
//!   holds what follows it ([`Joined::start_from_history`]), so its history keeps no hole.
//! - The epoch is the stream's: its name and creation time, the same on every node.
//!
//! Layout: `wire` (message and snapshot encoding), `sequencer`, `consumer`, `clock`,
//! `snapshot`; this file joins the cluster at start and wires the tasks.

mod clock;
mod consumer;
mod pending;
mod sequencer;
mod snapshot;
mod wire;

/// What stream messages carry, for tools and tests that write or read the stream themselves.
pub use crate::engine::Input;
pub use wire::{
    decode_image, decode_input, decode_message, decode_published, encode_input, encode_message,
    encode_published, settle, split_message, Header,
};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, object_store, stream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::change::Snapshot;
use crate::engine::{EngineConfig, EngineHandle, Image};
use crate::metrics::Counters;

/// What cluster mode is told by the configuration.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub urls: Vec<String>,
    pub stream: String,
    pub replicas: usize,
    pub node_id: String,
    pub max_age: Duration,
    pub max_bytes: usize,
    pub snapshot_interval: Duration,
    pub timeout: Duration,
    /// Inputs published and not yet answered, across all connections.
    pub max_in_flight: usize,
}

impl ClusterConfig {
    /// What can be refused before anything is bound or connected.
    pub fn validate(&self) -> Result<(), ClusterError> {
        if self.max_age < DUPLICATE_WINDOW {
            return Err(ClusterError(format!(
                "--cluster-max-age ({:?}) must be at least the stream's duplicate window ({DUPLICATE_WINDOW:?}): NATS refuses a stream that forgets messages before it forgets their ids, and the window is what stores a retried publish and a node's tick once",
                self.max_age
            )));
        }
        if self.snapshot_interval >= self.max_age {
            return Err(ClusterError(format!(
                "--cluster-snapshot-interval ({:?}) must be shorter than --cluster-max-age ({:?}): a node starting from the newest snapshot replays the stream after it",
                self.snapshot_interval, self.max_age
            )));
        }
        Ok(())
    }
}

/// How long the stream remembers message ids: a publish retried within it is stored once, and
/// of the ticks every node publishes for one interval only the first is kept (see [`clock`]).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
#[error("cluster: {0}")]
pub struct ClusterError(String);

/// How often the NATS client pings its server. A link that stops forwarding without closing
/// (no FIN: a firewall or NAT forgetting the connection) is only noticed by missed pongs; the
/// client gives up after 3 unanswered pings, so about 3 × this after the link died (the
/// consumer's stall check usually notices first, see `consumer::STALL_CHECK`).
const PING_INTERVAL: Duration = Duration::from_secs(2);

/// How long a publish failure keeps the node "not ready" after it happened.
const FAILURE_SHOWN: Duration = Duration::from_secs(5);

/// Whether this node can take traffic: connected, caught up, never lost part of the stream.
pub(crate) struct Health {
    client: async_nats::Client,
    /// The stream's last sequence when this node joined: it is caught up once it applied it.
    join_target: u64,
    applied: AtomicU64,
    caught_up: AtomicBool,
    /// Why the consumer is not reading the stream right now (being created, failed, stalled);
    /// `None` while it reads. Set before anything else the consumer does, so a node that joined
    /// is not ready until its consumer runs.
    not_following: Mutex<Option<String>>,
    diverged: Mutex<Option<String>>,
    last_failure: Mutex<Option<(Instant, String)>>,
}

impl Health {
    fn applied(&self, sequence: u64) {
        self.applied.store(sequence, Ordering::Relaxed);
        if sequence >= self.join_target && !self.caught_up.swap(true, Ordering::Relaxed) {
            tracing::info!(sequence, "caught up with the cluster stream");
        }
    }

    /// This node no longer applies the stream (`reason`); the first reason stays.
    fn diverged(&self, reason: String) {
        if let Ok(mut diverged) = self.diverged.lock() {
            diverged.get_or_insert(reason);
        }
    }

    /// The consumer stopped reading the stream (`why`) and is being re-created.
    fn not_following(&self, why: String) {
        if let Ok(mut state) = self.not_following.lock() {
            *state = Some(why);
        }
    }

    /// The consumer reads the stream again.
    fn following(&self) {
        if let Ok(mut state) = self.not_following.lock() {
            *state = None;
        }
    }

    fn stopped_following(&self) -> Option<String> {
        self.diverged.lock().ok().and_then(|d| d.clone())
    }

    fn note_publish_failure(&self, error: &str) {
        if let Ok(mut last) = self.last_failure.lock() {
            *last = Some((Instant::now(), error.to_owned()));
        }
    }

    fn unavailable(&self) -> Option<String> {
        if let Some(reason) = self.diverged.lock().ok().and_then(|d| d.clone()) {
            return Some(reason);
        }
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Some("NATS unreachable: the cluster stream cannot be written or read".into());
        }
        if let Some(why) = self.not_following.lock().ok().and_then(|n| n.clone()) {
            return Some(format!("not following the cluster stream: {why}"));
        }
        if let Some((at, error)) = self.last_failure.lock().ok().and_then(|l| l.clone()) {
            if at.elapsed() < FAILURE_SHOWN {
                return Some(format!("a publish to the cluster stream failed: {error}"));
            }
        }
        if !self.caught_up.load(Ordering::Relaxed) {
            return Some(format!(
                "catching up with the cluster stream (applied {} of {})",
                self.applied.load(Ordering::Relaxed),
                self.join_target
            ));
        }
        None
    }
}

/// A node that has joined the cluster: connected, the stream and bucket found or made, the
/// snapshot to start from loaded.
pub struct Joined {
    config: ClusterConfig,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    stream: stream::Stream,
    bucket: object_store::ObjectStore,
    /// Shared by every node of the stream: what dashboards resume against.
    pub epoch: String,
    /// Where this node's engine starts.
    pub image: Image,
    /// The stream's last sequence at join.
    last_sequence: u64,
    /// The stream's first sequence at join: what it still holds.
    first_sequence: u64,
    /// This node's data directory, where it keeps its own image too.
    local_dir: Option<PathBuf>,
    /// Whether [`Joined::image`] is the one kept there already.
    image_is_local: bool,
}

/// The subject inputs are published on.
fn subject(stream: &str) -> String {
    format!("{stream}.input")
}

/// The version of what every node must read alike: the stream's input format and the rules that
/// decide whether an input applies (its deadline, its connection's order). Raised when either
/// changes, so that a node of another version refuses to join instead of applying inputs the
/// others drop. 2: inputs carry a deadline and their connection's origin and number. 3: a
/// message may hold several inputs (`wire::encode_message`).
const STREAM_FORMAT: u32 = 3;

/// The engine settings every node of one stream must share, or their changes would differ.
/// Kept in the stream's description by the node that creates it, checked by every other.
fn engine_fingerprint(engine: &EngineConfig) -> String {
    format!(
        "statecast input stream v{STREAM_FORMAT}; engine: init-state={:?} default-ttl={}s reap-interval={}ms expired-keep={} max-keys={}",
        engine.init_state,
        engine.default_ttl_secs,
        engine.reap_interval.as_millis(),
        engine
            .expired_keep
            .map_or("forever".to_owned(), |k| format!("{}ms", k.as_millis())),
        engine.max_keys,
    )
}

/// Connects, finds or creates the stream and the snapshot bucket, and loads the snapshot to
/// start from. Every refusal is one clear line.
pub async fn join(config: ClusterConfig, engine: &EngineConfig) -> Result<Joined, ClusterError> {
    config.validate()?;
    let client = connect(&config).await?;
    let jetstream = jetstream::new(client.clone());
    let fingerprint = engine_fingerprint(engine);
    let (mut stream, created) = find_or_create_stream(&config, &jetstream, &fingerprint).await?;
    let (info, epoch) = check_stream(&config, &mut stream, &fingerprint).await?;
    let bucket = match find_or_create_bucket(&config, &jetstream).await {
        Ok(bucket) => bucket,
        Err(error) => {
            if created {
                // Leave nothing half made: the stream this node just created holds nothing yet.
                let _ = jetstream.delete_stream(&config.stream).await;
            }
            return Err(error);
        }
    };
    let state = &info.state;
    let image = start_image(&config, &bucket, state).await?;
    tracing::info!(
        node = %config.node_id,
        stream = %config.stream,
        %epoch,
        snapshot_position = image.position,
        stream_last = state.last_sequence,
        "joined the cluster"
    );
    Ok(Joined {
        config,
        client,
        jetstream,
        stream,
        bucket,
        epoch,
        image,
        last_sequence: state.last_sequence,
        first_sequence: state.first_sequence,
        local_dir: None,
        image_is_local: false,
    })
}

/// Connects to the NATS servers of `--cluster`, within `--cluster-timeout`.
async fn connect(config: &ClusterConfig) -> Result<async_nats::Client, ClusterError> {
    let addrs = config
        .urls
        .iter()
        .map(|url| {
            url.trim()
                .parse::<async_nats::ServerAddr>()
                .map_err(|e| ClusterError(format!("{url:?} is not a NATS address: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = async_nats::ConnectOptions::new()
        .name(format!("statecast {}", config.node_id))
        .connection_timeout(config.timeout)
        .ping_interval(PING_INTERVAL)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((100 * attempts as u64).min(2_000))
        });
    tokio::time::timeout(
        config.timeout,
        async_nats::connect_with_options(addrs, options),
    )
    .await
    .map_err(|_| {
        ClusterError(format!(
            "no NATS server answered at {} within {:?} (--cluster-timeout)",
            config.urls.join(","),
            config.timeout
        ))
    })?
    .map_err(|e| {
        ClusterError(format!(
            "cannot connect to NATS at {}: {e}",
            config.urls.join(",")
        ))
    })
}

/// The stream's state, refused when its engine settings differ from this node's; and the epoch
/// dashboards resume against (the stream's name and creation time: the same on every node).
async fn check_stream(
    config: &ClusterConfig,
    stream: &mut jetstream::stream::Stream,
    fingerprint: &str,
) -> Result<(jetstream::stream::Info, String), ClusterError> {
    let info = stream
        .info()
        .await
        .map_err(|e| ClusterError(format!("cannot read the stream's state: {e}")))?
        .clone();
    let theirs = info.config.description.clone().unwrap_or_default();
    if theirs != fingerprint {
        return Err(ClusterError(format!(
            "this node's engine settings differ from the stream's: every node must compute the same changes. Stream {:?} says: {theirs:?}; this node: {fingerprint:?}",
            config.stream
        )));
    }
    let epoch = format!(
        "{}-{:x}",
        config.stream,
        info.created.unix_timestamp_nanos()
    );
    Ok((info, epoch))
}

/// The snapshot to start from (an empty one at position 0 when the bucket has none), refused
/// when the stream no longer holds every input after it.
async fn start_image(
    config: &ClusterConfig,
    bucket: &object_store::ObjectStore,
    state: &jetstream::stream::State,
) -> Result<Image, ClusterError> {
    let image = snapshot::load(bucket)
        .await
        .map_err(ClusterError)?
        .unwrap_or(Image {
            snapshot: Snapshot {
                seq: 0,
                events: Vec::new(),
                actions: Default::default(),
            },
            position: 0,
            order: Default::default(),
        });
    if state.last_sequence > image.position && state.first_sequence > image.position + 1 {
        return Err(ClusterError(format!(
            "the stream starts at {} but the newest snapshot covers only up to {}: inputs {}..{} are gone (raise --cluster-max-age/--cluster-max-bytes or lower --cluster-snapshot-interval; to start over, delete the stream {:?} and its bucket)",
            state.first_sequence,
            image.position,
            image.position + 1,
            state.first_sequence - 1,
            config.stream
        )));
    }
    Ok(image)
}

/// The stream, and whether this node created it. A stream whose reservation the NATS server
/// cannot hold is refused by the server itself before anything exists: named here by its flag.
async fn find_or_create_stream(
    config: &ClusterConfig,
    jetstream: &jetstream::Context,
    fingerprint: &str,
) -> Result<(stream::Stream, bool), ClusterError> {
    let no_answer = || {
        ClusterError("JetStream did not answer in time (is it enabled: nats-server -js?)".into())
    };
    let found = tokio::time::timeout(config.timeout, jetstream.get_stream(&config.stream))
        .await
        .map_err(|_| no_answer())?;
    match found {
        Ok(stream) => return Ok((stream, false)),
        Err(error) if is_not_found(&error) => {}
        Err(error) => {
            return Err(ClusterError(format!(
                "cannot find the stream {:?}: {error}",
                config.stream
            )))
        }
    }
    let stream_config = stream::Config {
        name: config.stream.clone(),
        description: Some(fingerprint.to_owned()),
        subjects: vec![subject(&config.stream)],
        max_age: config.max_age,
        max_bytes: i64::try_from(config.max_bytes).unwrap_or(i64::MAX),
        num_replicas: config.replicas,
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    };
    let created = tokio::time::timeout(config.timeout, jetstream.create_stream(stream_config))
        .await
        .map_err(|_| no_answer())?;
    match created {
        Ok(stream) => Ok((stream, true)),
        Err(error) if storage_exceeded(&error) => Err(max_bytes_refused(config)),
        // Another node created it at the same moment.
        Err(_) => jetstream
            .get_stream(&config.stream)
            .await
            .map(|s| (s, false))
            .map_err(|e| {
                ClusterError(format!(
                    "cannot find or create the stream {:?}: {e}",
                    config.stream
                ))
            }),
    }
}

/// The snapshot bucket, found or created. Its stream reserves nothing, but NATS still wants a
/// byte of its JetStream storage unreserved: the stream's `--cluster-max-bytes` may have taken it all.
async fn find_or_create_bucket(
    config: &ClusterConfig,
    jetstream: &jetstream::Context,
) -> Result<object_store::ObjectStore, ClusterError> {
    let bucket_name = format!("{}-snapshots", config.stream);
    if let Ok(bucket) = jetstream.get_object_store(&bucket_name).await {
        return Ok(bucket);
    }
    jetstream
        .create_object_store(object_store::Config {
            bucket: bucket_name.clone(),
            description: Some("statecast snapshots".into()),
            num_replicas: config.replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| {
            if storage_exceeded(&e) {
                max_bytes_refused(config)
            } else {
                ClusterError(format!(
                    "cannot create the snapshot bucket {bucket_name:?}: {e}"
                ))
            }
        })
}

fn max_bytes_refused(config: &ClusterConfig) -> ClusterError {
    ClusterError(format!(
        "--cluster-max-bytes ({} bytes × {} replicas) does not fit in the NATS server's JetStream storage (max_file_store, with what other streams reserve), which must also hold the snapshot bucket: lower --cluster-max-bytes or give JetStream more storage",
        config.max_bytes, config.replicas
    ))
}

fn is_not_found(error: &async_nats::jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        async_nats::jetstream::context::GetStreamErrorKind::JetStream(e)
            if e.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// Whether NATS answered "insufficient storage resources" somewhere in `error`'s chain.
fn storage_exceeded(error: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(create) = error.downcast_ref::<CreateStreamError>() {
            if let CreateStreamErrorKind::JetStream(e) = create.kind() {
                if e.error_code() == async_nats::jetstream::ErrorCode::STORAGE_RESOURCES_EXCEEDED {
                    return true;
                }
            }
        }
        next = error.source();
    }
    false
}

impl Joined {
    /// With a data directory whose history holds changes up to `history_seq` (0: none): starts
    /// where that history stays whole. The bucket's snapshot when it is not past that history;
    /// else this node's own image, when the stream still holds everything after it; else — only
    /// then — the bucket's snapshot all the same, and the changes in between are a hole in this
    /// node's history: returned (`from..=to`) for the store to record.
    pub fn start_from_history(&mut self, dir: &Path, history_seq: u64) -> Option<(u64, u64)> {
        self.local_dir = Some(dir.to_owned());
        let bucket_seq = self.image.snapshot.seq;
        if history_seq == 0 || bucket_seq <= history_seq {
            return None;
        }
        let held = |position: u64| {
            position <= self.last_sequence && self.first_sequence <= position.saturating_add(1)
        };
        match snapshot::load_local(dir) {
            Some(own) if own.snapshot.seq <= history_seq && held(own.position) => {
                tracing::info!(
                    position = own.position,
                    seq = own.snapshot.seq,
                    history_seq,
                    "starting from this node's own image: the stream still holds what followed it, so history stays whole"
                );
                self.image = own;
                self.image_is_local = true;
                None
            }
            _ => {
                tracing::warn!(
                    history_seq,
                    snapshot_seq = bucket_seq,
                    "this node's history ends before the cluster snapshot and the stream no longer holds what followed it: starting from the snapshot; history lacks changes {}..={bucket_seq} (shown as a gap)",
                    history_seq + 1
                );
                Some((history_seq + 1, bucket_seq))
            }
        }
    }

    /// Starts following the stream into `engine` (started from [`Joined::image`]) and returns
    /// the handle transports use: theirs publishes to the stream.
    pub fn run(
        self,
        engine: EngineHandle,
        reap_interval: Duration,
        counters: &Arc<Counters>,
        shutdown: &CancellationToken,
        force_stop: &CancellationToken,
        tasks: &TaskTracker,
    ) -> EngineHandle {
        counters
            .cluster
            .enable(&self.config.node_id, &self.config.stream);
        crate::metrics::ClusterMetrics::raise(&counters.cluster.stream_seq, self.last_sequence);
        crate::metrics::ClusterMetrics::raise(&counters.cluster.applied_seq, self.image.position);
        let health = Arc::new(Health {
            client: self.client.clone(),
            join_target: self.last_sequence,
            applied: AtomicU64::new(self.image.position),
            caught_up: AtomicBool::new(self.image.position >= self.last_sequence),
            not_following: Mutex::new(Some("its consumer is being created".into())),
            diverged: Mutex::new(None),
            last_failure: Mutex::new(None),
        });
        let pending = Arc::new(pending::Unanswered::new(
            self.config.timeout,
            Arc::clone(counters),
        ));
        tasks.spawn(pending::answer_overdue(
            Arc::clone(&pending),
            force_stop.clone(),
        ));
        let subject = subject(&self.config.stream);
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let (sequencer, publisher) = sequencer::StreamSequencer::start(
            sequencer::Settings {
                jetstream: self.jetstream.clone(),
                subject: subject.clone(),
                id_prefix: format!("{}-{started:x}", self.config.node_id),
                pending: Arc::clone(&pending),
                max_in_flight: self.config.max_in_flight,
                timeout: self.config.timeout,
                counters: Arc::clone(counters),
                health: Arc::clone(&health),
            },
            force_stop.clone(),
        );
        tasks.spawn(publisher);
        let consumer = consumer::Consumer {
            stream: self.stream,
            engine: engine.clone(),
            pending,
            counters: Arc::clone(counters),
            health,
            position: consumer::Position::after(self.image.position),
        };
        tasks.spawn(consumer.run(shutdown.clone(), force_stop.clone()));
        tasks.spawn(clock::publish_ticks(
            self.jetstream,
            subject,
            reap_interval,
            self.config.timeout,
            shutdown.clone(),
        ));
        tasks.spawn(snapshot::write_periodically(
            self.bucket,
            engine.clone(),
            Arc::clone(counters),
            self.config.snapshot_interval,
            self.local_dir,
            (!self.image_is_local).then_some(self.image),
            shutdown.clone(),
        ));
        engine.with_sequencer(Arc::new(sequencer))
    }
}

/// The file in a node's data directory naming the stream epoch its history belongs to.
const EPOCH_FILE: &str = "cluster-epoch";

/// Makes `dir` hold history of `epoch` only: history from another stream (or from single-node
/// mode) would answer resumes with changes of a different numbering, so it is set aside first.
pub fn claim_data_dir(dir: &Path, epoch: &str) -> Result<(), ClusterError> {
    let marker = dir.join(EPOCH_FILE);
    let current = std::fs::read_to_string(&marker).ok();
    if current.as_deref().map(str::trim) == Some(epoch) {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| ClusterError(format!("cannot create {}: {e}", dir.display())))?;
    let mut moved = Vec::new();
    for name in crate::store::FILES
        .into_iter()
        .chain([snapshot::LOCAL_IMAGE])
    {
        let path = dir.join(name);
        if path.exists() {
            let aside = dir.join(format!("{name}.before-{epoch}"));
            std::fs::rename(&path, &aside)
                .map_err(|e| ClusterError(format!("cannot set {} aside: {e}", path.display())))?;
            moved.push(aside.display().to_string());
        }
    }
    if !moved.is_empty() {
        tracing::warn!(dir = %dir.display(), moved = ?moved, "this data directory held history of another stream or of single-node mode: set aside, starting its history anew from the cluster");
    }
    std::fs::write(&marker, epoch)
        .map_err(|e| ClusterError(format!("cannot write {}: {e}", marker.display())))
}
