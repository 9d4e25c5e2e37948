//! One bucket of a metric series — min, max, sum, count and last of the points whose event time
//! falls in it — and the tiers that say how wide buckets are and how long they are kept.
//!
//! Pure arithmetic, no I/O. Why `last` carries its point's time: merging two partial buckets
//! (an open one and a late point, a stored one and a point that arrived after it was written, or
//! ten 10 s buckets into one 100 s step) must give the same answer whatever the order, so that
//! every node of a cluster — which closes buckets on its own wall clock — stores the same
//! values. The point with the latest event time is `last`; of two with the same time, the one
//! applied later (every node applies them in the same order).

/// Milliseconds in one hour.
pub const HOUR_MS: i64 = 3_600_000;

/// How wide a tier's buckets are and how long they are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    /// Bucket width, milliseconds. Buckets start at multiples of it (unix time).
    pub step_ms: i64,
    /// Buckets starting before `now − keep_ms` are pruned.
    pub keep_ms: i64,
}

impl Tier {
    /// Start of the bucket holding the event time `time_micros`.
    pub fn start_of(&self, time_micros: i64) -> i64 {
        time_micros.div_euclid(1000).div_euclid(self.step_ms) * self.step_ms
    }
}

/// The 10 s tier: fine enough for a live chart, kept 6 hours (at most the retention).
pub const FINE_STEP_MS: i64 = 10_000;
/// How long the 10 s tier is kept.
pub const FINE_KEEP_MS: i64 = 6 * HOUR_MS;
/// The 1 min tier, kept 7 days (at most the retention).
pub const MINUTE_STEP_MS: i64 = 60_000;
/// How long the 1 min tier is kept.
pub const MINUTE_KEEP_MS: i64 = 7 * 24 * HOUR_MS;
/// The 1 h tier, kept `--series-retention`: what long ranges read.
pub const HOUR_STEP_MS: i64 = HOUR_MS;

/// How many tiers there are.
pub const TIER_COUNT: usize = 3;
/// The tiers, finest first.
pub type Tiers = [Tier; TIER_COUNT];

/// The tiers for a retention of `retention_ms`, finest first.
pub fn tiers(retention_ms: i64) -> Tiers {
    [
        Tier {
            step_ms: FINE_STEP_MS,
            keep_ms: FINE_KEEP_MS.min(retention_ms),
        },
        Tier {
            step_ms: MINUTE_STEP_MS,
            keep_ms: MINUTE_KEEP_MS.min(retention_ms),
        },
        Tier {
            step_ms: HOUR_STEP_MS,
            keep_ms: retention_ms,
        },
    ]
}

/// min, max, sum, count and last of the points in one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: u64,
    pub last: f64,
    /// Event time of `last`, microseconds.
    pub last_micros: i64,
}

/// Bytes of a bucket on disk.
pub const ENCODED_BYTES: usize = 48;

impl Bucket {
    /// A bucket of one point.
    pub fn of(time_micros: i64, value: f64) -> Self {
        Bucket {
            min: value,
            max: value,
            sum: value,
            count: 1,
            last: value,
            last_micros: time_micros,
        }
    }

    /// Adds one point, applied after every point already in.
    pub fn add(&mut self, time_micros: i64, value: f64) {
        self.merge(&Bucket::of(time_micros, value));
    }

    /// Adds the points of `later` (applied after those of `self`).
    pub fn merge(&mut self, later: &Bucket) {
        self.min = self.min.min(later.min);
        self.max = self.max.max(later.max);
        self.sum += later.sum;
        self.count = self.count.saturating_add(later.count);
        if later.last_micros >= self.last_micros {
            self.last = later.last;
            self.last_micros = later.last_micros;
        }
    }

    /// The mean of the points.
    pub fn avg(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }

    /// Little-endian fields in declaration order.
    pub fn encode(&self) -> [u8; ENCODED_BYTES] {
        let mut out = [0u8; ENCODED_BYTES];
        out[0..8].copy_from_slice(&self.min.to_le_bytes());
        out[8..16].copy_from_slice(&self.max.to_le_bytes());
        out[16..24].copy_from_slice(&self.sum.to_le_bytes());
        out[24..32].copy_from_slice(&self.count.to_le_bytes());
        out[32..40].copy_from_slice(&self.last.to_le_bytes());
        out[40..48].copy_from_slice(&self.last_micros.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8; ENCODED_BYTES]) -> Self {
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i..i + 8]);
            b
        };
        Bucket {
            min: f64::from_le_bytes(word(0)),
            max: f64::from_le_bytes(word(8)),
            sum: f64::from_le_bytes(word(16)),
            count: u64::from_le_bytes(word(24)),
            last: f64::from_le_bytes(word(32)),
            last_micros: i64::from_le_bytes(word(40)),
        }
    }
}

/// Folds a tier's buckets (sorted by start) into buckets of `step_ms`, a multiple of the tier's
/// step: each tier bucket falls in exactly one of them (both are aligned to unix time 0).
pub fn fold(buckets: impl IntoIterator<Item = (i64, Bucket)>, step_ms: i64) -> Vec<(i64, Bucket)> {
    let mut out: Vec<(i64, Bucket)> = Vec::new();
    for (start, bucket) in buckets {
        let start = start.div_euclid(step_ms) * step_ms;
        match out.last_mut() {
            Some((last_start, into)) if *last_start == start => into.merge(&bucket),
            _ => out.push((start, bucket)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_falls_in_the_bucket_its_event_time_names() {
        let [fine, coarse, hour] = tiers(30 * 24 * HOUR_MS);
        assert_eq!(fine.start_of(1_000_009_999_999), 1_000_000_000);
        assert_eq!(fine.start_of(1_000_010_000_000), 1_000_010_000);
        assert_eq!(coarse.start_of(1_000_059_999_000), 1_000_020_000);
        // Before 1970: still the bucket below, not towards zero.
        assert_eq!(fine.start_of(-1), -10_000);
        assert_eq!(coarse.keep_ms, 7 * 24 * HOUR_MS);
        assert_eq!(hour.keep_ms, 30 * 24 * HOUR_MS);
        assert_eq!(hour.start_of(3_700_000_000), 3_600_000);
        assert_eq!(tiers(HOUR_MS)[0].keep_ms, HOUR_MS);
    }

    #[test]
    fn a_bucket_keeps_min_max_sum_count_and_the_latest_point() {
        let mut b = Bucket::of(2_000, 5.0);
        b.add(1_000, 1.0); // earlier event time, applied later: not `last`
        b.add(3_000, 3.0);
        b.add(3_000, 4.0); // same time, applied later: `last`
        assert_eq!((b.min, b.max, b.sum, b.count), (1.0, 5.0, 13.0, 4));
        assert_eq!((b.last, b.last_micros), (4.0, 3_000));
        assert_eq!(b.avg(), 3.25);
        assert_eq!(Bucket::decode(&b.encode()), b);
    }

    #[test]
    fn merging_partial_buckets_gives_what_adding_every_point_gives() {
        let points = [(5, 2.0), (1, 7.0), (9, -1.0), (9, 0.5), (3, 4.0)];
        let mut whole = Bucket::of(points[0].0, points[0].1);
        for (t, v) in &points[1..] {
            whole.add(*t, *v);
        }
        for split in 1..points.len() {
            let mut first = Bucket::of(points[0].0, points[0].1);
            for (t, v) in &points[1..split] {
                first.add(*t, *v);
            }
            let mut second = Bucket::of(points[split].0, points[split].1);
            for (t, v) in &points[split + 1..] {
                second.add(*t, *v);
            }
            first.merge(&second);
            assert_eq!(first, whole, "split at {split}");
        }
    }

    #[test]
    fn folding_into_a_wider_step_merges_the_buckets_it_covers() {
        let buckets = [0, 10_000, 20_000, 30_000, 60_000]
            .map(|start| (start, Bucket::of(start * 1000, start as f64)));
        let folded = fold(buckets, 30_000);
        let starts: Vec<i64> = folded.iter().map(|(s, _)| *s).collect();
        assert_eq!(starts, [0, 30_000, 60_000]);
        assert_eq!(folded[0].1.count, 3);
        assert_eq!(folded[0].1.max, 20_000.0);
        assert_eq!(folded[0].1.last, 20_000.0);
        assert_eq!(folded[1].1.count, 1);
    }
}
