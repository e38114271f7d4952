//! RFC 3339 timestamps from Unix milliseconds, without a date library (the edge's
//! wasm stays small and the clock is always passed in).

/// Formats Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, unix_ms % 1000)
}

/// Parses an RFC 3339 time with its offset (`YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM|-HH:MM)`,
/// as this module writes it, or as a client sends a local time) to Unix ms. A time
/// without an offset is refused: it would mean a different instant on every server.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = &s[19..];
    let (frac, offset_ms) = match rest.strip_suffix('Z') {
        Some(frac) => (frac, 0i64),
        None => {
            let zone = rest.get(rest.len().checked_sub(6)?..)?;
            let zb = zone.as_bytes();
            if !matches!(zb[0], b'+' | b'-') || zb[3] != b':' {
                return None;
            }
            let (oh, om) = (zone[1..3].parse::<i64>().ok()?, zone[4..6].parse::<i64>().ok()?);
            if oh > 23 || om > 59 {
                return None;
            }
            let sign = if zb[0] == b'+' { 1 } else { -1 };
            (&rest[..rest.len() - 6], sign * (oh * 3600 + om * 60) * 1000)
        }
    };
    let ms = match frac {
        "" => 0,
        frac => {
            let digits = frac.strip_prefix('.')?;
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let mut padded = digits.chars().chain(std::iter::repeat('0')).take(3).collect::<String>();
            padded.truncate(3);
            padded.parse().ok()?
        }
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = days_from_civil(y as i64, mo as u32, d as u32);
    let local = (days * 86_400 + (h * 3600 + mi * 60 + se) as i64) * 1000 + ms as i64;
    u64::try_from(local - offset_ms).ok()
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
