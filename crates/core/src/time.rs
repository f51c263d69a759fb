//! Timestamps as they appear in events: UTC, RFC 3339, whole seconds plus an optional
//! fraction, always with `Z`. One spelling per instant keeps canonical JSON stable.

use serde::{Deserialize, Serialize};
use std::fmt;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Timestamp(OffsetDateTime);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timestamp {0:?} is not an RFC 3339 UTC time such as 2026-01-31T12:00:00Z")]
pub struct TimestampError(String);

impl Timestamp {
    /// The current time, truncated to milliseconds.
    pub fn now() -> Self {
        Self::from_unix_millis(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
    }

    pub fn from_unix_millis(ms: i128) -> Self {
        let t = OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        Self(t)
    }

    pub fn from_unix_seconds(s: i64) -> Self {
        Self::from_unix_millis(i128::from(s) * 1000)
    }

    pub fn unix_seconds(&self) -> i64 {
        self.0.unix_timestamp()
    }

    pub fn unix_millis(&self) -> i128 {
        self.0.unix_timestamp_nanos() / 1_000_000
    }

    pub fn as_offset_date_time(&self) -> OffsetDateTime {
        self.0
    }
}

impl From<OffsetDateTime> for Timestamp {
    fn from(t: OffsetDateTime) -> Self {
        Self::from_unix_millis(t.unix_timestamp_nanos() / 1_000_000)
    }
}

impl std::str::FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TimestampError(s.chars().take(80).collect());
        if !s.ends_with('Z') {
            return Err(bad());
        }
        let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| bad())?;
        let ts = Timestamp::from(t);
        // Only the one spelling we would write ourselves is accepted.
        if ts.to_string() != s {
            return Err(bad());
        }
        Ok(ts)
    }
}

impl TryFrom<String> for Timestamp {
    type Error = TimestampError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Timestamp> for String {
    fn from(t: Timestamp) -> String {
        t.to_string()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.format(&Rfc3339) {
            Ok(s) => f.write_str(&s),
            Err(_) => write!(f, "@{}", self.0.unix_timestamp()),
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling_per_instant() {
        let t = Timestamp::from_unix_millis(1_764_000_000_123);
        let s = t.to_string();
        assert_eq!(s, "2025-11-24T16:00:00.123Z");
        assert_eq!(s.parse::<Timestamp>(), Ok(t));
        assert_eq!(
            Timestamp::from_unix_seconds(0).to_string(),
            "1970-01-01T00:00:00Z"
        );
        for bad in [
            "2025-11-24T16:00:00+01:00",
            "2025-11-24T16:00:00.1230Z",
            "yesterday",
            "",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad}");
        }
    }
}
