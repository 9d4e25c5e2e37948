//! Notifications through Alertmanager (`--alertmanager`): statecast is an Alertmanager client,
//! the way Prometheus is one. Off by default.
//!
//! One deriving task subscribes to the engine like a dashboard (a snapshot, then every change in
//! `seq` order) and works out what fires with [`derive::Firing`] (pure: the same changes give
//! the same alerts on every cluster node, and Alertmanager deduplicates them). It pushes each
//! alert that fires or resolves, and every `--alert-resend` all that fire, into one
//! [`outbox::Outbox`] per Alertmanager, never waiting; one [`sender`] task per Alertmanager
//! POSTs them. So an Alertmanager that is away never slows ingest, the engine or the other
//! Alertmanagers: only its own bounded outbox fills.
//!
//! Knows the engine (its handle and output types), the query language and the metrics leaf;
//! nothing here is known by the engine, the transports or the web.

pub mod derive;
mod flap;
mod outbox;
mod sender;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

pub use derive::Rules;
pub use sender::Target;

use self::derive::{Alert, Firing};
use self::outbox::Outbox;
use crate::engine::EngineHandle;
use crate::lifecycle::Lifecycle;
use crate::metrics::AlertmanagerStats;

/// Everything alerting needs, built from the flags (`Config::alerts`).
#[derive(Debug, Clone)]
pub struct AlertConfig {
    /// Each gets every alert.
    pub alertmanagers: Vec<Target>,
    pub rules: Rules,
    /// How often every firing alert is sent again (`--alert-resend`).
    pub resend: Duration,
}

/// The labels an `--alert-labels` name may not take (statecast sets them).
pub const RESERVED_LABELS: [&str; 5] = ["alertname", "host", "service", "state", "flapping"];

/// Checks one `--alert-labels` name: a Prometheus label name that statecast does not set itself.
pub fn check_label_name(name: &str) -> Result<String, String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__");
    if !valid {
        return Err(format!(
            "--alert-labels {name:?}: not a label name (letters, digits and _, not starting with a digit or __)"
        ));
    }
    if RESERVED_LABELS.contains(&name) {
        return Err(format!(
            "--alert-labels {name:?}: statecast sets that label itself"
        ));
    }
    Ok(name.to_owned())
}

/// Starts the deriving task and one sender per Alertmanager, all stopping at shutdown.
pub(crate) fn start(config: AlertConfig, engine: EngineHandle, life: &Lifecycle) {
    let metrics = &life.counters().alerts;
    let mut outboxes = Vec::new();
    for target in config.alertmanagers {
        let stats = Arc::new(AlertmanagerStats::new(&target.url));
        let outbox = Arc::new(Outbox::new(outbox::MAX_PENDING));
        life.spawn(sender::run(
            target,
            Arc::clone(&outbox),
            Arc::clone(&stats),
            config.resend,
            life.shutdown().clone(),
        ));
        outboxes.push((outbox, stats));
    }
    metrics.enable(outboxes.iter().map(|(_, s)| Arc::clone(s)).collect());
    let deriving = Deriving {
        engine,
        firing: Firing::new(config.rules),
        outboxes,
        resend: config.resend,
        counters: Arc::clone(life.counters()),
    };
    life.spawn(deriving.run(life.shutdown().clone()));
}

/// The deriving task's state.
struct Deriving {
    engine: EngineHandle,
    firing: Firing,
    outboxes: Vec<(Arc<Outbox>, Arc<AlertmanagerStats>)>,
    resend: Duration,
    counters: Arc<crate::metrics::Counters>,
}

impl Deriving {
    /// Follows the engine until shutdown: from a snapshot, then change by change; a missed change
    /// (the task fell behind the broadcast ring) starts over from a fresh snapshot.
    async fn run(mut self, shutdown: CancellationToken) {
        let mut resend = tokio::time::interval(self.resend);
        resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let subscribed = tokio::select! {
                _ = shutdown.cancelled() => return,
                subscribed = self.engine.subscribe() => subscribed,
            };
            let Ok(mut subscription) = subscribed else {
                return; // The engine is gone: the server is stopping.
            };
            let alerts = self.firing.resync(&subscription.snapshot, now_micros());
            self.push(&alerts);
            resend.reset();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = resend.tick() => {
                        // Keys that stopped flapping first, then every alert firing, again.
                        let mut alerts = self.firing.settle(now_micros());
                        alerts.extend(self.firing.firing());
                        self.push(&alerts);
                    }
                    received = subscription.changes.recv() => match received {
                        Ok(published) => {
                            let Some(payload) = published.payload() else {
                                break; // Evicted from the ring before we read it: missed.
                            };
                            let alerts = self.firing.apply(&payload.change, now_micros());
                            self.push(&alerts);
                        }
                        Err(RecvError::Lagged(missed)) => {
                            tracing::warn!(missed, "alerting fell behind the engine's changes; starting over from a snapshot");
                            break;
                        }
                        Err(RecvError::Closed) => return,
                    },
                }
            }
        }
    }

    /// Hands `alerts` to every Alertmanager's outbox (never waits).
    fn push(&self, alerts: &[Alert]) {
        for (outbox, stats) in &self.outboxes {
            outbox.push(alerts, stats);
        }
        let firing = self.firing.firing_count() as u64;
        self.counters.alerts.firing.store(firing, Ordering::Relaxed);
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
