//! "Log this now?" at most once per interval, counting what was not logged: for lines a peer can
//! cause at will (a connection refused at a limit, an accept error), so that a flood of them is
//! one line every few seconds with a count instead of a line each.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Refusal lines (connection limits, accept errors) are logged at most this often.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Shared by every task that may log the line (a `Mutex` held for a comparison, never across
/// an await).
#[derive(Debug, Default)]
pub struct RateLimitedLog {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    skipped: u64,
}

impl RateLimitedLog {
    /// `Some(events not logged since the last line)` when a line is due.
    pub fn due(&self) -> Option<u64> {
        self.due_at(Instant::now())
    }

    fn due_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state
            .last
            .is_some_and(|last| now.duration_since(last) < INTERVAL)
        {
            state.skipped += 1;
            return None;
        }
        state.last = Some(now);
        Some(std::mem::take(&mut state.skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_rate_limited_and_count_what_they_skipped() {
        let log = RateLimitedLog::default();
        let t0 = Instant::now();
        assert_eq!(log.due_at(t0), Some(0));
        assert_eq!(log.due_at(t0), None);
        assert_eq!(log.due_at(t0 + Duration::from_secs(1)), None);
        assert_eq!(log.due_at(t0 + INTERVAL), Some(2));
        assert_eq!(log.due_at(t0 + INTERVAL), None);
    }
}
