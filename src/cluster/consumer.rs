//! The engine's side of cluster mode: every input of the stream, in stream order, handed to the
//! local engine with its stream sequence as position.
//!
//! The ordered consumer is recreated from the next position whenever it fails (NATS away, a
//! server of a NATS cluster gone), so a node resumes exactly where it stopped. A message may hold
//! several inputs ([`wire::encode_message`]): all of them are handed to the engine at once, at
//! the message's sequence, so the position an image records is always that of a whole message.
//! Inputs this node published are handed over with their waiting acknowledgements
//! ([`super::pending::Unanswered`]); everyone else's without one.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::stream::Stream;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::pending::{Ack, Returned, Unanswered};
use super::wire;
use super::Health;
use crate::engine::order::Stamp;
use crate::engine::{EngineHandle, Input, Logged};
use crate::metrics::{ClusterMetrics, Counters};

/// Pause before recreating a consumer that failed.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// How often a shutting-down consumer looks whether this node's publishes are all answered.
const DRAIN_CHECK: Duration = Duration::from_millis(50);

/// How long the consumer waits for a message before it asks the stream whether it is behind,
/// and how long it waits for that answer.
/// The server that holds an ordered consumer (R1, on one server of a NATS cluster) can die with
/// it; the client only notices after missed heartbeats and then recreates it under a name the
/// dead server may still be assigned, which can hang for good. A consumer that is behind the
/// stream and hears nothing is replaced by a fresh one here instead. A question about the stream
/// that gets no answer (a link that stopped forwarding without closing) is a stall too: so a
/// node that stops following is not ready within 2 × this (plus the pass of one input).
pub(super) const STALL_CHECK: Duration = Duration::from_secs(2);

pub(super) struct Consumer {
    pub(super) stream: Stream,
    pub(super) engine: EngineHandle,
    pub(super) pending: Arc<Unanswered>,
    pub(super) counters: Arc<Counters>,
    pub(super) health: Arc<Health>,
    /// The first stream sequence not yet applied.
    pub(super) next: u64,
}

impl Consumer {
    /// Runs until shutdown — and after it, while this node still waits for its own publishes
    /// to come back (their senders are owed an answer), until `force_stop`.
    pub(super) async fn run(mut self, shutdown: CancellationToken, force_stop: CancellationToken) {
        // Failures in a row: the first of an outage is a warning, the retries are not news.
        let mut failures = 0u32;
        loop {
            if force_stop.is_cancelled() || (shutdown.is_cancelled() && self.pending.is_empty()) {
                break;
            }
            let before = self.next;
            match self.follow(&shutdown, &force_stop).await {
                Ok(()) => break,
                Err(error) => {
                    self.health.not_following(error.clone());
                    if self.next > before {
                        failures = 0;
                    }
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(%error, next = self.next, "cluster stream consumer failed; recreating it until NATS answers");
                    } else {
                        tracing::debug!(%error, next = self.next, failures, "cluster stream consumer still failing");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY_PAUSE) => {}
                        _ = force_stop.cancelled() => break,
                    }
                }
            }
        }
        // Publishes from now on are refused at once, and those waiting are answered.
        self.health
            .diverged("this node stopped following the cluster stream".into());
        self.pending
            .fail_all("this node stopped following the cluster stream");
        tracing::debug!(next = self.next, "cluster stream consumer stopped");
    }

    /// No message came for [`STALL_CHECK`]: asks the stream where it stands (the server's view,
    /// which is what the lag metric counts from) and fails when this node is behind it or the
    /// question goes unanswered — the consumer is then re-created.
    async fn check_stall(&self) -> Result<(), String> {
        let info = tokio::time::timeout(STALL_CHECK, self.stream.get_info())
            .await
            .map_err(|_| {
                format!("no message for {STALL_CHECK:?} and no answer about the stream within {STALL_CHECK:?}")
            })?
            .map_err(|e| format!("no message for {STALL_CHECK:?} and the stream's state cannot be read: {e}"))?;
        let last = info.state.last_sequence;
        ClusterMetrics::raise(&self.counters.cluster.stream_seq, last);
        if last >= self.next {
            return Err(format!(
                "no message for {STALL_CHECK:?} while the stream is at {last} and this node at {}",
                self.next.saturating_sub(1)
            ));
        }
        Ok(())
    }

    /// A message at `sequence` came while `self.next` was expected: `Err` (the consumer is
    /// re-created from `self.next`) unless the stream says it no longer holds `self.next`, or
    /// cannot say so within [`STALL_CHECK`].
    async fn check_trimmed(&self, sequence: u64) -> Result<(), String> {
        let info = tokio::time::timeout(STALL_CHECK, self.stream.get_info())
            .await
            .map_err(|_| format!("message {sequence} came before {} and the stream's state did not come within {STALL_CHECK:?}", self.next))?
            .map_err(|e| format!("message {sequence} came before {} and the stream's state cannot be read: {e}", self.next))?;
        if info.state.first_sequence <= self.next {
            return Err(format!(
                "message {sequence} came before {}, which the stream still holds (it starts at {}): reading again",
                self.next, info.state.first_sequence
            ));
        }
        Ok(())
    }

    /// Follows the stream from `self.next`; `Ok` once it is time to stop.
    async fn follow(
        &mut self,
        shutdown: &CancellationToken,
        force_stop: &CancellationToken,
    ) -> Result<(), String> {
        let consumer = self
            .stream
            .create_consumer(pull::OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: self.next,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot create the ordered consumer: {e}"))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| format!("cannot read the stream: {e}"))?;
        self.health.following();
        let mut drain = tokio::time::interval(DRAIN_CHECK);
        let mut stall = tokio::time::interval(STALL_CHECK);
        loop {
            // The stall window counts waiting only, not applying (a slow input is not a stall).
            stall.reset();
            let message = tokio::select! {
                message = messages.next() => message,
                _ = stall.tick() => {
                    self.check_stall().await?;
                    continue;
                }
                // Wakes an idle consumer when shutdown begins, so the drain check below runs
                // (its branch is only enabled once shutdown is seen).
                _ = shutdown.cancelled(), if !shutdown.is_cancelled() => continue,
                _ = drain.tick(), if shutdown.is_cancelled() => {
                    if self.pending.is_empty() {
                        return Ok(());
                    }
                    continue;
                }
                _ = force_stop.cancelled() => return Ok(()),
            };
            let message = match message {
                Some(Ok(message)) => message,
                Some(Err(error)) => return Err(error.to_string()),
                None => return Err("the stream of messages ended".into()),
            };
            let (sequence, pending, stored_micros) = match message.info() {
                Ok(info) => (
                    info.stream_sequence,
                    info.pending,
                    i64::try_from(info.published.unix_timestamp_nanos() / 1000).unwrap_or(0),
                ),
                Err(error) => return Err(format!("message without stream info: {error}")),
            };
            ClusterMetrics::raise(
                &self.counters.cluster.stream_seq,
                sequence.saturating_add(pending),
            );
            if sequence < self.next {
                // Already applied (a consumer recreated at an older point): never twice.
                continue;
            }
            if sequence > self.next {
                // A message skipped: gone from the stream (trimmed by age or size), or only not
                // delivered (a consumer re-created during a failover). Only the stream's own
                // first sequence tells them apart; while it still holds `next`, read again.
                self.check_trimmed(sequence).await?;
                // Messages this node never applied are gone from the stream (trimmed by age or
                // size): applying what follows would compute a different index than the others.
                let lost = format!(
                    "stream messages {}..{} were removed before this node applied them (stream trimmed); restart the node to start from the newest snapshot",
                    self.next,
                    sequence - 1
                );
                tracing::error!("{lost}");
                self.health.diverged(lost);
                return Ok(());
            }
            let own = message
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .and_then(|id| self.pending.take(id.as_str()));
            let mut inputs = Vec::new();
            for (input, header, ack) in read_message(&message.payload, own, sequence) {
                let stamp = Stamp {
                    stored_micros,
                    deadline_micros: header.deadline_micros,
                    origin: header.origin,
                };
                let input = match input {
                    // A silence's query is compiled off the async workers (`Action::compile`).
                    Input::Action(action) => {
                        let fallback = action.clone();
                        let compiled = tokio::task::spawn_blocking(move || {
                            let mut action = action;
                            action.compile();
                            action
                        })
                        .await;
                        Input::Action(compiled.unwrap_or(fallback))
                    }
                    other => other,
                };
                inputs.push(Logged { input, ack, stamp });
            }
            if self.engine.apply_logged(inputs, sequence).await.is_err() {
                return Ok(());
            }
            self.pending.stream_time(stored_micros);
            self.next = sequence + 1;
            ClusterMetrics::raise(&self.counters.cluster.applied_seq, sequence);
            self.health.applied(sequence);
        }
    }
}

/// The inputs of the stream message `payload` (at `sequence`), in order, each with its header
/// and, when this node published it (`own`), its waiting acknowledgement. This node's own inputs
/// come back as the bytes it published: applied from the form it already has (what decoding
/// them gives, see [`super::pending::Waiter::kept`]). What cannot be read is an empty input in
/// its place: every node reads the same bytes, so every node skips it alike.
fn read_message(
    payload: &[u8],
    own: Option<Returned>,
    sequence: u64,
) -> Vec<(Input, wire::Header, Option<Ack>)> {
    let unreadable = |error: &wire::WireError| {
        tracing::warn!(sequence, %error, "skipping an unreadable stream input");
        (Input::Events(Vec::new()), wire::Header::default())
    };
    let (acks, kept) = match own {
        Some(own) => own.split(payload),
        None => (Vec::new(), None),
    };
    let inputs: Vec<(Input, wire::Header)> = match kept {
        Some(kept) => kept,
        None => match wire::decode_message(payload) {
            Ok(decoded) => decoded
                .into_iter()
                .map(|input| input.unwrap_or_else(|error| unreadable(&error)))
                .collect(),
            Err(error) => vec![unreadable(&error)],
        },
    };
    if !acks.is_empty() && acks.len() != inputs.len() {
        // Not what this node published under that id (cannot happen short of another writer
        // reusing its ids): its acknowledgements are dropped, so its senders get an error
        // rather than another input's outcome.
        tracing::warn!(
            sequence,
            published = acks.len(),
            read = inputs.len(),
            "a stream message under this node's id holds other inputs than it published"
        );
    }
    let mut acks = acks.into_iter();
    let matched = acks.len() == inputs.len();
    inputs
        .into_iter()
        .map(|(input, header)| {
            let ack = if matched { acks.next().flatten() } else { None };
            (input, header, ack)
        })
        .collect()
}
