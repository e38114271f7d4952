//! RFC 3339 timestamps and Unix milliseconds, with `chrono`: the edge links it already
//! (for its JWTs), so the wasm pays nothing for it here, and both parts read and write
//! times one way. The clock is always passed in.

use chrono::{DateTime, SecondsFormat, Utc};

/// Formats Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let t = i64::try_from(unix_ms).ok().and_then(DateTime::<Utc>::from_timestamp_millis).unwrap_or_default();
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 time with its offset (`YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM|-HH:MM)`,
/// as this module writes it, or as a client sends a local time) to Unix ms. A time
/// without an offset is refused: it would mean a different instant on every server.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    u64::try_from(DateTime::parse_from_rfc3339(s).ok()?.timestamp_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_795_651_199_999), "2026-11-25T23:59:59.999Z");
    }

    #[test]
    fn parses_what_it_formats() {
        for ms in [0, 951_782_400_123, 1_795_651_199_999, 4_102_444_800_000] {
            assert_eq!(parse_rfc3339_ms(&rfc3339_ms(ms)), Some(ms));
        }
        assert_eq!(parse_rfc3339_ms("2026-11-25T06:00:00Z"), Some(1_795_586_400_000));
        assert_eq!(parse_rfc3339_ms("2026-11-25T06:00:00.5Z"), Some(1_795_586_400_500));
        assert_eq!(parse_rfc3339_ms("2026-13-25T06:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn parses_offsets_to_the_same_instant() {
        let utc = parse_rfc3339_ms("2026-11-25T06:00:00Z");
        assert_eq!(parse_rfc3339_ms("2026-11-25T08:00:00+02:00"), utc);
        assert_eq!(parse_rfc3339_ms("2026-11-24T22:30:00.000-07:30"), utc);
        assert_eq!(parse_rfc3339_ms("2026-11-25T06:00:00"), None, "no offset: not an instant");
        assert_eq!(parse_rfc3339_ms("2026-11-25T06:00:00+2:00"), None);
        assert_eq!(parse_rfc3339_ms("2026-11-25T06:00:00+24:00"), None);
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:30:00+01:00"), None, "before 1970");
    }
}
