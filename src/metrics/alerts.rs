//! Alerting figures for `/metrics` (`--alertmanager`): per Alertmanager, alerts sent, failed and
//! dropped, the queue and the last success; and how many alerts fire. A leaf, so the `alert`
//! module writes them and `/metrics` reads them without either knowing the other. Nothing is
//! rendered while alerting is off.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// One Alertmanager's figures.
#[derive(Debug, Default)]
pub struct AlertmanagerStats {
    /// The Alertmanager's URL, as configured (the `alertmanager` label).
    pub url: String,
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    queue: AtomicU64,
    /// Unix milliseconds of the last accepted POST (0: none yet).
    last_success_ms: AtomicU64,
}

impl AlertmanagerStats {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            ..Self::default()
        }
    }

    /// `n` alerts accepted by the Alertmanager at `unix_ms`.
    pub fn sent(&self, n: usize, unix_ms: u64) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
        self.last_success_ms.fetch_max(unix_ms, Ordering::Relaxed);
    }

    /// `n` alerts in a POST that failed (retried, or refused by the Alertmanager).
    pub fn failed(&self, n: usize) {
        self.failed.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `n` waiting alerts dropped past the queue's bound.
    pub fn dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set_queue(&self, n: usize) {
        self.queue.store(n as u64, Ordering::Relaxed);
    }

    pub fn queue(&self) -> u64 {
        self.queue.load(Ordering::Relaxed)
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Every Alertmanager's figures, once alerting starts.
#[derive(Debug, Default)]
pub struct AlertMetrics {
    alertmanagers: OnceLock<Vec<Arc<AlertmanagerStats>>>,
    /// Alerts firing now (acked and silenced keys' alerts are resolved, not counted).
    pub firing: AtomicU64,
}

/// A family per Alertmanager: name, type, help, the value read from its figures.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&AlertmanagerStats) -> String,
);

#[rustfmt::skip]
const FAMILIES: [Family; 5] = [
    ("statecast_alerts_sent_total", "counter", "Alerts (firing and resolved) the Alertmanager accepted.", |s| s.sent.load(Ordering::Relaxed).to_string()),
    ("statecast_alerts_failed_total", "counter", "Alerts in POSTs that failed (unreachable, timed out, refused); retried unless refused with a 4xx.", |s| s.failed.load(Ordering::Relaxed).to_string()),
    ("statecast_alerts_dropped_total", "counter", "Waiting alerts dropped, oldest first, past the queue's bound.", |s| s.dropped.load(Ordering::Relaxed).to_string()),
    ("statecast_alerts_queue", "gauge", "Alerts waiting to be sent.", |s| s.queue.load(Ordering::Relaxed).to_string()),
    ("statecast_alerts_last_success_timestamp_seconds", "gauge", "When a POST was last accepted (unix seconds; 0: never).", |s| {
        format!("{:.3}", s.last_success_ms.load(Ordering::Relaxed) as f64 / 1000.0)
    }),
];

impl AlertMetrics {
    /// Starts showing the figures of these Alertmanagers.
    pub fn enable(&self, alertmanagers: Vec<Arc<AlertmanagerStats>>) {
        let _ = self.alertmanagers.set(alertmanagers);
    }

    pub fn render(&self, out: &mut String) {
        let Some(alertmanagers) = self.alertmanagers.get() else {
            return;
        };
        let _ = writeln!(
            out,
            "# HELP statecast_alerts_firing Alerts firing now.\n# TYPE statecast_alerts_firing gauge\nstatecast_alerts_firing {}",
            self.firing.load(Ordering::Relaxed)
        );
        for (name, kind, help, read) in FAMILIES {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for stats in alertmanagers {
                let url = stats
                    .url
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = writeln!(out, "{name}{{alertmanager=\"{url}\"}} {}", read(stats));
            }
        }
    }
}
