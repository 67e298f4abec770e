//! Timestamps and durations as the board writes and reads them.
//!
//! The board writes RFC 3339 UTC timestamps with milliseconds (`2026-11-21T08:03:27.123Z`).
//! It also reads the naive ISO-8601 strings of the original plan (`2025-11-09T10:00:00`) as UTC.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// A point in time on the board.
pub type Timestamp = DateTime<Utc>;

/// Parses a timestamp: RFC 3339 (any offset) or a naive ISO-8601 string taken as UTC.
pub fn parse_timestamp(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(to_millis(t.with_timezone(&Utc)));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(to_millis(t.and_utc()));
        }
    }
    None
}

/// The current time at the precision the board stores (milliseconds), so that a value read
/// back from a file equals the one that was written.
///
/// Debug builds only: `$VINE_TEST_CLOCK_OFFSET` (seconds, may be negative) shifts this clock,
/// so tests can run a process whose clock is wrong. Release builds ignore it.
pub fn now() -> Timestamp {
    let t = Utc::now();
    #[cfg(debug_assertions)]
    let t = t + test_clock_offset();
    to_millis(t)
}

/// The test clock offset of debug builds (`$VINE_TEST_CLOCK_OFFSET` seconds), read once.
#[cfg(debug_assertions)]
fn test_clock_offset() -> chrono::TimeDelta {
    static OFFSET: std::sync::OnceLock<chrono::TimeDelta> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        std::env::var("VINE_TEST_CLOCK_OFFSET")
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .and_then(chrono::TimeDelta::try_seconds)
            .unwrap_or_default()
    })
}

/// `t` without its sub-millisecond part: the board keeps times to the millisecond, the
/// precision it writes, so a value read back equals the one in memory.
fn to_millis(t: Timestamp) -> Timestamp {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// Formats a timestamp the way the board writes it.
pub fn format_timestamp(t: &Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Milliseconds since the Unix epoch (never negative).
pub fn epoch_ms(t: &Timestamp) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

/// Adds seconds to a timestamp, saturating instead of overflowing.
pub fn add_secs(t: Timestamp, secs: u64) -> Timestamp {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    chrono::TimeDelta::try_seconds(secs)
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Whole seconds from `earlier` to `later` (0 if `later` is not after `earlier`).
pub fn secs_between(earlier: Timestamp, later: Timestamp) -> u64 {
    u64::try_from((later - earlier).num_seconds()).unwrap_or(0)
}

/// Parses a duration such as `90s`, `30m`, `2h`, `1d`, `1h30m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let bad = || format!("invalid duration {s:?}: use a number with a unit, e.g. 90s, 30m, 2h, 1d");
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    let mut saw_unit = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        num.clear();
        saw_unit = true;
    }
    if !num.is_empty() || !saw_unit {
        return Err(bad());
    }
    Ok(total)
}

/// Formats seconds compactly: `45s`, `30m`, `1h30m`, `2d`.
pub fn format_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    let mut out = String::new();
    for (n, u) in [(d, 'd'), (h, 'h'), (m, 'm'), (s, 's')] {
        if n > 0 {
            out.push_str(&n.to_string());
            out.push(u);
        }
    }
    out
}

/// Serde adapter for `Option<Timestamp>` fields: writes RFC 3339, reads RFC 3339 or naive ISO.
pub mod opt_ts {
    use super::*;

    /// Serializes an optional timestamp as an RFC 3339 string or null.
    pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format_timestamp(t)),
            None => s.serialize_none(),
        }
    }

    /// Deserializes an optional timestamp from a string (RFC 3339 or naive ISO) or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        let v: Option<String> = Option::deserialize(d)?;
        match v {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => parse_timestamp(&s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp {s:?}"))),
        }
    }
}

/// Serde adapter for required `Timestamp` fields.
pub mod ts {
    use super::*;

    /// Serializes a timestamp as an RFC 3339 string.
    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_timestamp(t))
    }

    /// Deserializes a timestamp from an RFC 3339 or naive ISO string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = String::deserialize(d)?;
        parse_timestamp(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_naive_iso_as_utc_and_writes_rfc3339() {
        let t = parse_timestamp("2025-11-09T10:00:00").unwrap();
        assert_eq!(format_timestamp(&t), "2025-11-09T10:00:00.000Z");
        let t = parse_timestamp("2025-11-09T10:00:00.123456").unwrap();
        assert_eq!(format_timestamp(&t), "2025-11-09T10:00:00.123Z");
        let t = parse_timestamp("2025-11-09T12:00:00+02:00").unwrap();
        assert_eq!(format_timestamp(&t), "2025-11-09T10:00:00.000Z");
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn durations_round_trip() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert_eq!(parse_duration("45"), Ok(45));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("5m3").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert_eq!(format_duration(5400), "1h30m");
        assert_eq!(format_duration(0), "0s");
    }
}
