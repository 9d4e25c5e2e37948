//! The server's life as one value: the shutdown signal every task hears, the later signal that
//! ends what is still busy when the shutdown grace runs out, the tracker that knows when every
//! task is gone, and the counters every part reports to.
//!
//! `server::start` makes one [`Lifecycle`] and hands a clone to each transport, which keeps it
//! for its connections; none of them is given the four handles one by one. Shutdown is then
//! the same for all (compare mini-redis's `Shutdown` plus its completion channel): stop
//! accepting when [`Lifecycle::shutdown`] is cancelled, answer what is in flight, and stop at
//! once when [`Lifecycle::force_stop`] is. Every task that holds an engine handle is spawned
//! through [`Lifecycle::spawn`], so that once [`Lifecycle::stopped`] returns no handle is left
//! and the engine makes its final write.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Counters;

/// See the module doc. Cloning is cheap: every clone is the same life.
#[derive(Clone, Default)]
pub(crate) struct Lifecycle {
    shutdown: CancellationToken,
    force_stop: CancellationToken,
    tasks: TaskTracker,
    counters: Arc<Counters>,
}

/// How [`Lifecycle::stopped`] went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// Every task finished within the grace period.
    InGrace,
    /// Tasks were still running at the end of the grace period and were told to stop; this
    /// many had not finished when the wait after that ran out either (0: all did).
    Forced { remaining: usize },
}

impl Lifecycle {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Heard by every task: stop taking new work, answer what is in flight.
    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Heard by connections still busy when the shutdown grace period ends: they stop at once.
    pub(crate) fn force_stop(&self) -> &CancellationToken {
        &self.force_stop
    }

    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    pub(crate) fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Runs `task` as part of this life: shutdown waits for it.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    /// Once shutdown begins, waits for every task for up to `grace`, then tells those still
    /// running to stop and waits `forced_wait` more.
    pub(crate) async fn stopped(&self, grace: Duration, forced_wait: Duration) -> Stopped {
        self.shutdown.cancelled().await;
        tracing::info!("shutting down: no new connections, answering what is in flight");
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_ok() {
            return Stopped::InGrace;
        }
        tracing::warn!(
            remaining = self.tasks.len(),
            grace_secs = grace.as_secs(),
            "connections still open after the grace period (--shutdown-grace); ending them"
        );
        self.force_stop.cancel();
        let _ = tokio::time::timeout(forced_wait, self.tasks.wait()).await;
        Stopped::Forced {
            remaining: self.tasks.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_tasks_then_forces_those_still_busy() {
        let life = Lifecycle::new();
        // One task that ends on shutdown, one that ends only when forced.
        let polite = life.clone();
        life.spawn(async move { polite.shutdown().cancelled().await });
        let stubborn = life.clone();
        life.spawn(async move { stubborn.force_stop().cancelled().await });
        let stopping = life.clone();
        let stopped = tokio::spawn(async move {
            stopping
                .stopped(Duration::from_secs(10), Duration::from_secs(2))
                .await
        });
        tokio::task::yield_now().await;
        assert!(!stopped.is_finished());
        life.shutdown().cancel();
        assert_eq!(stopped.await.ok(), Some(Stopped::Forced { remaining: 0 }));
        assert!(life.force_stop().is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_that_finish_in_the_grace_are_not_forced() {
        let life = Lifecycle::new();
        let polite = life.clone();
        life.spawn(async move { polite.shutdown().cancelled().await });
        life.shutdown().cancel();
        let stopped = life
            .stopped(Duration::from_secs(10), Duration::from_secs(2))
            .await;
        assert_eq!(stopped, Stopped::InGrace);
        assert!(!life.force_stop().is_cancelled());
    }
}
