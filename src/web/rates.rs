//! `GET /api/rates`: the counters of the last hour, so a dashboard opened (or reloaded) now draws
//! its rates chart from the start instead of from its first stats frame.
//!
//! The stats ticker (`web::stats_ticker`) records one sample per stats interval into a
//! [`RateRing`]: the cumulative `events` and `changes` counters and the time. The page turns
//! consecutive samples into rates itself, exactly as it does with the live `stats` frames, so one
//! code path draws both. The ring is bounded: one hour of samples, and never more than
//! [`MAX_SAMPLES`] whatever the interval (with `--stats-interval 0.1` the hour is thinned to every
//! other sample rather than kept whole).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::access::DashboardRead;
use super::AppState;

/// How far back the ring reaches.
const WINDOW: Duration = Duration::from_secs(3600);
/// Most samples kept (and answered): 3,600 × 3 numbers is ~100 KiB of JSON at most.
pub(crate) const MAX_SAMPLES: usize = 3600;

/// One sample: unix milliseconds, then the cumulative counters.
type Sample = (u64, u64, u64);

/// The recent samples, oldest first.
#[derive(Debug)]
pub(crate) struct RateRing {
    samples: Mutex<VecDeque<Sample>>,
    /// Record only every `stride`-th tick, so an hour fits in `MAX_SAMPLES`.
    stride: u64,
    ticks: Mutex<u64>,
    interval: Duration,
}

impl RateRing {
    pub(crate) fn new(interval: Duration) -> Self {
        let per_hour = WINDOW.as_millis() / interval.as_millis().max(1);
        let stride = per_hour.div_ceil(MAX_SAMPLES as u128).max(1);
        Self {
            samples: Mutex::new(VecDeque::with_capacity(
                MAX_SAMPLES.min(per_hour as usize + 1),
            )),
            stride: u64::try_from(stride).unwrap_or(u64::MAX),
            ticks: Mutex::new(0),
            interval,
        }
    }

    /// Called by the stats ticker once per interval.
    pub(crate) fn record(&self, events: u64, changes: u64) {
        {
            let mut ticks = self.ticks.lock().unwrap_or_else(|p| p.into_inner());
            *ticks += 1;
            if !(*ticks - 1).is_multiple_of(self.stride) {
                return;
            }
        }
        let now = unix_ms(SystemTime::now());
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let oldest_kept = now.saturating_sub(WINDOW.as_millis() as u64);
        while samples.front().is_some_and(|s| s.0 < oldest_kept) || samples.len() >= MAX_SAMPLES {
            samples.pop_front();
        }
        samples.push_back((now, events, changes));
    }

    fn snapshot(&self) -> Vec<Sample> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.iter().copied().collect()
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `GET /api/rates` → `{"interval_ms":I,"samples":[[unix_ms,events,changes]…]}`, oldest first.
/// Same access rule as the page's other reads (`--dashboard-token`).
pub(crate) async fn rates(State(app): State<AppState>, _: DashboardRead) -> Response {
    let interval_ms = u64::try_from(app.rates.interval.as_millis()).unwrap_or(u64::MAX);
    let samples = app.rates.snapshot();
    Json(json!({ "interval_ms": interval_ms, "stride": app.rates.stride, "samples": samples }))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_max_samples_and_thins_short_intervals() {
        let ring = RateRing::new(Duration::from_millis(500));
        assert_eq!(ring.stride, 2, "7,200 ticks an hour → every other one");
        for i in 0..(MAX_SAMPLES as u64 * 3) {
            ring.record(i, i);
        }
        let samples = ring.snapshot();
        assert!(samples.len() <= MAX_SAMPLES);
        assert_eq!(
            samples.last().map(|s| s.1),
            Some(MAX_SAMPLES as u64 * 3 - 2)
        );
    }

    #[test]
    fn one_second_interval_keeps_every_tick() {
        let ring = RateRing::new(Duration::from_secs(1));
        assert_eq!(ring.stride, 1);
        ring.record(1, 2);
        ring.record(3, 4);
        let samples = ring.snapshot();
        assert_eq!(
            samples.iter().map(|s| (s.1, s.2)).collect::<Vec<_>>(),
            vec![(1, 2), (3, 4)]
        );
    }
}
