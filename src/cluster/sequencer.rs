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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use tokio::sync::{oneshot, Semaphore};

use super::pending::{Kept, Pending};
use super::wire;
use super::Health;
use crate::engine::{Applied, Connection, EngineError, Input, Sequencer, SubmitFuture};
use crate::event::now_micros;
use crate::metrics::{ClusterMetrics, Counters};

pub(super) struct Publisher {
    pub(super) jetstream: jetstream::Context,
    pub(super) subject: String,
    /// Prefix of this process's message ids: node id plus start time, so ids never repeat
    /// across restarts within the stream's duplicate window.
    pub(super) id_prefix: String,
    pub(super) next_id: AtomicU64,
    pub(super) pending: Arc<Pending>,
    /// Inputs published and not yet answered, across all connections: senders wait at the
    /// limit (backpressure, like the engine queue in single-node mode).
    pub(super) in_flight: Arc<Semaphore>,
    pub(super) timeout: Duration,
    pub(super) counters: Arc<Counters>,
    pub(super) health: Arc<Health>,
}

impl Publisher {
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
        let id = format!(
            "{}-{}",
            self.id_prefix,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
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
        // Registered before publishing: the input can come back from the stream before the
        // publish's own acknowledgement does.
        let permit = match ack {
            Some(ack) => {
                // Events are kept to be applied from when they come back (ticks and actions
                // are rare: decoded like everyone else's).
                let kept = match input {
                    Input::Events(_) => Some(Kept {
                        payload: payload.clone(),
                        input,
                        header,
                    }),
                    _ => None,
                };
                self.pending.insert(
                    id.clone(),
                    ack,
                    kept,
                    permit,
                    deadline_micros,
                    publish_until,
                );
                None
            }
            None => Some(permit),
        };
        let job = PublishJob {
            jetstream: self.jetstream.clone(),
            subject: self.subject.clone(),
            id,
            payload,
            deadline: publish_until,
            pending: Arc::clone(&self.pending),
            counters: Arc::clone(&self.counters),
            health: Arc::clone(&self.health),
        };
        // The first attempt is handed to the NATS client here, in submit order: a connection's
        // inputs then reach the stream in the order it sent them unless a retry reorders them
        // (which the consumers' order filter catches). Its acknowledgement is awaited apart, so
        // a connection can send its next input (and a pipelining client keeps its pipe full)
        // while this one is being stored.
        let first = tokio::time::timeout(self.timeout, job.send()).await;
        let first = first.unwrap_or_else(|_| Err("timed out".into()));
        tokio::spawn(async move {
            job.run(first).await;
            drop(permit);
        });
        Ok(())
    }
}

/// One input on its way into the stream.
struct PublishJob {
    jetstream: jetstream::Context,
    subject: String,
    id: String,
    payload: bytes::Bytes,
    deadline: Instant,
    pending: Arc<Pending>,
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
    /// attempt, already handed to the client (see [`Publisher::publish`]).
    async fn run(self, first: Result<jetstream::context::PublishAckFuture, String>) {
        let started = Instant::now();
        let mut last_error = String::from("timed out");
        let mut first = Some(first);
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
            match tokio::time::timeout(left, attempt).await {
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
        Counters::add(&self.counters.cluster.publish_failures, 1);
        self.health.note_publish_failure(&last_error);
        tracing::warn!(id = %self.id, error = %last_error, "publish to the cluster stream failed; its sender is answered once the stream passes its deadline");
        self.pending.publish_failed(
            &self.id,
            &format!("NATS did not acknowledge within the --cluster-timeout ({last_error})"),
        );
        self.mark_deadline_passed().await;
    }

    /// Publishes an empty input after the deadline: once the consumer reads it (or anything
    /// stored later), the input is known never to apply anywhere, and its sender is told so
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

impl Sequencer for Publisher {
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
