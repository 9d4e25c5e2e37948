//! What a `GET /api/series` request may ask, and how it is answered within its caps: the
//! window (`from`, `to`, `step`) checked with a sentence for each bad value, the tier and step
//! chosen before anything is read, and one series' buckets — stored and held in memory —
//! merged and folded to the step.
//!
//! Every bound is checked on counts known before reading (series matched × buckets in the
//! range), so a request never does more work than its answer may hold.

use super::bucket::{fold, Bucket, Tiers, HOUR_MS};

/// Series in one answer at most.
pub const MAX_SERIES: usize = 1_000;
/// Points in one answer at most (all series together; ≈ 8 MB of JSON).
pub const MAX_POINTS: i64 = 100_000;
/// Stored buckets one answer may read at most (a wide step folds many into one point).
pub const MAX_READ_BUCKETS: i64 = 1_000_000;
/// The longest range one answer covers.
pub const MAX_RANGE_MS: i64 = 400 * 24 * HOUR_MS;
/// 9999-12-31T23:59:59.999Z: no time past it is a time.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// The time window a request asks for (unix milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from_ms: i64,
    pub to_ms: i64,
    /// `None`: the finest tier that fits the caps.
    pub step_ms: Option<i64>,
}

/// One parameter as unix milliseconds, or the sentence saying why not.
fn millis(name: &str, text: Option<&str>) -> Result<Option<i64>, String> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let value: i64 = text.trim().parse().map_err(|_| {
        let shown: String = text.chars().take(32).collect();
        format!("`{name}` must be a whole number of milliseconds, got {shown:?}")
    })?;
    if !(0..=MAX_TIME_MS).contains(&value) {
        return Err(format!(
            "`{name}` of {value} is out of range (0 to {MAX_TIME_MS}: unix milliseconds up to the year 9999)"
        ));
    }
    Ok(Some(value))
}

impl Window {
    /// The window of a request's `from`, `to` and `step` (defaults: `to` now, `from` an hour
    /// before `to`).
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        step: Option<&str>,
        now_ms: i64,
    ) -> Result<Window, String> {
        let to_ms = millis("to", to)?.unwrap_or(now_ms.clamp(0, MAX_TIME_MS));
        let from_ms = millis("from", from)?.unwrap_or((to_ms - HOUR_MS).max(0));
        let step_ms = millis("step", step)?;
        if from_ms > to_ms {
            return Err(format!("`from` ({from_ms}) is after `to` ({to_ms})"));
        }
        if to_ms - from_ms > MAX_RANGE_MS {
            return Err(format!(
                "the range of {} days is longer than the {} days one answer covers: ask for less",
                (to_ms - from_ms) / (24 * HOUR_MS),
                MAX_RANGE_MS / (24 * HOUR_MS)
            ));
        }
        if let Some(step) = step_ms {
            if !(1..=MAX_RANGE_MS).contains(&step) {
                return Err(format!(
                    "`step` of {step} ms is out of range (1 ms to {MAX_RANGE_MS} ms)"
                ));
            }
        }
        Ok(Window {
            from_ms,
            to_ms,
            step_ms,
        })
    }
}

/// What a request reads: a tier, the step of the answer's points (a multiple of the tier's) and
/// the first bucket start (`from` rounded down to the step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub tier: u8,
    pub step_ms: i64,
    pub first_ms: i64,
}

/// Buckets of `step_ms` that start in the window (the one holding `from` included).
fn buckets(window: &Window, step_ms: i64) -> i64 {
    window.to_ms.div_euclid(step_ms) - window.from_ms.div_euclid(step_ms) + 1
}

/// `step` rounded up to a multiple of `unit`.
fn round_up(step: i64, unit: i64) -> i64 {
    step.div_euclid(unit)
        .saturating_add(i64::from(step % unit != 0))
        * unit
}

/// Chooses the tier and step for `series` series over `window` (see the README's Limits); the
/// sentence of a 400 when no choice fits the caps.
pub fn plan(window: &Window, series: usize, tiers: &Tiers, now_ms: i64) -> Result<Plan, String> {
    let series_count = i64::try_from(series).unwrap_or(i64::MAX);
    // Tiers that still hold data at `from`; when none does, the longest-kept one.
    let answering: Vec<usize> = (0..tiers.len())
        .filter(|&i| window.from_ms >= now_ms.saturating_sub(tiers[i].keep_ms))
        .collect();
    let coarsest = tiers.len() - 1;
    let answering = if answering.is_empty() {
        vec![coarsest]
    } else {
        answering
    };
    let (tier, step_ms) = match window.step_ms {
        Some(asked) => {
            // The coarsest answering tier not wider than the step (fewest reads), else the
            // finest answering one, the step raised to it.
            let tier = answering
                .iter()
                .rev()
                .copied()
                .find(|&i| tiers[i].step_ms <= asked)
                .unwrap_or(answering[0]);
            (
                tier,
                round_up(asked.max(tiers[tier].step_ms), tiers[tier].step_ms),
            )
        }
        None => {
            let fits = answering.iter().copied().find(|&i| {
                series_count.saturating_mul(buckets(window, tiers[i].step_ms)) <= MAX_POINTS
            });
            match fits {
                Some(tier) => (tier, tiers[tier].step_ms),
                None => {
                    // The coarsest tier, its step widened until the points fit.
                    let tier = *answering.last().unwrap_or(&coarsest);
                    let unit = tiers[tier].step_ms;
                    // Two buckets more than span / step at most (the window's ends need not
                    // fall on bucket edges).
                    let per_series = (MAX_POINTS / series_count.max(1) - 2).max(1);
                    let span = window.to_ms - window.from_ms + 1;
                    (tier, round_up((span / per_series + 1).max(unit), unit))
                }
            }
        }
    };
    let points = series_count.saturating_mul(buckets(window, step_ms));
    if points > MAX_POINTS {
        return Err(format!(
            "{series} series at a step of {step_ms} ms over {} ms is up to {points} points, more than the {MAX_POINTS} one answer holds: give a larger `step`, a shorter range or a narrower `query`",
            window.to_ms - window.from_ms
        ));
    }
    let reads = series_count.saturating_mul(buckets(window, tiers[tier].step_ms));
    if reads > MAX_READ_BUCKETS {
        return Err(format!(
            "{series} series over {} ms read up to {reads} stored buckets, more than the {MAX_READ_BUCKETS} one answer may read: give a shorter range or a narrower `query`",
            window.to_ms - window.from_ms
        ));
    }
    Ok(Plan {
        tier: tier as u8,
        step_ms,
        first_ms: window.from_ms.div_euclid(step_ms) * step_ms,
    })
}

/// One series' buckets in the plan's range: `stored` overlaid by `held` (the memory's value of
/// a bucket is whole and newer: it wins), folded to the plan's step. Both sorted by start.
pub fn merge(
    stored: Vec<(i64, Bucket)>,
    held: &[(i64, Bucket)],
    step_ms: i64,
) -> Vec<(i64, Bucket)> {
    let mut all = stored;
    if !held.is_empty() {
        all.retain(|(start, _)| held.binary_search_by_key(start, |(s, _)| *s).is_err());
        all.extend_from_slice(held);
        all.sort_by_key(|(start, _)| *start);
    }
    fold(all, step_ms)
}

#[cfg(test)]
mod tests {
    use super::super::bucket::tiers;
    use super::*;

    const NOW: i64 = 1_796_126_400_000;
    const WEEK: i64 = 7 * 24 * HOUR_MS;
    const MONTH: i64 = 30 * 24 * HOUR_MS;

    fn window(from: i64, to: i64, step: Option<i64>) -> Window {
        Window {
            from_ms: from,
            to_ms: to,
            step_ms: step,
        }
    }

    #[test]
    fn bad_windows_get_a_sentence() {
        let parse =
            |f: &str, t: &str, s: &str| Window::parse(Some(f), Some(t), Some(s), NOW).unwrap_err();
        assert!(parse("x", "", "").contains("`from` must be a whole number"));
        assert!(parse("-5", "", "").contains("out of range"));
        assert!(parse("", "99999999999999999", "").contains("`to`"));
        assert!(parse("2000", "1000", "").contains("is after"));
        assert!(parse("0", "100000000000", "").contains("longer than the 400 days"));
        assert!(parse("0", "1000", "0").contains("`step` of 0 ms"));
        let defaults = Window::parse(None, None, None, NOW).unwrap();
        assert_eq!(defaults, window(NOW - HOUR_MS, NOW, None));
    }

    #[test]
    fn the_default_step_is_the_finest_tier_that_fits() {
        let all = tiers(MONTH);
        let hour = window(NOW - HOUR_MS, NOW, None);
        assert_eq!(plan(&hour, 10, &all, NOW).unwrap().step_ms, 10_000);
        // 360 buckets × 300 series is past the cap: the minute tier.
        let p = plan(&hour, 300, &all, NOW).unwrap();
        assert_eq!((p.tier, p.step_ms), (1, 60_000));
        // A day is past the fine tier's six hours.
        let day = window(NOW - 24 * HOUR_MS, NOW, None);
        assert_eq!(plan(&day, 1, &all, NOW).unwrap().tier, 1);
        // A week of 1,000 series: hours, widened until it fits.
        let week = window(NOW - WEEK, NOW, None);
        let p = plan(&week, 1000, &all, NOW).unwrap();
        assert_eq!((p.tier, p.step_ms), (2, 2 * HOUR_MS));
        assert!(1000 * buckets(&week, p.step_ms) <= MAX_POINTS, "{p:?}");
    }

    #[test]
    fn a_step_is_raised_to_its_tier_and_a_too_fine_one_refused() {
        let all = tiers(MONTH);
        let p = plan(&window(NOW - HOUR_MS, NOW, Some(1)), 1, &all, NOW).unwrap();
        assert_eq!((p.tier, p.step_ms), (0, 10_000));
        let p = plan(&window(NOW - HOUR_MS, NOW, Some(90_000)), 1, &all, NOW).unwrap();
        assert_eq!((p.tier, p.step_ms), (1, 120_000));
        assert_eq!(p.first_ms, (NOW - HOUR_MS) / 120_000 * 120_000);
        let error = plan(&window(NOW - WEEK, NOW, Some(60_000)), 100, &all, NOW).unwrap_err();
        assert!(
            error.contains("more than the 100000 one answer holds"),
            "{error}"
        );
    }

    #[test]
    fn held_buckets_win_over_stored_ones_and_fold_to_the_step() {
        let stored = vec![
            (0, Bucket::of(0, 1.0)),
            (10_000, Bucket::of(10_000_000, 2.0)),
        ];
        let held = [
            (10_000, Bucket::of(11_000_000, 5.0)),
            (20_000, Bucket::of(20_000_000, 3.0)),
        ];
        let merged = merge(stored.clone(), &held, 10_000);
        assert_eq!(merged.len(), 3);
        assert_eq!(merged[1].1.last, 5.0);
        let folded = merge(stored, &held, 30_000);
        assert_eq!(folded.len(), 1);
        assert_eq!((folded[0].1.count, folded[0].1.sum), (3, 9.0));
    }
}
