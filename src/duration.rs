//! duration: the one way durations are read and written — in the configuration, the rules,
//! the command line, the HTTP API and every message. Written compactly (`30m`, `1h30m`,
//! `2d3h`, `250ms`); read leniently (also `1h 30m`, `90s`, `2 days`) with one plain error.

use std::fmt;
use std::time::Duration;

/// What a bad duration says, wherever it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    got: String,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "expected a duration such as 30m or 1h30m, got `{}`",
            crate::escape::log_text(&self.got)
        )
    }
}

impl std::error::Error for DurationError {}

/// Read a duration: a number followed by a unit (`ms`, `s`, `m`, `h`, `d`, `w` and their long
/// names), several such parts in a row, spaces allowed between them.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError { got: text.into() });
    }
    humantime::parse_duration(trimmed).map_err(|_| DurationError { got: text.into() })
}

/// Write a duration compactly: the largest units first, no spaces, zero parts left out;
/// sub-millisecond remainders are dropped (`0s` for nothing at all).
pub fn format(duration: Duration) -> String {
    const UNITS: [(&str, u128); 5] = [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let mut left = duration.as_millis();
    if left == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in UNITS {
        let count = left / size;
        if count > 0 {
            out.push_str(&count.to_string());
            out.push_str(unit);
            left -= count * size;
        }
    }
    out
}

/// The same way, rounded down to the largest unit and the next one (`1h5m`, `2d3h`, `42m10s`):
/// how long an incident lasted, for a person.
pub fn format_rough(duration: Duration) -> String {
    const UNITS: [(&str, u64); 4] = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let seconds = duration.as_secs();
    let Some(first) = UNITS.iter().position(|(_, size)| seconds >= *size) else {
        return "0s".to_owned();
    };
    let (unit, size) = UNITS[first];
    let mut out = format!("{}{unit}", seconds / size);
    if let Some((next_unit, next_size)) = UNITS.get(first + 1) {
        let count = seconds % size / next_size;
        if count > 0 {
            out.push_str(&format!("{count}{next_unit}"));
        }
    }
    out
}

/// A duration that prints the one way, for `format!` and log fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shown(pub Duration);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format(self.0))
    }
}

/// Milliseconds since the epoch as RFC 3339 in UTC (`2026-12-08T04:00:00Z`), the one way a
/// point in time appears in logs and messages.
pub fn rfc3339_millis(epoch_millis: i64) -> String {
    crate::episodes::reconcile::canonical_time(crate::clock::millis_to_datetime(epoch_millis))
}

/// `#[serde(with = "crate::duration::text")]`: a duration field written as text.
pub mod text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format(*duration))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with = "crate::duration::text_option")]`: an optional duration field.
pub mod text_option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => serializer.serialize_str(&super::format(*duration)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| super::parse(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_compact_and_spaced_forms() {
        assert_eq!(parse("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse(" 250ms ").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("2d").unwrap(), Duration::from_secs(2 * 86_400));
    }

    #[test]
    fn bad_text_gets_one_plain_message() {
        for bad in ["bogus", "", "30", "m", "-5m", "1h30x"] {
            let error = parse(bad).unwrap_err().to_string();
            assert_eq!(
                error,
                format!("expected a duration such as 30m or 1h30m, got `{bad}`"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn writes_compactly_and_reads_back() {
        for (duration, text) in [
            (Duration::from_secs(1800), "30m"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_millis(1500), "1s500ms"),
            (Duration::from_secs(90_000), "1d1h"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(format(duration), text);
            assert_eq!(parse(text).unwrap(), duration);
        }
    }

    #[test]
    fn rough_keeps_two_units() {
        for (seconds, text) in [
            (42 * 60 + 10, "42m10s"),
            (3600 + 5 * 60 + 7, "1h5m"),
            (2 * 86_400 + 3 * 3600 + 59, "2d3h"),
            (86_400 + 59, "1d"),
            (30, "30s"),
            (0, "0s"),
        ] {
            assert_eq!(format_rough(Duration::from_secs(seconds)), text);
        }
    }

    #[test]
    fn points_in_time_are_rfc3339() {
        assert_eq!(rfc3339_millis(1_796_702_400_000), "2026-12-08T04:00:00Z");
        assert_eq!(
            rfc3339_millis(1_796_702_400_250),
            "2026-12-08T04:00:00.250Z"
        );
    }
}
