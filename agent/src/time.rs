//! Time as the agent reads and writes it: Unix seconds inside, RFC 3339
//! (`2026-11-22T04:57:28Z`) in logs, state and JSON, and kubeadm's
//! `Jan 02, 2006 15:04 UTC` in tables. Formatting and parsing are jiff's.
//!
//! Boundary: a leaf. It owns the clock and the time formats, and uses
//! nothing of the agent.
//!
//! Parsing never panics, whatever the input: remote objects (a
//! RenewRevocation's `notBefore`) and files reach it.

use jiff::Timestamp;

/// Current Unix time in seconds.
pub fn now_unix() -> i64 {
    Timestamp::now().as_second()
}

/// Current Unix time in microseconds, the unit of systemd's timestamps.
pub fn now_us() -> u64 {
    u64::try_from(Timestamp::now().as_microsecond()).unwrap_or(0)
}

/// Microseconds since the epoch as RFC 3339 UTC to the millisecond
/// (`2026-11-22T04:57:28.125Z`).
pub fn rfc3339_us(us: u64) -> String {
    match i64::try_from(us)
        .ok()
        .and_then(|us| Timestamp::from_microsecond(us).ok())
    {
        Some(t) => format!("{t:.3}"),
        None => format!("{us}us since the epoch"),
    }
}

/// A span of microseconds as systemd prints one: `10s`, `500ms`,
/// `1min 30s`, `2h`.
pub fn short_span_us(us: u64) -> String {
    if us == 0 {
        return "0".to_string();
    }
    if us < 1_000_000 {
        return if us % 1000 == 0 {
            format!("{}ms", us / 1000)
        } else {
            format!("{us}us")
        };
    }
    let mut secs = us / 1_000_000;
    let mut parts = Vec::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("min", 60)] {
        if secs >= size {
            parts.push(format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    let ms = (us % 1_000_000) / 1000;
    if secs > 0 || ms > 0 {
        parts.push(if ms > 0 {
            format!("{secs}.{ms:03}s")
        } else {
            format!("{secs}s")
        });
    }
    parts.join(" ")
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
    fn spans_read_like_systemds() {
        assert_eq!(short_span_us(10_000_000), "10s");
        assert_eq!(short_span_us(500_000), "500ms");
        assert_eq!(short_span_us(90_000_000), "1min 30s");
        assert_eq!(short_span_us(7_200_000_000), "2h");
        assert_eq!(short_span_us(2_500_000), "2.500s");
        assert_eq!(short_span_us(0), "0");
        assert_eq!(rfc3339_us(1_500_000), "1970-01-01T00:00:01.500Z");
    }

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
