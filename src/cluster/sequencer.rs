//! Ingest's side of cluster mode: each input is published to the stream, and its
//! acknowledgement is the one the local engine gives when that input comes back from the stream
//! in order (see [`super::consumer`]).
//!
//! So a client's `ok` means both "in the stream, with its replicas" (the consumer only ever sees
//! stored messages) and "applied here" (read-your-writes on the node that answered). Publishes
//! carry a `Nats-Msg-Id`: a publish retried after a lost acknowledgement is stored once.
//!
//! Each input also carries its deadline and, when it came from a client connection, its origin
//! (this process and the connection) and number there: every node's engine drops an input stored
//! after its deadline or after a later input of its connection ([`crate::engine::order`]), so a
//! refusal means "not applied" and a connection's inputs take effect in the order it sent them,
//! whatever retries and failovers do to the order they are stored in.
//!
//! Inputs are encoded by the task that submits them and queued, in submit order, to one
//! publisher task per node ([`Coalescer`]), which puts whatever inputs are waiting — from every
//! connection — into one stream message (at most [`MAX_MESSAGE_INPUTS`] and the NATS server's
//! `max_payload`): every message costs a publish round trip, a stored message and a delivery to
//! every node whatever it holds. Nothing waits on a timer to gather inputs: while a message is
//! out ([`MAX_MESSAGES_IN_FLIGHT`]), what arrives waits for the next one, so an idle node
//! publishes an input at once and a busy one about one message per round trip.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::pending::{Unanswered, Waiter};
use super::wire;
use super::Health;
use crate::engine::{Applied, Connection, EngineError, Input, Sequencer, SubmitFuture};
use crate::event::now_micros;
use crate::metrics::{ClusterMetrics, Counters};

/// Inputs one stream message holds at most. Bounds what one message makes the consumers of
/// every node hold decoded at once, and one failed publish's share of answers; far above what
/// waits at once in practice (the in-flight limit, 1024 by default).
pub const MAX_MESSAGE_INPUTS: usize = 1024;

/// Stream messages published and not yet acknowledged by the stream (first attempts; retries
/// run outside it). While one is out, inputs wait and the next message takes them all: without
/// it the publisher outran its inputs and a message held 1.3 of them at batch 1 (3 with it, 13
/// at batch 100; figures in BENCHMARKS.md). An input arriving at an idle node is published at
/// once; a retried message does not hold the next one back.
pub const MAX_MESSAGES_IN_FLIGHT: usize = 1;

/// Bytes one stream message holds at most when the NATS server allows more (`max_payload` is
/// 1 MiB by default, up to 64 MiB): a larger message delays every input in it.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// The [`Sequencer`] of a cluster node: encodes an input, gives it its place in the in-flight
/// limit and queues it for the [`Coalescer`].
pub(super) struct StreamSequencer {
    queue: mpsc::Sender<Queued>,
    /// Prefix of this process's origins and message ids: node id plus start time, so they never
    /// repeat across restarts within the stream's duplicate window.
    id_prefix: String,
    jetstream: jetstream::Context,
    /// Inputs published and not yet answered, across all connections: senders wait at the
    /// limit (backpressure, like the engine queue in single-node mode).
    in_flight: Arc<Semaphore>,
    timeout: Duration,
    counters: Arc<Counters>,
    health: Arc<Health>,
}

/// One input encoded for the stream, waiting for its message.
struct Queued {
    /// As [`wire::encode_published`] made it.
    payload: bytes::Bytes,
    input: Input,
    header: wire::Header,
    ack: Option<oneshot::Sender<Applied>>,
    permit: OwnedSemaphorePermit,
    deadline_micros: i64,
    /// When its publish is given up: one `--cluster-timeout` after it was submitted.
    publish_until: Instant,
}

/// What [`StreamSequencer::start`] needs besides the queue it makes.
pub(super) struct Settings {
    pub(super) jetstream: jetstream::Context,
    pub(super) subject: String,
    pub(super) id_prefix: String,
    pub(super) pending: Arc<Unanswered>,
    pub(super) max_in_flight: usize,
    pub(super) timeout: Duration,
    pub(super) counters: Arc<Counters>,
    pub(super) health: Arc<Health>,
}

impl StreamSequencer {
    /// The sequencer, and the publisher task to run until `stop` (or until every sequencer
    /// handle is gone).
    pub(super) fn start(
        settings: Settings,
        stop: CancellationToken,
    ) -> (Self, impl std::future::Future<Output = ()>) {
        let max_in_flight = settings.max_in_flight.max(1);
        // Every queued input holds an in-flight place: the queue never holds more.
        let (queue, rx) = mpsc::channel(max_in_flight);
        let sequencer = Self {
            queue,
            id_prefix: settings.id_prefix.clone(),
            jetstream: settings.jetstream.clone(),
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            timeout: settings.timeout,
            counters: Arc::clone(&settings.counters),
            health: Arc::clone(&settings.health),
        };
        let coalescer = Coalescer {
            rx,
            settings,
            next_id: 0,
            window: Arc::new(Semaphore::new(MAX_MESSAGES_IN_FLIGHT)),
        };
        (sequencer, coalescer.run(stop))
    }

    /// What the consumers decide from: the input's deadline (now + the timeout, in µs since the
    /// epoch) and, from a client connection, its origin and number there.
    fn header(&self, connection: Option<&Arc<Connection>>) -> (wire::Header, i64) {
        let timeout_micros = i64::try_from(self.timeout.as_micros()).unwrap_or(i64::MAX);
        let deadline = now_micros().saturating_add(timeout_micros);
        let header = match connection {
            Some(connection) => {
                let (number, deadline) = connection.next_input(deadline);
                wire::Header {
                    origin: Some((format!("{}-{}", self.id_prefix, connection.id), number)),
                    deadline_micros: Some(deadline),
                }
            }
            None => wire::Header {
                origin: None,
                deadline_micros: Some(deadline),
            },
        };
        let deadline = header.deadline_micros.unwrap_or(deadline);
        (header, deadline)
    }

    async fn publish(
        &self,
        mut input: Input,
        ack: Option<oneshot::Sender<Applied>>,
        connection: Option<&Arc<Connection>>,
    ) -> Result<(), EngineError> {
        if let Some(reason) = self.health.stopped_following() {
            // Its input would never come back to be answered here.
            if let Some(ack) = ack {
                let _ = ack.send(Applied::Done(Err(EngineError::Storage(format!(
                    "not published: {reason}"
                )))));
            }
            return Ok(());
        }
        let permit = Arc::clone(&self.in_flight)
            .acquire_owned()
            .await
            .map_err(|_| EngineError::Closed)?;
        let publish_until = Instant::now() + self.timeout;
        let (header, deadline_micros) = self.header(connection);
        wire::settle(&mut input);
        let payload = wire::encode_published(&input, &header);
        // The size the client negotiated (`server_info()` would clone the whole INFO per input).
        let max_payload = self.jetstream.client().max_payload();
        if max_payload > 0 && payload.len() > max_payload {
            // NATS would refuse it (and drop the connection): refused here, nothing published.
            Counters::add(&self.counters.cluster.publish_failures, 1);
            if let Some(ack) = ack {
                let _ = ack.send(Applied::Done(Err(EngineError::Storage(format!(
                    "input of {} bytes (compressed) is larger than the NATS server's max_payload of {max_payload} bytes: send smaller messages, or raise max_payload in nats-server's configuration",
                    payload.len()
                )))));
            }
            return Ok(());
        }
        // Queued in submit order: a connection submits one input at a time, so its inputs reach
        // the stream in the order it sent them unless a retry reorders them (which the
        // consumers' order filter catches). The in-flight place taken above guarantees room.
        self.queue
            .send(Queued {
                payload,
                input,
                header,
                ack,
                permit,
                deadline_micros,
                publish_until,
            })
            .await
            .map_err(|_| EngineError::Closed)
    }
}

/// How many of the inputs at the front of a queue (their encoded sizes, in order) go into the
/// next stream message: at most `max_inputs`, and as many as fit in `max_bytes` once put
/// together ([`wire::encode_message`]) — but always the first, which fits alone (inputs past
/// the NATS server's `max_payload` are refused before they are queued).
fn fit(sizes: impl IntoIterator<Item = usize>, max_inputs: usize, max_bytes: usize) -> usize {
    let mut taken = 0;
    let mut bytes = 1;
    for size in sizes.into_iter().take(max_inputs) {
        bytes += wire::message_cost(size);
        if taken > 0 && bytes > max_bytes {
            break;
        }
        taken += 1;
    }
    taken
}

/// The node's publisher task: publishes the queued inputs in queue order, each message holding
/// whatever inputs were waiting when it was made.
struct Coalescer {
    rx: mpsc::Receiver<Queued>,
    settings: Settings,
    /// Number of this process's next message (its message id's last part).
    next_id: u64,
    /// Messages whose first attempt is out ([`MAX_MESSAGES_IN_FLIGHT`]).
    window: Arc<Semaphore>,
}

impl Coalescer {
    async fn run(mut self, stop: CancellationToken) {
        let mut queued = VecDeque::new();
        let mut received = Vec::with_capacity(MAX_MESSAGE_INPUTS);
        loop {
            if queued.is_empty() {
                let count = tokio::select! {
                    count = self.rx.recv_many(&mut received, MAX_MESSAGE_INPUTS) => count,
                    _ = stop.cancelled() => 0,
                };
                if count == 0 {
                    return;
                }
            }
            // Inputs keep arriving while the previous message is out; then they all go.
            let window = tokio::select! {
                permit = Arc::clone(&self.window).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
                _ = stop.cancelled() => return,
            };
            while queued.len() + received.len() < MAX_MESSAGE_INPUTS {
                match self.rx.try_recv() {
                    Ok(input) => received.push(input),
                    Err(_) => break,
                }
            }
            queued.extend(received.drain(..));
            let max_payload = self.settings.jetstream.client().max_payload();
            let max_bytes = if max_payload == 0 {
                MAX_MESSAGE_BYTES
            } else {
                max_payload.min(MAX_MESSAGE_BYTES)
            };
            let count = fit(
                queued.iter().map(|q: &Queued| q.payload.len()),
                MAX_MESSAGE_INPUTS,
                max_bytes,
            );
            let message: Vec<Queued> = queued.drain(..count).collect();
            self.publish(message, window).await;
        }
    }

    /// Publishes one message of `inputs`: registers the waiting ones, hands the first attempt
    /// to the NATS client (in queue order), and leaves the acknowledgement and any retries to a
    /// task of its own, so the next message is made meanwhile.
    async fn publish(&mut self, inputs: Vec<Queued>, window: OwnedSemaphorePermit) {
        let settings = &self.settings;
        let id = format!("{}-{}", settings.id_prefix, self.next_id);
        self.next_id += 1;
        let payloads: Vec<bytes::Bytes> = inputs.iter().map(|q| q.payload.clone()).collect();
        let payload = wire::encode_message(&payloads);
        drop(payloads);
        let publish_until = inputs
            .iter()
            .map(|q| q.publish_until)
            .min()
            .unwrap_or_else(|| Instant::now() + settings.timeout);
        Counters::add(&settings.counters.cluster.messages_published, 1);
        Counters::add(
            &settings.counters.cluster.inputs_published,
            inputs.len() as u64,
        );
        // Registered before publishing: the message can come back from the stream before the
        // publish's own acknowledgement does. Inputs nobody waits for keep their in-flight
        // place until the stream acknowledges them.
        let mut unanswered = Vec::new();
        let waiting = inputs.iter().any(|q| q.ack.is_some());
        let mut waiters = Vec::with_capacity(if waiting { inputs.len() } else { 0 });
        for queued in inputs {
            // Events are kept to be applied from when they come back (ticks and actions
            // are rare: decoded like everyone else's).
            let kept = match queued.input {
                Input::Events(_) if waiting => Some((queued.input, queued.header)),
                _ => None,
            };
            let answer = match queued.ack {
                Some(ack) => Some((ack, queued.permit)),
                None => {
                    unanswered.push(queued.permit);
                    None
                }
            };
            if waiting {
                waiters.push(Waiter {
                    answer,
                    kept,
                    deadline_micros: queued.deadline_micros,
                });
            }
        }
        if waiting {
            settings
                .pending
                .insert(id.clone(), payload.clone(), waiters, publish_until);
        }
        let job = PublishJob {
            jetstream: settings.jetstream.clone(),
            subject: settings.subject.clone(),
            id,
            payload,
            deadline: publish_until,
            pending: Arc::clone(&settings.pending),
            counters: Arc::clone(&settings.counters),
            health: Arc::clone(&settings.health),
        };
        // The first attempt is handed to the NATS client here, in queue order; its
        // acknowledgement is awaited apart.
        let left = publish_until.saturating_duration_since(Instant::now());
        let first = tokio::time::timeout(left, job.send()).await;
        let first = first.unwrap_or_else(|_| Err("timed out".into()));
        tokio::spawn(async move {
            job.run(first, window).await;
            drop(unanswered);
        });
    }
}

/// One stream message on its way into the stream.
struct PublishJob {
    jetstream: jetstream::Context,
    subject: String,
    id: String,
    payload: bytes::Bytes,
    deadline: Instant,
    pending: Arc<Unanswered>,
    counters: Arc<Counters>,
    health: Arc<Health>,
}

/// Pause between attempts of a publish whose acknowledgement did not come.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

impl PublishJob {
    /// Hands one attempt to the NATS client; what it returns awaits the stream's answer.
    async fn send(&self) -> Result<jetstream::context::PublishAckFuture, String> {
        let publish = PublishMessage::build()
            .payload(self.payload.clone())
            .message_id(&self.id);
        self.jetstream
            .send_publish(self.subject.clone(), publish)
            .await
            .map_err(|e| e.to_string())
    }

    /// Publishes until the stream acknowledges or the deadline passes. Every attempt carries the
    /// same message id, so an attempt stored after all is not stored twice. `first`: the first
    /// attempt, already handed to the client (see [`Coalescer::publish`]); `window`: its place
    /// among the messages out, given back once that attempt is answered (retries do not hold
    /// the next message back).
    async fn run(
        self,
        first: Result<jetstream::context::PublishAckFuture, String>,
        window: OwnedSemaphorePermit,
    ) {
        let started = Instant::now();
        let mut last_error = String::from("timed out");
        let mut first = Some(first);
        let mut window = Some(window);
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let sent = first.take();
            let attempt = async {
                let ack = match sent {
                    Some(sent) => sent?,
                    None => self.send().await?,
                };
                ack.await.map_err(|e| e.to_string())
            };
            let outcome = tokio::time::timeout(left, attempt).await;
            drop(window.take());
            match outcome {
                Ok(Ok(ack)) => {
                    self.counters
                        .cluster
                        .publish_seconds
                        .observe(started.elapsed());
                    ClusterMetrics::raise(&self.counters.cluster.stream_seq, ack.sequence);
                    self.pending.stored(&self.id, ack.sequence);
                    return;
                }
                Ok(Err(error)) => last_error = error,
                Err(_) => break,
            }
            tokio::time::sleep(RETRY_PAUSE.min(left)).await;
        }
        drop(window);
        Counters::add(&self.counters.cluster.publish_failures, 1);
        self.health.note_publish_failure(&last_error);
        tracing::warn!(id = %self.id, error = %last_error, "publish to the cluster stream failed; its senders are answered once the stream passes their deadlines");
        self.pending.publish_failed(
            &self.id,
            &format!("NATS did not acknowledge within the --cluster-timeout ({last_error})"),
        );
        self.mark_deadline_passed().await;
    }

    /// Publishes an empty input after the deadline: once the consumer reads it (or anything
    /// stored later), the message is known never to apply anywhere, and its senders are told so
    /// ("not applied") instead of waiting for the bound's "not confirmed". Best effort: NATS may
    /// still be away.
    async fn mark_deadline_passed(&self) {
        let publish = PublishMessage::build()
            .payload(wire::encode_input(&Input::Events(Vec::new())))
            .message_id(format!("{}-late", self.id));
        let attempt = async {
            self.jetstream
                .send_publish(self.subject.clone(), publish)
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        };
        let timeout = self.pending.timeout();
        if let Ok(Err(error)) = tokio::time::timeout(timeout, attempt).await {
            tracing::debug!(id = %self.id, %error, "deadline marker not published");
        }
    }
}

impl Sequencer for StreamSequencer {
    fn submit<'a>(
        &'a self,
        input: Input,
        ack: Option<oneshot::Sender<Applied>>,
        connection: Option<&'a Arc<Connection>>,
    ) -> SubmitFuture<'a> {
        Box::pin(self.publish(input, ack, connection))
    }

    fn unavailable(&self) -> Option<String> {
        self.health.unavailable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_takes_what_waits_within_its_bounds() {
        // Everything waiting, when it fits.
        assert_eq!(fit([100; 10], MAX_MESSAGE_INPUTS, 1 << 20), 10);
        // At most so many inputs.
        assert_eq!(
            fit([10; 5000], MAX_MESSAGE_INPUTS, 1 << 20),
            MAX_MESSAGE_INPUTS
        );
        // As many as fit in the bytes: each input costs its bytes, its key and its length;
        // the message its first byte.
        let cost = wire::message_cost(100);
        assert_eq!(cost, 102);
        assert_eq!(fit([100; 10], 1024, 1 + 3 * cost), 3);
        assert_eq!(fit([100; 10], 1024, 1 + 3 * cost - 1), 2);
        // The first input always goes (alone it is its own message, checked at submit).
        assert_eq!(fit([5000, 10], 1024, 1000), 1);
        // Nothing waiting, nothing taken.
        assert_eq!(fit([], 1024, 1000), 0);
    }
}
