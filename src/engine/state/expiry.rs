//! The expiry heap: when each indexed key is next due, earliest first.
//!
//! Rescheduled lazily by the state machine (see [`super::Engine`]): an item may be stale (its key
//! gone or moved) or early; the engine checks each against its entry when it comes up.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::key::Key;

/// An expiry heap item: due `at`, ordered by (time, key) like the ordered set it replaces, so
/// keys due at the same time expire in the same order.
#[derive(Debug)]
pub(super) struct Due {
    pub(super) at: i64,
    pub(super) key: Key,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        self.at
            .cmp(&other.at)
            .then_with(|| self.key.parts().cmp(&other.key.parts()))
    }
}

/// A min-heap of [`Due`] items.
#[derive(Debug, Default)]
pub(super) struct ExpiryHeap(BinaryHeap<Reverse<Due>>);

impl ExpiryHeap {
    pub(super) fn push(&mut self, at: i64, key: Key) {
        self.0.push(Reverse(Due { at, key }));
    }

    /// The earliest item.
    pub(super) fn peek(&self) -> Option<&Due> {
        self.0.peek().map(|Reverse(due)| due)
    }

    pub(super) fn pop(&mut self) -> Option<Due> {
        self.0.pop().map(|Reverse(due)| due)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}
