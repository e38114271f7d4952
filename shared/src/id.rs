//! Message ids: UUIDv7 (RFC 9562), time-ordered so that ids sort by acceptance.

/// Formats a UUIDv7 from a Unix time in milliseconds, a sequence number and 8 random
/// bytes. The 12-bit sequence (RFC 9562 §6.2, method 1) keeps the ids of one mass
/// message, all accepted in the same millisecond, in request order.
pub fn uuid_v7(unix_ms: u64, seq: u16, random: [u8; 8]) -> String {
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&unix_ms.to_be_bytes()[2..]);
    b[6..8].copy_from_slice(&(0x7000 | (seq & 0x0fff)).to_be_bytes()); // version 7
    b[8..].copy_from_slice(&random);
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 9562 variant
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(char::from(HEX[usize::from(byte >> 4)]));
        s.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    s
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether `s` has the shape of a message id (a lowercase hyphenated UUID). Anything
/// else is rejected before it reaches the ledger, whose reserved sort keys are not UUIDs.
pub fn is_message_id(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v7_layout_and_order() {
        let a = uuid_v7(1_700_000_000_000, 0xfff, [0xff; 8]);
        let b = uuid_v7(1_700_000_000_001, 0, [0x00; 8]);
        assert!(is_message_id(&a) && is_message_id(&b));
        assert_eq!(&a[14..15], "7", "version nibble");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "variant");
        assert!(a < b, "later ids sort after earlier ones");
        assert_eq!(&a[..13], "018bcfe5-6800");
        let same_ms: Vec<String> = (0..1000).map(|i| uuid_v7(1_700_000_000_000, i, [0xff - (i % 256) as u8; 8])).collect();
        assert!(same_ms.windows(2).all(|w| w[0] < w[1]), "sequence orders ids within a millisecond");
    }

    #[test]
    fn rejects_non_ids() {
        assert!(!is_message_id("#summary"));
        assert!(!is_message_id("018BCFE5-6800-7fff-bfff-ffffffffffff"));
        assert!(!is_message_id("018bcfe5-6800-7fff-bfff-fffffffffff"));
    }
}
