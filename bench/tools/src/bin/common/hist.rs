//! A small log-linear latency histogram shared by the bench tools (microsecond samples).
//!
//! Values below 64 µs are exact; above, each power of two is split into 32 buckets, so any
//! reported percentile is within about 3% of the true sample. Buckets are atomics so many tasks
//! can record into one histogram without a lock.

use std::sync::atomic::{AtomicU64, Ordering};

const LINEAR: u64 = 64;
const SUB: u64 = 32;
/// Enough for values up to 2^40 µs (12 days).
const BUCKETS: usize = (LINEAR + SUB * 35) as usize;

pub struct Histogram {
    buckets: Vec<AtomicU64>,
    max: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let bits = 63 - u64::from(v.leading_zeros()); // floor(log2 v) >= 6
    let shift = bits - 5; // keep 6 significant bits: mantissa in 32..64
    let mantissa = v >> shift;
    let i = LINEAR + (shift - 1) * SUB + (mantissa - SUB);
    (i as usize).min(BUCKETS - 1)
}

/// The lowest value of bucket `i` (the percentile we report is the bucket's upper-ish middle).
fn value_of(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let shift = (i - LINEAR) / SUB + 1;
    let mantissa = (i - LINEAR) % SUB + SUB;
    // Middle of the bucket.
    (mantissa << shift) + (1u64 << shift) / 2
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn record(&self, micros: u64) {
        self.buckets[index(micros)].fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// The `q`-quantile (0.0..=1.0) in µs; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                return value_of(i).min(self.max());
            }
        }
        self.max()
    }
}

/// Microseconds as milliseconds with three decimals, for humans.
pub fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}
