//! [`ByteSize`]: a byte count written as an integer or as a string with a unit.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A size in bytes. In TOML: an integer (`4096`) or a string with an optional
/// binary unit (`"4096"`, `"64 KiB"`, `"1MiB"`, `"1 GiB"`). Units are `B`,
/// `KiB`, `MiB`, `GiB` and `TiB`, case-insensitive; decimal units (`KB`, `MB`)
/// are refused rather than guessed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

/// 1 KiB.
pub const KIB: u64 = 1 << 10;
/// 1 MiB.
pub const MIB: u64 = 1 << 20;
/// 1 GiB.
pub const GIB: u64 = 1 << 30;
/// 1 TiB.
pub const TIB: u64 = 1 << 40;

const UNITS: [(&str, u64); 5] = [
    ("B", 1),
    ("KiB", KIB),
    ("MiB", MIB),
    ("GiB", GIB),
    ("TiB", TIB),
];

/// Why a byte-size string did not parse.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteSizeError {
    /// No leading digits.
    #[error("expected a number of bytes, optionally followed by B, KiB, MiB, GiB or TiB")]
    NoNumber,
    /// The unit is not one of B, KiB, MiB, GiB, TiB.
    #[error("unknown unit; use B, KiB, MiB, GiB or TiB")]
    UnknownUnit,
    /// The size does not fit in 64 bits.
    #[error("too large")]
    Overflow,
}

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(digits_end);
        if digits.is_empty() {
            return Err(ByteSizeError::NoNumber);
        }
        let number: u64 = digits.parse().map_err(|_| ByteSizeError::Overflow)?;
        let unit = unit.trim_start();
        let multiplier = if unit.is_empty() {
            1
        } else {
            UNITS
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(unit))
                .map(|&(_, m)| m)
                .ok_or(ByteSizeError::UnknownUnit)?
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or(ByteSizeError::Overflow)
    }
}

impl fmt::Display for ByteSize {
    /// The largest unit that divides the size exactly: `64 KiB`, `1000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        match UNITS
            .iter()
            .rev()
            .find(|&&(_, m)| m > 1 && n != 0 && n.is_multiple_of(m))
        {
            Some((name, m)) => write!(f, "{} {name}", n / m),
            None => write!(f, "{n}"),
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ByteSizeVisitor)
    }
}

struct ByteSizeVisitor;

impl Visitor<'_> for ByteSizeVisitor {
    type Value = ByteSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte size: an integer or a string like \"64 KiB\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
        Ok(ByteSize(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
        u64::try_from(v)
            .map(ByteSize)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
        v.parse()
            .map_err(|e| E::custom(format_args!("invalid byte size {v:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        for (text, want) in [
            ("4096", 4096),
            (" 4096 ", 4096),
            ("0", 0),
            ("12B", 12),
            ("64 KiB", 64 * KIB),
            ("64kib", 64 * KIB),
            ("1MiB", MIB),
            ("256 MiB", 256 * MIB),
            ("1 GiB", GIB),
            ("2 TiB", 2 * TIB),
            ("16777215 TiB", 16_777_215 * TIB),
        ] {
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(want)), "{text:?}");
        }
    }

    #[test]
    fn rejects_bad_strings() {
        use ByteSizeError::*;
        for (text, want) in [
            ("", NoNumber),
            ("KiB", NoNumber),
            ("-5", NoNumber),
            ("1.5 MiB", UnknownUnit),
            ("64 KB", UnknownUnit),
            ("64 K", UnknownUnit),
            ("12 parsecs", UnknownUnit),
            ("1 MiB extra", UnknownUnit),
            ("99999999999999999999", Overflow),
            ("16777216 TiB", Overflow),
        ] {
            assert_eq!(text.parse::<ByteSize>(), Err(want), "{text:?}");
        }
    }

    #[test]
    fn displays_in_largest_exact_unit() {
        assert_eq!(ByteSize(1000).to_string(), "1000");
        assert_eq!(ByteSize(0).to_string(), "0");
        assert_eq!(ByteSize(4 * KIB).to_string(), "4 KiB");
        assert_eq!(ByteSize(3 * MIB).to_string(), "3 MiB");
        assert_eq!(ByteSize(MIB + KIB).to_string(), "1025 KiB");
        assert_eq!(ByteSize(1 << 41).to_string(), "2 TiB");
    }
}
