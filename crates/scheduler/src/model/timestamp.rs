//! Marathon's timestamp format: UTC, millisecond precision, `Z` suffix
//! (`2026-11-23T10:00:00.000Z`). Clients break on `+00:00` offsets.

use chrono::{DateTime, SecondsFormat, Timelike, Utc};

/// Formats `t` the way Marathon 1.10 does: always exactly three fractional
/// digits and a `Z`, never an offset. Sub-millisecond precision is truncated.
pub fn marathon_timestamp(t: DateTime<Utc>) -> String {
    truncate_to_millis(t).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses any RFC 3339 timestamp (any offset, any precision) into UTC.
pub fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc))
}

/// Drops precision below one millisecond, so that a value survives a
/// render → parse round trip unchanged.
pub fn truncate_to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = t.nanosecond();
    // `nanosecond()` may exceed 999_999_999 during a leap second; keep it in range.
    let millis_nanos = (nanos / 1_000_000) * 1_000_000;
    t.with_nanosecond(millis_nanos).unwrap_or(t)
}

/// The current time as Marathon stores versions (millisecond precision).
pub fn now_millis() -> DateTime<Utc> {
    truncate_to_millis(Utc::now())
}

/// `#[serde(with = "timestamp::option")]` for `Option<DateTime<Utc>>` in
/// Marathon's format.
pub mod option {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(t) => s.serialize_str(&marathon_timestamp(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let raw = Option::<String>::deserialize(d)?;
        raw.map(|s| parse_timestamp(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// `#[serde(with = "timestamp::required")]` for `DateTime<Utc>`.
pub mod required {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&marathon_timestamp(*v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let raw = String::deserialize(d)?;
        parse_timestamp(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn three_digits_and_z() {
        let t = Utc
            .with_ymd_and_hms(2026, 11, 23, 10, 0, 0)
            .single()
            .expect("valid date");
        assert_eq!(marathon_timestamp(t), "2026-11-23T10:00:00.000Z");
        let t = t + chrono::Duration::nanoseconds(123_456_789);
        assert_eq!(marathon_timestamp(t), "2026-11-23T10:00:00.123Z");
        let s = marathon_timestamp(Utc::now());
        assert!(s.ends_with('Z'));
        let frac = s.rsplit('.').next().expect("has fraction");
        assert_eq!(frac.len(), 4, "{s}");
    }

    #[test]
    fn offsets_become_utc() {
        let t = parse_timestamp("2026-11-23T12:00:00.5+02:00").expect("valid");
        assert_eq!(marathon_timestamp(t), "2026-11-23T10:00:00.500Z");
    }
}
