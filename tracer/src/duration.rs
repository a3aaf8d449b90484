//! Time as people give it and as msitrace shows it, in one place. Given: seconds from flags and
//! the daemon's settings file, with one range check for every duration, so that no value
//! reaches `Duration` or nanosecond arithmetic that could overflow or panic there (1e19, 1e300,
//! NaN, inf). Shown: durations (`1.5 s`), instants as offsets from the trace's origin
//! (`+1.234 s`; `+1.234567` in dumps), and ages on the live screen (`12.0s`, `3m`).

/// The longest duration accepted: a week. Far beyond any suspend cycle or rule delay, and far
/// below what overflows an `Instant` or a nanosecond `u64` once added to a timestamp.
pub const MAX_SECS: f64 = 7.0 * 24.0 * 3600.0;

fn checked(v: f64, allow_zero: bool) -> Result<f64, String> {
    let low = if allow_zero { "0" } else { "more than 0" };
    let in_range = v.is_finite() && v <= MAX_SECS && (v > 0.0 || (allow_zero && v == 0.0));
    if in_range {
        Ok(v)
    } else {
        Err(format!(
            "{v} is out of range: give a number of seconds from {low} to {MAX_SECS} (a week)"
        ))
    }
}

fn parse(s: &str, allow_zero: bool) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds (e.g. 2.5)"))?;
    checked(v, allow_zero)
}

/// clap's value_parser for a time limit (`--timeout`, `--duration`): more than 0, at most a week.
pub fn parse_limit_secs(s: &str) -> Result<f64, String> {
    parse(s, false)
}

/// clap's value_parser for a rule delay (`--silence`, `--grace`): 0 to a week.
pub fn parse_delay_secs(s: &str) -> Result<f64, String> {
    parse(s, true)
}

/// The same check for a value that did not come through clap (the settings file).
pub fn check_delay_secs(v: f64) -> Result<f64, String> {
    checked(v, true)
}

/// A duration for sentences: `1.5 s`, `12 s`.
pub fn secs(ns: u64) -> String {
    let s = ns as f64 / 1e9;
    if s >= 10.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

/// An instant as an offset from `origin`, to the millisecond: `+1.234 s` (never negative: an
/// instant before the origin shows as `+0.000 s`).
pub fn offset(ts: u64, origin: u64) -> String {
    format!("+{:.3} s", ts.saturating_sub(origin) as f64 / 1e9)
}

/// An instant as a signed offset from `base`, to the microsecond, for event dumps:
/// `+0.500000`, `-0.000001` (an event that precedes the first one).
pub fn offset_us(ts: u64, base: u64) -> String {
    let d = i128::from(ts) - i128::from(base);
    let sign = if d < 0 { '-' } else { '+' };
    let d = d.unsigned_abs();
    format!(
        "{sign}{}.{:06}",
        d / 1_000_000_000,
        d % 1_000_000_000 / 1000
    )
}

/// How long ago, compact for a table cell: `12.0s`, `3m`, `2h`.
pub fn age(ns: u64) -> String {
    let s = ns as f64 / 1e9;
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{:.0}m", s / 60.0)
    } else {
        format!("{:.0}h", s / 3600.0)
    }
}

/// A wall-clock instant from the journal (microseconds since the epoch), RFC 3339 UTC to the
/// microsecond: `2026-12-01T21:11:57.451072Z`.
pub fn utc_us(unix_us: u64) -> String {
    let full = crate::trace_file::rfc3339_ns(i128::from(unix_us) * 1000);
    // The nanoseconds' last three digits are always 000 here.
    format!("{}Z", &full[..full.len() - 4])
}

/// The same instant to the second, for a table cell: `2026-12-01 21:11:57Z`.
pub fn utc_secs(unix_us: u64) -> String {
    let full = crate::trace_file::rfc3339_ns(i128::from(unix_us) * 1000);
    format!("{}Z", full[..19].replacen('T', " ", 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_instants_are_utc() {
        assert_eq!(utc_us(1_796_159_517_451_072), "2026-12-01T21:11:57.451072Z");
        assert_eq!(utc_secs(1_796_159_517_451_072), "2026-12-01 21:11:57Z");
        assert_eq!(utc_us(0), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn every_value_that_could_overflow_is_refused() {
        for bad in ["1e19", "1e300", "NaN", "inf", "-inf", "-1", "x", ""] {
            assert!(parse_limit_secs(bad).is_err(), "{bad}");
            assert!(parse_delay_secs(bad).is_err(), "{bad}");
        }
        assert!(parse_limit_secs("0").is_err());
        assert_eq!(parse_delay_secs("0"), Ok(0.0));
        assert_eq!(parse_limit_secs("2.5"), Ok(2.5));
        assert_eq!(parse_limit_secs("604800"), Ok(MAX_SECS));
        assert!(parse_limit_secs("604800.1").is_err());
    }

    #[test]
    fn offsets_have_a_sign_and_their_precision() {
        assert_eq!(offset_us(1_500_000_000, 1_000_000_000), "+0.500000");
        assert_eq!(offset_us(1_000_000_000, 1_000_001_000), "-0.000001");
        assert_eq!(offset_us(u64::MAX, 0), "+18446744073.709551");
        assert_eq!(offset(2_234_000_000, 1_000_000_000), "+1.234 s");
        assert_eq!(offset(0, 1_000_000_000), "+0.000 s");
        assert_eq!(secs(1_500_000_000), "1.5 s");
        assert_eq!(secs(12_400_000_000), "12 s");
        assert_eq!(age(180_000_000_000), "3m");
    }
}
