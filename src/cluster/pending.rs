//! This node's inputs that were published and wait for their answer: the meeting point of the
//! sequencer (which registers each message before publishing), the consumer (which hands the
//! waiting acknowledgements to the engine with the inputs when their message comes back from the
//! stream) and a clock that answers whatever waited too long.
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

/// Where an input's sender waits for its answer.
pub(super) type WaitingAck = oneshot::Sender<Applied>;

/// An input as its publisher had it, with its header (see [`Waiter::kept`]).
pub(super) type Kept = (Input, wire::Header);

/// One input of a published message, as this node keeps it until it is answered.
pub(super) struct Waiter {
    /// Its acknowledgement and its place of the sequencer's in-flight limit, until the answer
    /// (`None`: nobody waits for it, or it was answered already).
    pub(super) answer: Option<(oneshot::Sender<Applied>, OwnedSemaphorePermit)>,
    /// The input itself, when the publisher kept it: when the stream hands back exactly the
    /// bytes published, it is applied from this form instead of being decoded again (decoding
    /// was most of what a cluster node spent beyond a single one). Sound because the input was
    /// [`wire::settle`]d before encoding, so decoding the bytes gives this very input on every
    /// node.
    pub(super) kept: Option<Kept>,
    /// Stored after this (µs since the epoch), no node applies it.
    pub(super) deadline_micros: i64,
}

/// One published message waiting for its inputs' answers.
struct Waiting {
    /// The payload as published (shared with the publish, not copied).
    payload: bytes::Bytes,
    /// Its inputs, in message order.
    inputs: Vec<Waiter>,
    /// When its senders are answered at the latest.
    answer_by: Instant,
    /// The stream sequence it was stored at, once the stream acknowledged it.
    stored: Option<u64>,
    /// Why its publish was given up, if it was.
    failed: Option<String>,
}

impl Waiting {
    /// The earliest deadline of an input still waiting for its answer.
    fn earliest_deadline(&self) -> Option<i64> {
        self.inputs
            .iter()
            .filter(|w| w.answer.is_some())
            .map(|w| w.deadline_micros)
            .min()
    }
}

/// A message of this node's that came back from the stream (see [`Unanswered::take`]).
pub(super) struct Returned {
    pub(super) payload: bytes::Bytes,
    pub(super) inputs: Vec<Waiter>,
}

impl Returned {
    /// Each input's acknowledgement (in message order), and the inputs with their headers if
    /// `payload` (what the stream delivered) is what was published and every one was kept.
    pub(super) fn split(self, payload: &[u8]) -> (Vec<Option<WaitingAck>>, Option<Vec<Kept>>) {
        let matching = self.payload.as_ref() == payload;
        let mut acks = Vec::with_capacity(self.inputs.len());
        let mut kept = Vec::with_capacity(self.inputs.len());
        for waiter in self.inputs {
            acks.push(waiter.answer.map(|(ack, _permit)| ack));
            kept.push(waiter.kept);
        }
        let kept = if matching {
            kept.into_iter().collect::<Option<Vec<_>>>()
        } else {
            None
        };
        (acks, kept)
    }
}

/// Inputs published by this node and not yet answered, by the message that carries them. Each
/// holds a permit of the sequencer's in-flight limit until it is answered, so the map is
/// bounded.
pub(crate) struct Unanswered {
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

impl Unanswered {
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

    /// Registers the message published as `id` (`payload`, carrying `inputs` in order), whose
    /// publish is given up at `publish_until`.
    pub(super) fn insert(
        &self,
        id: String,
        payload: bytes::Bytes,
        inputs: Vec<Waiter>,
        publish_until: Instant,
    ) {
        let waiting = Waiting {
            payload,
            inputs,
            answer_by: publish_until + self.timeout,
            stored: None,
            failed: None,
        };
        let earliest = waiting.earliest_deadline();
        if let Ok(mut map) = self.waiting.lock() {
            map.insert(id, waiting);
            if let Some(earliest) = earliest {
                self.earliest_deadline
                    .fetch_min(earliest, Ordering::Relaxed);
            }
        }
    }

    /// The stream acknowledged `id` at `sequence`: its answers wait at most one timeout more.
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

    /// The message published as `id`, if this node is waiting for it: its inputs' waiting
    /// acknowledgements, and the inputs it kept.
    pub(super) fn take(&self, id: &str) -> Option<Returned> {
        let mut waiting = self.waiting.lock().ok()?;
        waiting.remove(id).map(|waiting| Returned {
            payload: waiting.payload,
            inputs: waiting.inputs,
        })
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
        let mut gone = Vec::new();
        if let Ok(mut map) = self.waiting.lock() {
            // Stored messages are answered by the engine or the bound, not by the stream's
            // time: only the unstored ones count.
            let mut earliest = i64::MAX;
            map.retain(|_, waiting| {
                if waiting.stored.is_some() {
                    return true;
                }
                for input in &mut waiting.inputs {
                    if input.deadline_micros < now {
                        if let Some((ack, _permit)) = input.answer.take() {
                            gone.push((ack, waiting.failed.clone()));
                        }
                    }
                }
                match waiting.earliest_deadline() {
                    Some(deadline) => {
                        earliest = earliest.min(deadline);
                        true
                    }
                    // Nobody waits for it any more: if it lands later, it is decoded and
                    // dropped as late like everyone else's.
                    None => false,
                }
            });
            self.earliest_deadline.store(earliest, Ordering::Relaxed);
        }
        for (ack, failed) in gone {
            let why = match failed {
                Some(error) => format!("not in the cluster stream by its deadline ({error}); if it lands later no node applies it; send again"),
                None => "not in the cluster stream by its deadline; if it lands later no node applies it; send again".to_owned(),
            };
            let _ = ack.send(Applied::Done(Err(EngineError::NotApplied(why))));
        }
    }

    /// Answers every input whose bound passed by `now` with what is known of it; `applied`:
    /// the last stream sequence this node applied.
    fn answer_overdue(&self, now: Instant, applied: u64) {
        for waiting in self.remove(|w| w.answer_by <= now) {
            for (ack, _permit) in waiting.inputs.into_iter().filter_map(|w| w.answer) {
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
                let _ = ack.send(Applied::Done(Err(EngineError::Unconfirmed(why))));
            }
        }
    }

    /// Takes out every waiting message `which` selects.
    fn remove(&self, which: impl Fn(&Waiting) -> bool) -> Vec<Waiting> {
        match self.waiting.lock() {
            Ok(mut map) => {
                let ids: Vec<String> = map
                    .iter()
                    .filter(|(_, w)| which(w))
                    .map(|(id, _)| id.clone())
                    .collect();
                ids.iter().filter_map(|id| map.remove(id)).collect()
            }
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
            for (ack, _permit) in waiting.inputs.into_iter().filter_map(|w| w.answer) {
                let _ = ack.send(Applied::Done(Err(EngineError::Unconfirmed(format!(
                    "not applied by this node: {reason}; it may be in the stream (another node applies it); send again"
                )))));
            }
        }
    }
}

/// Answers overdue inputs until `stop`: the bound of every answer (see the module doc).
pub(super) async fn answer_overdue(pending: Arc<Unanswered>, stop: CancellationToken) {
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

    async fn waiter(
        permits: &Arc<Semaphore>,
        deadline_micros: i64,
    ) -> (Waiter, oneshot::Receiver<Applied>) {
        let (tx, rx) = oneshot::channel();
        let permit = Arc::clone(permits).acquire_owned().await.unwrap();
        let waiter = Waiter {
            answer: Some((tx, permit)),
            kept: None,
            deadline_micros,
        };
        (waiter, rx)
    }

    #[tokio::test]
    async fn the_inputs_of_one_message_are_answered_each_by_its_own_deadline() {
        let counters = Arc::new(Counters::default());
        let pending = Unanswered::new(Duration::from_secs(1), Arc::clone(&counters));
        let permits = Arc::new(Semaphore::new(3));
        let (first, mut first_rx) = waiter(&permits, 100).await;
        let (second, mut second_rx) = waiter(&permits, 200).await;
        let unwaited = Waiter {
            answer: None,
            kept: None,
            deadline_micros: 50,
        };
        pending.insert(
            "m".into(),
            bytes::Bytes::from_static(b"published"),
            vec![first, unwaited, second],
            Instant::now(),
        );
        // Past the first input's deadline only: the second still waits for the stream.
        pending.stream_time(150);
        assert!(matches!(
            answer(&mut first_rx),
            Some(Err(EngineError::NotApplied(_)))
        ));
        assert!(answer(&mut second_rx).is_none());
        assert_eq!(permits.available_permits(), 2, "the first's place is free");
        assert!(!pending.is_empty());
        // The message comes back: the second's acknowledgement is handed over, in its place
        // (the first was answered, the middle one had none).
        let returned = pending.take("m").expect("still waiting");
        let (acks, kept) = returned.split(b"published");
        assert_eq!(
            acks.iter().map(Option::is_some).collect::<Vec<_>>(),
            [false, false, true]
        );
        assert!(kept.is_none(), "nothing was kept: decoded like any message");
        assert!(pending.is_empty());
        // Past every deadline, nothing is left waiting either.
        let (third, mut third_rx) = waiter(&permits, 300).await;
        pending.insert("n".into(), bytes::Bytes::new(), vec![third], Instant::now());
        pending.stream_time(301);
        assert!(matches!(
            answer(&mut third_rx),
            Some(Err(EngineError::NotApplied(_)))
        ));
        assert!(
            pending.is_empty(),
            "a message nobody waits for is forgotten"
        );
    }

    #[test]
    fn kept_inputs_are_used_only_for_the_bytes_published() {
        let kept = |n: usize| Waiter {
            answer: None,
            kept: Some((Input::Events(Vec::new()), wire::Header::default())),
            deadline_micros: n as i64,
        };
        let returned = || Returned {
            payload: bytes::Bytes::from_static(b"published"),
            inputs: vec![kept(1), kept(2)],
        };
        assert_eq!(returned().split(b"published").1.map(|k| k.len()), Some(2));
        assert!(returned().split(b"something else").1.is_none());
        let mut partly = returned();
        partly.inputs[1].kept = None;
        assert!(partly.split(b"published").1.is_none(), "all or none");
    }

    #[tokio::test]
    async fn every_waiting_input_is_answered_by_the_streams_time_or_the_bound() {
        let counters = Arc::new(Counters::default());
        let pending = Unanswered::new(Duration::from_secs(1), Arc::clone(&counters));
        let permits = Arc::new(Semaphore::new(2));
        let start = Instant::now();
        let mut waiting = Vec::new();
        for (id, deadline) in [("a", 100), ("b", 200)] {
            let (waiter, rx) = waiter(&permits, deadline).await;
            pending.insert(id.into(), bytes::Bytes::new(), vec![waiter], start);
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
