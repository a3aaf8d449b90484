//! Seconds as a user gives them (flags and the daemon's settings file): one range check for
//! every duration, so that no value reaches `Duration` or nanosecond arithmetic that could
//! overflow or panic there (1e19, 1e300, NaN, inf).

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
