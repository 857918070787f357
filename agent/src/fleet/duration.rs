//! `--timeout DURATION`: operator input, parsed by jiff (`90s`, `5m`,
//! `1h30m`, `2 minutes`, ISO 8601 `PT5M`). Never panics; zero, negative
//! and absurd values are refused with the value named.

use std::time::Duration;

/// The longest `--timeout` accepted: a week. A longer wait is a mistake.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 86400);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("--timeout {value:?} is not a duration; write it as 90s, 5m or 1h30m")]
    Parse { value: String },
    #[error("--timeout {value:?} must be more than zero; write it as 90s, 5m or 1h30m")]
    NotPositive { value: String },
    #[error("--timeout {value:?} is longer than a week; give a shorter one")]
    TooLong { value: String },
}

/// Parses a `--timeout` value.
pub fn parse_timeout(value: &str) -> Result<Duration, DurationError> {
    let d: jiff::SignedDuration = value.trim().parse().map_err(|_| DurationError::Parse {
        value: value.to_string(),
    })?;
    if d.is_negative() || d.is_zero() {
        return Err(DurationError::NotPositive {
            value: value.to_string(),
        });
    }
    let d = d.unsigned_abs();
    if d > MAX_TIMEOUT {
        return Err(DurationError::TooLong {
            value: value.to_string(),
        });
    }
    Ok(d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn kubectl_style_durations_parse() {
        assert_eq!(parse_timeout("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_timeout("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_timeout("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_timeout("PT2M"), Ok(Duration::from_secs(120)));
    }

    #[test]
    fn bad_durations_are_refused_with_the_value() {
        assert!(matches!(
            parse_timeout("soon"),
            Err(DurationError::Parse { .. })
        ));
        assert!(matches!(
            parse_timeout("0s"),
            Err(DurationError::NotPositive { .. })
        ));
        assert!(matches!(
            parse_timeout("-5m"),
            Err(DurationError::NotPositive { .. })
        ));
        assert!(matches!(
            parse_timeout("9999h"),
            Err(DurationError::TooLong { .. })
        ));
        assert!(parse_timeout("soon")
            .unwrap_err()
            .to_string()
            .contains("\"soon\""));
    }
}
