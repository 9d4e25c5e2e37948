//! Durations and sizes as people write them on a command line, checked against a range when the
//! flag is parsed.
//!
//! Every duration and size flag goes through here so that a value the server cannot use (a
//! negative TTL, an infinite ping interval, a zero-byte frame limit) is one clear line at startup
//! instead of a panic or a server that flaps every event later. The ranges are part of each
//! flag's definition in `config.rs`.

use std::time::Duration;

pub const HOUR: Duration = Duration::from_secs(3600);
pub const DAY: Duration = Duration::from_secs(24 * 3600);
/// 365 days: ranges only need a bound, not calendar precision.
pub const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * KIB;
pub const GIB: usize = 1024 * MIB;

const DURATION_UNITS: [(&str, f64); 7] = [
    ("ms", 1e-3),
    ("s", 1.0),
    ("m", 60.0),
    ("min", 60.0),
    ("h", 3600.0),
    ("d", 86400.0),
    ("us", 1e-6),
];

const SIZE_UNITS: [(&str, f64); 8] = [
    ("b", 1.0),
    ("kib", 1024.0),
    ("mib", 1_048_576.0),
    ("gib", 1_073_741_824.0),
    ("k", 1024.0),
    ("kb", 1e3),
    ("mb", 1e6),
    ("gb", 1e9),
];

/// Splits `"2.5h"` into `(2.5, "h")`; the unit is lower-cased, whitespace between is allowed.
fn number_and_unit(s: &str) -> Option<(f64, String)> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number.trim().parse().ok()?;
    // `parse` accepts "inf" and "NaN" spelled out, but those start with a letter and never get
    // here as the number part; this keeps "1e400" (infinite) out as well.
    number
        .is_finite()
        .then(|| (number, unit.trim().to_ascii_lowercase()))
}

/// Parses a duration: plain seconds (`60`, `0.5`) or a number with a unit (`500ms`, `25s`,
/// `5m`, `2h`, `7d`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!("{s:?} is not a duration (seconds like 60 or 0.5, or with a unit: 500ms, 25s, 5m, 2h, 7d)")
    };
    let (number, unit) = number_and_unit(s).ok_or_else(bad)?;
    let scale = if unit.is_empty() {
        1.0
    } else {
        DURATION_UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, scale)| *scale)
            .ok_or_else(bad)?
    };
    if number < 0.0 {
        return Err(format!("{s:?} is negative: a duration must be 0 or more"));
    }
    Duration::try_from_secs_f64(number * scale).map_err(|_| bad())
}

/// Parses a size: bytes (`4096`) or a number with a unit (`64KiB`, `16MiB`, `1GiB`; `KB`, `MB`,
/// `GB` are powers of 1000, `K` is 1024).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let bad =
        || format!("{s:?} is not a size (bytes like 4096, or with a unit: 64KiB, 16MiB, 1GiB)");
    let (number, unit) = number_and_unit(s).ok_or_else(bad)?;
    let scale = if unit.is_empty() {
        1.0
    } else {
        SIZE_UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, scale)| *scale)
            .ok_or_else(bad)?
    };
    let bytes = (number * scale).round();
    if !(0.0..=usize::MAX as f64).contains(&bytes) {
        return Err(format!(
            "{s:?} is not a size from 0 to {} bytes",
            usize::MAX
        ));
    }
    Ok(bytes as usize)
}

/// A parser that accepts what `parse` accepts within `min..=max`, naming the range (as `show`
/// writes it) when a value falls outside.
fn within<T: PartialOrd + Copy + Send + Sync + 'static>(
    parse: fn(&str) -> Result<T, String>,
    show: fn(T) -> String,
    min: T,
    max: T,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |s| {
        let value = parse(s)?;
        if value < min || value > max {
            return Err(format!(
                "{s:?} is out of range: from {} to {}",
                show(min),
                show(max)
            ));
        }
        Ok(value)
    }
}

/// A clap value parser for a duration within `min..=max`.
pub fn duration_in(
    min: Duration,
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    within(parse_duration, show_duration, min, max)
}

/// A clap value parser for "how long to keep": a duration up to `max`, or `forever` (`None`).
pub fn keep_in(
    max: Duration,
) -> impl Fn(&str) -> Result<Option<Duration>, String> + Clone + Send + Sync + 'static {
    let within = duration_in(Duration::ZERO, max);
    move |s| {
        if s.trim().eq_ignore_ascii_case("forever") {
            return Ok(None);
        }
        within(s)
            .map(Some)
            .map_err(|e| format!("{e} (or `forever`)"))
    }
}

/// A clap value parser for a size in bytes within `min..=max`.
pub fn size_in(
    min: usize,
    max: usize,
) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync + 'static {
    within(parse_size, show_size, min, max)
}

/// The largest unit that shows `d` exactly, for range messages (`10ms`, `1h`, `3650d`).
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, per) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= per && ms.is_multiple_of(per) {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

/// The largest binary unit that shows `n` exactly (`512`, `4KiB`, `16MiB`).
pub fn show_size(n: usize) -> String {
    for (unit, per) in [("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
        if n >= per && n.is_multiple_of(per) {
            return format!("{}{unit}", n / per);
        }
    }
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_plain_seconds_and_units() {
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("25s"), Ok(Duration::from_secs(25)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration(" 2 H "), Ok(Duration::from_secs(7200)));
    }

    #[test]
    fn durations_refuse_what_the_server_cannot_use() {
        for bad in [
            "inf",
            "-1",
            "nan",
            "NaN",
            "1e30",
            "1e400",
            "",
            "5 parsecs",
            "s",
            "-0.5s",
        ] {
            let within = duration_in(Duration::from_millis(10), HOUR);
            assert!(within(bad).is_err(), "{bad:?} was accepted");
        }
        let within = duration_in(Duration::from_millis(50), HOUR);
        let error = within("2h").unwrap_err();
        assert!(error.contains("from 50ms to 1h"), "{error}");
    }

    #[test]
    fn keep_takes_forever_and_zero() {
        let keep = keep_in(10 * YEAR);
        assert_eq!(keep("forever"), Ok(None));
        assert_eq!(keep("0"), Ok(Some(Duration::ZERO)));
        assert_eq!(keep("1d"), Ok(Some(DAY)));
        assert!(keep("1e30").is_err());
        assert!(keep("-1").is_err());
    }

    #[test]
    fn sizes_take_bytes_and_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(64 * KIB));
        assert_eq!(parse_size("16MiB"), Ok(16 * MIB));
        assert_eq!(parse_size("1gib"), Ok(GIB));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        for bad in ["-1", "nan", "1e400", "12 furlongs", "MiB", "inf"] {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
        let error = size_in(KIB, GIB)("10").unwrap_err();
        assert!(error.contains("from 1KiB to 1GiB"), "{error}");
    }

    #[test]
    fn shown_bounds_read_naturally() {
        assert_eq!(show_duration(Duration::from_millis(10)), "10ms");
        assert_eq!(show_duration(HOUR), "1h");
        assert_eq!(show_duration(10 * YEAR), "3650d");
        assert_eq!(show_size(65_507), "65507");
        assert_eq!(show_size(16 * MIB), "16MiB");
    }
}
