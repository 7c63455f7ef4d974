//! Time as stored (unix milliseconds) and as shown (ISO 8601 UTC with `Z`), and durations as
//! logged (microseconds).

use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};

/// Milliseconds since the unix epoch, the representation in both stores.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// `2025-01-01T00:00:00.000Z`.
pub fn iso8601(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Microseconds since `started`, the unit durations are logged in.
pub fn micros_since(started: Instant) -> i64 {
    i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_z() {
        assert_eq!(iso8601(1_735_689_600_000), "2025-01-01T00:00:00.000Z");
    }
}
