//! The alerts waiting for one Alertmanager: a bounded queue that keeps the newest word on each
//! alert, shared by the deriving task (which pushes, never waits) and that Alertmanager's sender
//! task (which takes batches).
//!
//! Why keyed by the alert's labels: an alert pushed again (a resend, or resolved after firing)
//! replaces the one waiting, so an Alertmanager that is away for an hour costs one entry per
//! alert, not one per resend. Past [`MAX_PENDING`] the oldest waiting alert is dropped first
//! (counted): a firing one comes again at the next resend, a resolved one ends by itself in
//! Alertmanager at the `endsAt` it was last sent with.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;

use super::derive::Alert;
use crate::metrics::AlertmanagerStats;

/// Alerts waiting per Alertmanager (Prometheus's default notification queue is as long).
pub const MAX_PENDING: usize = 10_000;

/// See the module's documentation.
#[derive(Debug)]
pub struct Outbox {
    pending: Mutex<Pending>,
    ready: Notify,
    capacity: usize,
}

/// Alerts in the order they were queued, each at most once.
#[derive(Debug, Default)]
struct Pending {
    /// Queue position → alert.
    order: BTreeMap<i64, Alert>,
    /// An alert's labels → its queue position.
    position: HashMap<BTreeMap<String, String>, i64>,
    /// The next position at the back, and before the front (for a batch put back).
    back: i64,
    front: i64,
}

impl Pending {
    fn insert_at(&mut self, at: i64, alert: Alert) {
        if let Some(old) = self.position.insert(alert.labels.clone(), at) {
            self.order.remove(&old);
        }
        self.order.insert(at, alert);
    }

    /// Drops the oldest alerts past `capacity`; how many.
    fn trim(&mut self, capacity: usize) -> u64 {
        let mut dropped = 0;
        while self.order.len() > capacity {
            if let Some((_, alert)) = self.order.pop_first() {
                self.position.remove(alert.fingerprint());
                dropped += 1;
            }
        }
        dropped
    }
}

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Self {
            pending: Mutex::new(Pending::default()),
            ready: Notify::new(),
            capacity,
        }
    }

    /// Queues `alerts` behind what waits (replacing a waiting alert with the same labels);
    /// drops the oldest past the capacity. Never waits.
    pub fn push(&self, alerts: &[Alert], stats: &AlertmanagerStats) {
        if alerts.is_empty() {
            return;
        }
        let mut pending = self.lock();
        for alert in alerts {
            let at = pending.back;
            pending.back += 1;
            pending.insert_at(at, alert.clone());
        }
        let dropped = pending.trim(self.capacity);
        stats.dropped(dropped);
        stats.set_queue(pending.order.len());
        drop(pending);
        self.ready.notify_one();
    }

    /// Puts a batch that could not be sent back at the front, except the alerts queued again
    /// meanwhile (their newer word stands).
    pub fn put_back(&self, batch: Vec<Alert>, stats: &AlertmanagerStats) {
        let mut pending = self.lock();
        for alert in batch.into_iter().rev() {
            if pending.position.contains_key(alert.fingerprint()) {
                continue;
            }
            pending.front -= 1;
            let at = pending.front;
            pending.insert_at(at, alert);
        }
        let dropped = pending.trim(self.capacity);
        stats.dropped(dropped);
        stats.set_queue(pending.order.len());
    }

    /// Up to `max` alerts from the front.
    pub fn take(&self, max: usize, stats: &AlertmanagerStats) -> Vec<Alert> {
        let mut pending = self.lock();
        let mut batch = Vec::new();
        while batch.len() < max {
            let Some((_, alert)) = pending.order.pop_first() else {
                break;
            };
            pending.position.remove(alert.fingerprint());
            batch.push(alert);
        }
        stats.set_queue(pending.order.len());
        batch
    }

    /// Returns once something was pushed since the last call (or at once if it was).
    pub async fn pushed(&self) {
        self.ready.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(host: &str, resolved_at: Option<i64>) -> Alert {
        Alert {
            labels: [("host".to_owned(), host.to_owned())].into(),
            annotations: BTreeMap::new(),
            starts_at: 1,
            resolved_at,
            generator_url: None,
        }
    }

    fn hosts(batch: &[Alert]) -> Vec<(&str, bool)> {
        batch
            .iter()
            .map(|a| (a.labels["host"].as_str(), a.resolved_at.is_some()))
            .collect()
    }

    #[test]
    fn the_newest_word_on_an_alert_replaces_the_waiting_one_and_the_oldest_is_dropped_first() {
        let stats = AlertmanagerStats::default();
        let outbox = Outbox::new(3);
        outbox.push(&[alert("a", None), alert("b", None)], &stats);
        outbox.push(&[alert("a", Some(5))], &stats);
        assert_eq!(stats.queue(), 2);
        outbox.push(&[alert("c", None), alert("d", None)], &stats);
        assert_eq!(stats.dropped_total(), 1, "b, the oldest, is dropped");
        let batch = outbox.take(10, &stats);
        assert_eq!(hosts(&batch), [("a", true), ("c", false), ("d", false)]);
        assert_eq!(stats.queue(), 0);
    }

    #[test]
    fn a_failed_batch_goes_back_in_front_unless_a_newer_word_came() {
        let stats = AlertmanagerStats::default();
        let outbox = Outbox::new(10);
        outbox.push(
            &[alert("a", None), alert("b", None), alert("c", None)],
            &stats,
        );
        let batch = outbox.take(2, &stats);
        outbox.push(&[alert("b", Some(9))], &stats);
        outbox.put_back(batch, &stats);
        let all = outbox.take(10, &stats);
        assert_eq!(hosts(&all), [("a", false), ("c", false), ("b", true)]);
    }
}
