//! Time as the agent reads and writes it: Unix seconds inside, RFC 3339
//! (`2026-11-22T04:57:28Z`) in logs, state and JSON, and kubeadm's
//! `Jan 02, 2006 15:04 UTC` in tables. Formatting and parsing are jiff's.
//!
//! Parsing never panics, whatever the input: remote objects (a
//! RenewRevocation's `notBefore`) and files reach it.

use jiff::Timestamp;

/// Current Unix time in seconds.
pub fn now_unix() -> i64 {
    Timestamp::now().as_second()
}

/// Unix seconds as RFC 3339 UTC (`2026-11-22T04:57:28Z`). A time outside
/// jiff's range (years -9999..=9999), which no certificate has, prints as
/// its number of seconds.
pub fn rfc3339(unix: i64) -> String {
    match Timestamp::from_second(unix) {
        Ok(t) => t.to_string(),
        Err(_) => format!("{unix}s since the epoch"),
    }
}

/// An RFC 3339 timestamp (with a `Z` or a numeric offset, optional
/// fractional seconds) as Unix seconds; `None` for anything else.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    // jiff also reads ISO 8601 forms RFC 3339 has not (time zone
    // annotations, a missing seconds field); those are no RFC 3339.
    let b = s.as_bytes();
    let shaped = b.len() >= 20
        && b.get(4) == Some(&b'-')
        && b.get(7) == Some(&b'-')
        && matches!(b.get(10), Some(b'T' | b't' | b' '))
        && b.get(13) == Some(&b':')
        && b.get(16) == Some(&b':')
        && !s.contains('[');
    if !shaped {
        return None;
    }
    s.parse::<Timestamp>().ok().map(|t| t.as_second())
}

/// kubeadm's date format, `Jan 02, 2006 15:04 UTC`.
pub fn kubeadm_date(unix: i64) -> String {
    match Timestamp::from_second(unix) {
        Ok(t) => t.strftime("%b %d, %Y %H:%M UTC").to_string(),
        Err(_) => rfc3339(unix),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_323_448), "2026-11-22T04:57:28Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn rfc3339_parses_and_round_trips() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-11-22T04:57:28Z"), Some(1_795_323_448));
        assert_eq!(
            parse_rfc3339("2026-11-22T05:57:28+01:00"),
            Some(1_795_323_448)
        );
        assert_eq!(
            parse_rfc3339("2026-11-22T04:57:28.123456Z"),
            Some(1_795_323_448)
        );
        for t in [0, 951_782_400, 1_795_323_448] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-11-22 04:57",
            "2026-11-22T04:57:28",
            "yesterday",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn multibyte_input_never_panics() {
        // Sliced inside a UTF-8 character by the hand-written parser this
        // replaces: an API object could abort the daemon with it.
        for s in [
            "2026-01-01T00:00:00+0é:0",
            "2026-01-01T00:00:00é",
            "é026-01-01T00:00:00Z",
            "2026-01-01T00:00:00.ééZ",
            "2026-01-01T00:00:00Z[America/New_York]",
        ] {
            assert_eq!(parse_rfc3339(s), None, "{s}");
        }
    }
}
