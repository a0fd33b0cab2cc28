//! The `Age` header field (RFC 9111 §5.1): reading an upstream's, and the value relay emits
//! with a response served from cache (its current age, §4.2.3, saturating at 2^31).

use super::freshness::current_age;
use super::{DELTA_SECONDS_MAX, StoredMeta, list_elements, parse_delta_seconds};

/// Reads `Age`: the first member of the first line (a list-valued `Age` keeps its first
/// member); `None` when absent or invalid ("a cache SHOULD ignore the field").
pub fn parse_age<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Option<u32> {
    let first_line = lines.into_iter().next()?;
    let first = list_elements(first_line).next()?;
    parse_delta_seconds(first)
}

/// The `Age` value to send with a stored response at `now`: its current age in seconds,
/// 2^31 when larger (§5.1: "transmit an Age header field with a value of 2147483648").
pub fn age_value(stored: &StoredMeta, now: u64) -> u32 {
    u32::try_from(current_age(stored, now))
        .unwrap_or(DELTA_SECONDS_MAX)
        .min(DELTA_SECONDS_MAX)
}

/// Appends the decimal `value` (an `Age` field value) to `out`, without allocating.
pub fn write_age(value: u32, out: &mut Vec<u8>) {
    let mut digits = [0u8; 10];
    let mut n = value;
    let mut i = digits.len();
    loop {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(i..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyConfig;

    #[test]
    fn rfc9111_5_1_parse_age() {
        assert_eq!(parse_age([&b"60"[..]]), Some(60));
        assert_eq!(
            parse_age([&b" 60 , 30"[..]]),
            Some(60),
            "list: first member"
        );
        assert_eq!(parse_age([&b"7"[..], b"9"]), Some(7));
        assert_eq!(parse_age([&b"99999999999"[..]]), Some(DELTA_SECONDS_MAX));
        for bad in [&b"-1"[..], b"", b"1.5", b"abc", b"\"5\""] {
            assert_eq!(parse_age([bad]), None, "{bad:?}");
        }
        assert_eq!(parse_age(std::iter::empty()), None);
    }

    #[test]
    fn rfc9111_5_1_emitted_age_saturates() {
        let h = [(&b"Age"[..], &b"10"[..])];
        let m = StoredMeta::from_response(200, h, 100, 100, &PolicyConfig::default());
        assert_eq!(age_value(&m, 100), 10);
        assert_eq!(age_value(&m, 150), 60);
        assert_eq!(age_value(&m, u64::MAX), DELTA_SECONDS_MAX);
        let h = [(&b"Age"[..], &b"2147483648"[..])];
        let m = StoredMeta::from_response(200, h, 100, 100, &PolicyConfig::default());
        assert_eq!(age_value(&m, 1000), DELTA_SECONDS_MAX);
    }

    #[test]
    fn write_age_digits() {
        for v in [0u32, 7, 10, 2_147_483_648, u32::MAX] {
            let mut out = b"Age: ".to_vec();
            write_age(v, &mut out);
            assert_eq!(out, format!("Age: {v}").into_bytes());
        }
    }
}
