//! This node's inputs that were published and wait for their answer: the meeting point of the
//! sequencer (which registers each one before publishing) and the consumer (which hands the
//! waiting acknowledgement to the engine with the input when it comes back from the stream).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::engine::{Applied, EngineError};

/// Inputs published by this node and not yet answered. Each holds a permit of
/// the sequencer's in-flight limit until it is answered, so the map is bounded.
#[derive(Default)]
pub(crate) struct Pending {
    waiting: Mutex<HashMap<String, (oneshot::Sender<Applied>, OwnedSemaphorePermit)>>,
}

impl Pending {
    pub(super) fn insert(
        &self,
        id: String,
        ack: oneshot::Sender<Applied>,
        permit: OwnedSemaphorePermit,
    ) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(id, (ack, permit));
        }
    }

    /// The acknowledgement of the input published as `id`, if this node is waiting for it.
    pub(super) fn take(&self, id: &str) -> Option<oneshot::Sender<Applied>> {
        let mut waiting = self.waiting.lock().ok()?;
        waiting.remove(id).map(|(ack, _permit)| ack)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.waiting.lock().map_or(true, |w| w.is_empty())
    }

    /// Answers the input published as `id` with `error` (its publish failed).
    pub(super) fn fail(&self, id: &str, error: &str) {
        if let Some(ack) = self.take(id) {
            let _ = ack.send(Applied::Done(Err(EngineError::Storage(format!(
                "not in the cluster stream: {error}; send again"
            )))));
        }
    }

    /// Answers every input still waiting: this node will not apply them (its consumer stopped),
    /// so their senders must not wait for an answer that cannot come.
    pub(super) fn fail_all(&self, reason: &str) {
        let waiting = match self.waiting.lock() {
            Ok(mut waiting) => std::mem::take(&mut *waiting),
            Err(_) => return,
        };
        for (ack, _permit) in waiting.into_values() {
            let _ = ack.send(Applied::Done(Err(EngineError::Storage(format!(
                "not applied by this node: {reason}; it may be in the stream (another node applies it); send again"
            )))));
        }
    }
}
