//! A latency histogram with fixed buckets, for `/metrics`.
//!
//! Why not a metrics crate: the hot paths that observe (the committer's log write, every TCP
//! acknowledgement) must stay at a few atomic adds, and Prometheus needs nothing more than
//! cumulative bucket counts, a sum and a count. Buckets are stored non-cumulative (one add per
//! observation) and summed when rendered.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds: 50 µs (a fast fsync) to 10 s (a stalled disk),
/// roughly ×2–2.5 apart. Anything slower lands in `+Inf`.
const BOUNDS_MICROS: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (the last one is `+Inf`), not cumulative.
    buckets: [AtomicU64; BOUNDS_MICROS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one duration: three relaxed atomic adds.
    pub fn observe(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_MICROS
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(BOUNDS_MICROS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Appends the histogram in Prometheus text format, in seconds. Read without a lock, a
    /// scrape may see an observation in `_count` before its bucket: harmless for a tally, and
    /// `+Inf` is written as the bucket total so the buckets stay monotonic.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        self.render_samples(out, name);
    }

    /// The samples of [`Histogram::render`] without its `# HELP` and `# TYPE` lines (for a
    /// family whose header is written by the `/metrics` table).
    pub fn render_samples(&self, out: &mut String, name: &str) {
        let mut cumulative = 0u64;
        for (bound, bucket) in BOUNDS_MICROS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.buckets[BOUNDS_MICROS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_in_seconds() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(40));
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "help");
        assert!(out.contains("# TYPE x_seconds histogram\n"), "{out}");
        assert!(
            out.contains("x_seconds_bucket{le=\"0.00005\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_bucket{le=\"0.0001\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.0025\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.005\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"10\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_seconds_sum 60.00314\n"), "{out}");
        assert!(out.contains("x_seconds_count 4\n"), "{out}");
        assert_eq!(h.count(), 4);
    }
}
