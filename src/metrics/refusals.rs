//! Refused requests by reason: counted for `/metrics` (`statecast_refusals_total{reason}`) and
//! logged at info, at most one line per reason every [`LOG_INTERVAL`] with the number of refusals
//! that line stands for — a scanner or a misconfigured page hammering the server must not flood
//! the log, but the operator must learn that it happens and why.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Why a request was refused: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A foreign `Origin` (websocket, SSE, cross-site POST) or `Sec-Fetch-Site: cross-site`.
    Origin,
    /// A missing or wrong `--dashboard-token` / `--ingest-token`.
    Token,
    /// The dashboard connection limit (`--max-ws-connections`: websockets and SSE streams).
    Limit,
    /// A `Host` that is not allowed (DNS rebinding defence).
    Host,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [
        Refusal::Origin,
        Refusal::Token,
        Refusal::Limit,
        Refusal::Host,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Origin => "origin",
            Refusal::Token => "token",
            Refusal::Limit => "limit",
            Refusal::Host => "host",
        }
    }
}

/// At most one log line per reason this often.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Slot {
    count: AtomicU64,
    /// When a line was last logged, in milliseconds after [`epoch`] plus one (0: never).
    logged_at: AtomicU64,
    /// Refusals since that line that were not logged.
    suppressed: AtomicU64,
}

#[derive(Debug, Default)]
pub struct Refusals {
    slots: [Slot; 4],
}

impl Refusals {
    /// Counts a refusal; `Some(refusals not logged since the last line)` when a line is due.
    pub fn record(&self, reason: Refusal) -> Option<u64> {
        let now = u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        self.record_at(reason, now)
    }

    fn record_at(&self, reason: Refusal, now_millis: u64) -> Option<u64> {
        let slot = &self.slots[reason as usize];
        slot.count.fetch_add(1, Ordering::Relaxed);
        let last = slot.logged_at.load(Ordering::Relaxed);
        let interval = LOG_INTERVAL.as_millis() as u64;
        let due = last == 0 || now_millis.saturating_sub(last) >= interval;
        // Of refusals racing for the same line, one wins it.
        if !due
            || slot
                .logged_at
                .compare_exchange(last, now_millis, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            slot.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(slot.suppressed.swap(0, Ordering::Relaxed))
    }

    /// Counts a refusal for `/metrics` and logs it at info, at most one line per reason every
    /// [`LOG_INTERVAL`] (with how many refusals the line stands for): the counter and the log
    /// line of a refusal are one event, emitted in one place, so they cannot disagree. `path` is
    /// the route as the router matched it (`/api/silence/{id}`), never a literal kept beside it.
    pub fn refuse(&self, reason: Refusal, path: &str, status: u16, error: &str) {
        if let Some(suppressed) = self.record(reason) {
            tracing::info!(
                reason = reason.label(),
                path,
                status,
                error = %error,
                not_logged_since_last_line = suppressed,
                "request refused"
            );
        }
    }

    pub fn count(&self, reason: Refusal) -> u64 {
        self.slots[reason as usize].count.load(Ordering::Relaxed)
    }
}

/// The process's clock origin for the log limiter.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_reason_per_interval_with_the_count_it_stands_for() {
        let refusals = Refusals::default();
        assert_eq!(refusals.record_at(Refusal::Origin, 1), Some(0));
        for _ in 0..99 {
            assert_eq!(refusals.record_at(Refusal::Origin, 5_000), None);
        }
        // Another reason has its own line.
        assert_eq!(refusals.record_at(Refusal::Token, 5_000), Some(0));
        assert_eq!(refusals.record_at(Refusal::Origin, 10_001), Some(99));
        assert_eq!(refusals.record_at(Refusal::Origin, 10_002), None);
        assert_eq!(refusals.count(Refusal::Origin), 102);
        assert_eq!(refusals.count(Refusal::Token), 1);
        assert_eq!(refusals.count(Refusal::Host), 0);
    }
}
