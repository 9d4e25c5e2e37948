//! This node's inputs that were published and wait for their answer: the meeting point of the
//! sequencer (which registers each one before publishing), the consumer (which hands the
//! waiting acknowledgement to the engine with the input when it comes back from the stream) and
//! a clock that answers whatever waited too long.
//!
//! Every answer is bounded: an input is answered by the engine when it comes back; "not applied"
//! once the stream's time passes its deadline without it (any later copy is dropped by every
//! node, see [`crate::engine::order`]); and at the latest one `--cluster-timeout` after its
//! publish was acknowledged (or after its publish deadline), with what is known then.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::wire;
use crate::engine::{Applied, EngineError, Input};
use crate::metrics::Counters;

/// What a publishing node keeps of its own input: when the stream hands back exactly these
/// bytes, the input is applied from this form instead of being decoded again (decoding was
/// most of what a cluster node spent beyond a single one). Sound because the input was
/// [`wire::settle`]d before encoding, so decoding the bytes gives this very input on every node.
pub(super) struct Kept {
    /// The payload as published (shared with the publish, not copied).
    pub(super) payload: bytes::Bytes,
    pub(super) input: Input,
    pub(super) header: wire::Header,
}

impl Kept {
    /// The input and header, if `payload` (what the stream delivered) is what was published.
    pub(super) fn matching(self, payload: &[u8]) -> Option<(Input, wire::Header)> {
        (self.payload.as_ref() == payload).then_some((self.input, self.header))
    }
}

/// One input waiting for its answer.
struct Waiting {
    ack: oneshot::Sender<Applied>,
    /// The input itself, when the publisher kept it (see [`Kept`]).
    kept: Option<Kept>,
    /// A place of the sequencer's in-flight limit, held until the answer.
    _permit: OwnedSemaphorePermit,
    /// Stored after this (µs since the epoch), no node applies it.
    deadline_micros: i64,
    /// When its sender is answered at the latest.
    answer_by: Instant,
    /// The stream sequence it was stored at, once the stream acknowledged it.
    stored: Option<u64>,
    /// Why its publish was given up, if it was.
    failed: Option<String>,
}

/// Inputs published by this node and not yet answered. Each holds a permit of
/// the sequencer's in-flight limit until it is answered, so the map is bounded.
pub(crate) struct Pending {
    waiting: Mutex<HashMap<String, Waiting>>,
    /// The stream's time as far as the consumer has read it (µs, never goes back).
    stream_micros: AtomicI64,
    /// No waiting input's deadline is earlier than this (µs): the stream's time passing it is
    /// what makes a look through the waiting inputs worth its cost (not every message).
    earliest_deadline: AtomicI64,
    /// How long an answer may wait for the local apply after the stream acknowledged it.
    timeout: Duration,
    counters: Arc<Counters>,
}

impl Pending {
    pub(super) fn new(timeout: Duration, counters: Arc<Counters>) -> Self {
        Self {
            waiting: Mutex::new(HashMap::new()),
            stream_micros: AtomicI64::new(i64::MIN),
            earliest_deadline: AtomicI64::new(i64::MAX),
            timeout,
            counters,
        }
    }

    /// How long an answer may wait for the local apply after the stream acknowledged it.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Registers the input published as `id`, whose publish is given up at `publish_until`.
    pub(super) fn insert(
        &self,
        id: String,
        ack: oneshot::Sender<Applied>,
        kept: Option<Kept>,
        permit: OwnedSemaphorePermit,
        deadline_micros: i64,
        publish_until: Instant,
    ) {
        let waiting = Waiting {
            ack,
            kept,
            _permit: permit,
            deadline_micros,
            answer_by: publish_until + self.timeout,
            stored: None,
            failed: None,
        };
        if let Ok(mut map) = self.waiting.lock() {
            map.insert(id, waiting);
            self.earliest_deadline
                .fetch_min(deadline_micros, Ordering::Relaxed);
        }
    }

    /// The stream acknowledged `id` at `sequence`: its answer waits at most one timeout more.
    pub(super) fn stored(&self, id: &str, sequence: u64) {
        if let Some(waiting) = self
            .waiting
            .lock()
            .ok()
            .as_mut()
            .and_then(|m| m.get_mut(id))
        {
            waiting.stored = Some(sequence);
            waiting.answer_by = Instant::now() + self.timeout;
        }
    }

    /// The publish of `id` was given up (`error`): the stream's time, or the bound, answers it.
    pub(super) fn publish_failed(&self, id: &str, error: &str) {
        if let Some(waiting) = self
            .waiting
            .lock()
            .ok()
            .as_mut()
            .and_then(|m| m.get_mut(id))
        {
            waiting.failed = Some(error.to_owned());
        }
    }

    /// The acknowledgement of the input published as `id`, if this node is waiting for it,
    /// with the input if it was kept.
    pub(super) fn take(&self, id: &str) -> Option<(oneshot::Sender<Applied>, Option<Kept>)> {
        let mut waiting = self.waiting.lock().ok()?;
        waiting
            .remove(id)
            .map(|waiting| (waiting.ack, waiting.kept))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.waiting.lock().map_or(true, |w| w.is_empty())
    }

    /// The consumer read a message the stream stored at `stored_micros`. Inputs not seen so far
    /// whose deadline is past that time are not applied by any node, even if they land later:
    /// their senders are told so now.
    pub(super) fn stream_time(&self, stored_micros: i64) {
        let before = self
            .stream_micros
            .fetch_max(stored_micros, Ordering::Relaxed);
        let now = before.max(stored_micros);
        if now <= self.earliest_deadline.load(Ordering::Relaxed) {
            return;
        }
        let gone = match self.waiting.lock() {
            Ok(mut map) => {
                let gone = take_where(&mut map, |w| w.stored.is_none() && w.deadline_micros < now);
                // Stored inputs are answered by the engine or the bound, not by the stream's
                // time: only the unstored ones count.
                let earliest = map
                    .values()
                    .filter(|w| w.stored.is_none())
                    .map(|w| w.deadline_micros)
                    .min();
                self.earliest_deadline
                    .store(earliest.unwrap_or(i64::MAX), Ordering::Relaxed);
                gone
            }
            Err(_) => Vec::new(),
        };
        for waiting in gone {
            let why = match &waiting.failed {
                Some(error) => format!("not in the cluster stream by its deadline ({error}); if it lands later no node applies it; send again"),
                None => "not in the cluster stream by its deadline; if it lands later no node applies it; send again".to_owned(),
            };
            let _ = waiting
                .ack
                .send(Applied::Done(Err(EngineError::NotApplied(why))));
        }
    }

    /// Answers every input whose bound passed by `now` with what is known of it; `applied`:
    /// the last stream sequence this node applied.
    fn answer_overdue(&self, now: Instant, applied: u64) {
        for waiting in self.remove(|w| w.answer_by <= now) {
            let why = match (waiting.stored, &waiting.failed) {
                (Some(sequence), _) => {
                    Counters::add(&self.counters.cluster.unconfirmed_stored, 1);
                    format!("stored in the cluster stream (sequence {sequence}), not yet applied on this node (applied up to {applied}) within --cluster-timeout; every node applies it when it gets there (this one once it catches up), unless a later message of the same connection was stored before it")
                }
                (None, failed) => {
                    Counters::add(&self.counters.cluster.unconfirmed_unacknowledged, 1);
                    format!("the cluster stream did not acknowledge it within --cluster-timeout ({}) and this node has not seen it; no node applies it unless the stream stored it before its deadline", failed.as_deref().unwrap_or("no answer"))
                }
            };
            let _ = waiting
                .ack
                .send(Applied::Done(Err(EngineError::Unconfirmed(why))));
        }
    }

    /// Takes out every waiting input `which` selects.
    fn remove(&self, which: impl Fn(&Waiting) -> bool) -> Vec<Waiting> {
        match self.waiting.lock() {
            Ok(mut map) => take_where(&mut map, which),
            Err(_) => Vec::new(),
        }
    }

    /// Answers every input still waiting: this node will not apply them (its consumer stopped),
    /// so their senders must not wait for an answer that cannot come.
    pub(super) fn fail_all(&self, reason: &str) {
        let waiting = match self.waiting.lock() {
            Ok(mut waiting) => std::mem::take(&mut *waiting),
            Err(_) => return,
        };
        for waiting in waiting.into_values() {
            let _ = waiting.ack.send(Applied::Done(Err(EngineError::Unconfirmed(format!(
                "not applied by this node: {reason}; it may be in the stream (another node applies it); send again"
            )))));
        }
    }
}

/// Takes out of `map` every waiting input `which` selects.
fn take_where(
    map: &mut HashMap<String, Waiting>,
    which: impl Fn(&Waiting) -> bool,
) -> Vec<Waiting> {
    let ids: Vec<String> = map
        .iter()
        .filter(|(_, w)| which(w))
        .map(|(id, _)| id.clone())
        .collect();
    ids.iter().filter_map(|id| map.remove(id)).collect()
}

/// Answers overdue inputs until `stop`: the bound of every answer (see the module doc).
pub(super) async fn answer_overdue(pending: Arc<Pending>, stop: CancellationToken) {
    let every = (pending.timeout / 10).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => return,
        }
        let applied = pending.counters.cluster.applied_seq.load(Ordering::Relaxed);
        pending.answer_overdue(Instant::now(), applied);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use tokio::sync::Semaphore;

    fn answer(rx: &mut oneshot::Receiver<Applied>) -> Option<Result<(), EngineError>> {
        match rx.try_recv() {
            Ok(Applied::Done(ack)) => Some(ack),
            Ok(_) => panic!("an unexpected answer"),
            Err(_) => None,
        }
    }

    #[tokio::test]
    async fn every_waiting_input_is_answered_by_the_streams_time_or_the_bound() {
        let counters = Arc::new(Counters::default());
        let pending = Pending::new(Duration::from_secs(1), Arc::clone(&counters));
        let permits = Arc::new(Semaphore::new(2));
        let start = Instant::now();
        let mut waiting = Vec::new();
        for (id, deadline) in [("a", 100), ("b", 200)] {
            let (tx, rx) = oneshot::channel();
            let permit = Arc::clone(&permits).acquire_owned().await.unwrap();
            pending.insert(id.into(), tx, None, permit, deadline, start);
            waiting.push(rx);
        }
        let [a, b] = &mut waiting[..] else {
            unreachable!()
        };
        // The stream's time passes a's deadline without a: no node will ever apply it.
        pending.stream_time(150);
        assert!(matches!(answer(a), Some(Err(EngineError::NotApplied(_)))));
        assert!(answer(b).is_none());
        assert_eq!(permits.available_permits(), 1, "a's place is free again");
        // b is acknowledged: the stream's time no longer answers it, the bound does.
        pending.stored("b", 7);
        pending.stream_time(250);
        assert!(answer(b).is_none());
        pending.answer_overdue(Instant::now() + Duration::from_secs(2), 3);
        match answer(b) {
            Some(Err(EngineError::Unconfirmed(why))) => {
                assert!(why.contains("sequence 7"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            counters.cluster.unconfirmed_stored.load(Ordering::Relaxed),
            1
        );
        assert!(pending.is_empty());
    }
}
