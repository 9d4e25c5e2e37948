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

use async_nats::jetstream;
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::stream::Stream;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::pending::{Returned, Unanswered, WaitingAck};
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
    /// Where this node stands in the stream.
    pub(super) position: Position,
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
            let before = self.position.next();
            match self.follow(&shutdown, &force_stop).await {
                Ok(()) => break,
                Err(error) => {
                    self.health.not_following(error.clone());
                    if self.position.next() > before {
                        failures = 0;
                    }
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(%error, next = self.position.next(), "cluster stream consumer failed; recreating it until NATS answers");
                    } else {
                        tracing::debug!(%error, next = self.position.next(), failures, "cluster stream consumer still failing");
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
        tracing::debug!(
            next = self.position.next(),
            "cluster stream consumer stopped"
        );
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
        self.position.after_silence(last)
    }

    /// A message at `sequence` came while an earlier one was expected: `Err` (the consumer is
    /// re-created from where this node stands) unless the stream says it no longer holds the
    /// expected one — then what was lost — or cannot say so within [`STALL_CHECK`].
    async fn check_trimmed(&self, sequence: u64) -> Result<String, String> {
        let next = self.position.next();
        let info = tokio::time::timeout(STALL_CHECK, self.stream.get_info())
            .await
            .map_err(|_| format!("message {sequence} came before {next} and the stream's state did not come within {STALL_CHECK:?}"))?
            .map_err(|e| format!("message {sequence} came before {next} and the stream's state cannot be read: {e}"))?;
        self.position.gap(sequence, info.state.first_sequence)
    }

    /// Follows the stream from where this node stands; `Ok` once it is time to stop.
    async fn follow(
        &mut self,
        shutdown: &CancellationToken,
        force_stop: &CancellationToken,
    ) -> Result<(), String> {
        let consumer = self
            .stream
            .create_consumer(pull::OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: self.position.next(),
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
            if let Flow::Stop = self.take(&message).await? {
                return Ok(());
            }
        }
    }

    /// One delivered message: applied when it is the next one, skipped when seen already; a gap
    /// (messages this node never applied are gone) or a stopped engine ends the following.
    async fn take(&mut self, message: &jetstream::Message) -> Result<Flow, String> {
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
        match self.position.delivered(sequence) {
            Delivered::Again => return Ok(Flow::Continue),
            Delivered::Next => {}
            Delivered::Gap => {
                // Applying what follows would compute a different index than the others.
                let lost = self.check_trimmed(sequence).await?;
                tracing::error!("{lost}");
                self.health.diverged(lost);
                return Ok(Flow::Stop);
            }
        }
        let inputs = self.logged_inputs(message, sequence, stored_micros).await;
        if self.engine.apply_logged(inputs, sequence).await.is_err() {
            return Ok(Flow::Stop);
        }
        self.pending.stream_time(stored_micros);
        self.position.applied(sequence);
        ClusterMetrics::raise(&self.counters.cluster.applied_seq, sequence);
        self.health.applied(sequence);
        Ok(Flow::Continue)
    }

    /// A message's inputs as the engine takes them: each with its stamp (stored time, deadline,
    /// origin) and, for this node's own, the sender waiting for its answer.
    async fn logged_inputs(
        &mut self,
        message: &jetstream::Message,
        sequence: u64,
        stored_micros: i64,
    ) -> Vec<Logged> {
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
        inputs
    }
}

/// After one message: go on following, or stop (shutdown, a lost stretch, the engine gone).
enum Flow {
    Continue,
    Stop,
}

/// Where this node stands in the stream, and the decisions of following it that need no I/O:
/// what a delivered message is to this node, whether a silence is a stall, whether a gap is a
/// loss. [`Consumer::follow`] is the I/O around it (the NATS consumer, the stream's state, the
/// engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Position {
    /// The first stream sequence not yet applied.
    next: u64,
}

/// What a delivered message is to this node ([`Position::delivered`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivered {
    /// Applied already (a consumer re-created at an older point): never applied twice.
    Again,
    /// The one expected: to be applied.
    Next,
    /// Past the one expected: messages were skipped — gone from the stream (trimmed by age or
    /// size), or only not delivered (a consumer re-created during a failover). Only the stream's
    /// own first sequence tells them apart ([`Position::gap`]).
    Gap,
}

impl Position {
    /// A node whose engine covers the stream up to `applied` (0: nothing).
    pub(super) fn after(applied: u64) -> Self {
        Self { next: applied + 1 }
    }

    /// The first stream sequence not yet applied: where a consumer starts.
    pub(super) fn next(&self) -> u64 {
        self.next
    }

    pub(super) fn delivered(&self, sequence: u64) -> Delivered {
        match sequence.cmp(&self.next) {
            std::cmp::Ordering::Less => Delivered::Again,
            std::cmp::Ordering::Equal => Delivered::Next,
            std::cmp::Ordering::Greater => Delivered::Gap,
        }
    }

    /// The message at `sequence` was handed to the engine.
    pub(super) fn applied(&mut self, sequence: u64) {
        self.next = sequence + 1;
    }

    /// No message came for a while and the stream's last sequence is `last`: `Err` (a stall:
    /// the consumer is re-created) when this node is behind it.
    pub(super) fn after_silence(&self, last: u64) -> Result<(), String> {
        if last >= self.next {
            return Err(format!(
                "no message for {STALL_CHECK:?} while the stream is at {last} and this node at {}",
                self.next.saturating_sub(1)
            ));
        }
        Ok(())
    }

    /// A message at `sequence` came past the expected one, and the stream starts at `first`:
    /// `Err` (read again) while it still holds the expected one, else `Ok` with what was lost.
    pub(super) fn gap(&self, sequence: u64, first: u64) -> Result<String, String> {
        if first <= self.next {
            return Err(format!(
                "message {sequence} came before {}, which the stream still holds (it starts at {first}): reading again",
                self.next
            ));
        }
        Ok(format!(
            "stream messages {}..{} were removed before this node applied them (stream trimmed); restart the node to start from the newest snapshot",
            self.next,
            sequence - 1
        ))
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
) -> Vec<(Input, wire::Header, Option<WaitingAck>)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_applies_each_message_once_in_stream_order() {
        let mut position = Position::after(0);
        assert_eq!(position.next(), 1);
        assert_eq!(position.delivered(1), Delivered::Next);
        position.applied(1);
        assert_eq!(position.next(), 2);
        // A consumer re-created at an older point delivers what was applied again.
        assert_eq!(position.delivered(1), Delivered::Again);
        assert_eq!(position.delivered(2), Delivered::Next);
        assert_eq!(position.delivered(4), Delivered::Gap);
        // Started from an image: the message after it.
        assert_eq!(Position::after(41).delivered(42), Delivered::Next);
    }

    #[test]
    fn silence_is_a_stall_only_while_the_stream_is_ahead() {
        let mut position = Position::after(0);
        position.applied(7);
        assert!(position.after_silence(7).is_ok(), "caught up: idle");
        let stall = position.after_silence(8).unwrap_err();
        assert!(
            stall.contains("stream is at 8 and this node at 7"),
            "{stall}"
        );
    }

    #[test]
    fn a_gap_is_a_loss_only_once_the_stream_no_longer_holds_it() {
        let position = Position::after(9);
        // Message 12 came while 10 was expected, and the stream still starts at or before 10:
        // only not delivered (a failover): read again.
        for first in [1, 10] {
            let again = position.gap(12, first).unwrap_err();
            assert!(again.contains("reading again"), "{again}");
        }
        // The stream starts past 10: 10 and 11 are gone.
        let lost = position.gap(12, 11).unwrap();
        assert!(
            lost.contains("stream messages 10..11 were removed"),
            "{lost}"
        );
    }
}
