//! `origin.pass_buffer_per_client` as written: a fraction of the budget (`0.25`, `"25%"`) or a
//! byte size (`"32 MiB"`, `33554432`), `0` for no bound; and its check against the budget.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

use crate::bytesize::{ByteSize, KIB};
use crate::schema::{ClientShare, PER_MILLION};

/// The value as the file wrote it, before it is checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawShare {
    /// A TOML float, or a string ending in `%` (already divided by 100).
    Fraction(f64),
    /// An integer, or a byte-size string.
    Bytes(ByteSize),
}

impl<'de> Deserialize<'de> for RawShare {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawShareVisitor)
    }
}

struct RawShareVisitor;

impl Visitor<'_> for RawShareVisitor {
    type Value = RawShare;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a fraction of origin.pass_buffer_bytes (0.25 or \"25%\") or a byte size \
             (\"32 MiB\")",
        )
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawShare, E> {
        Ok(RawShare::Fraction(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawShare, E> {
        Ok(RawShare::Bytes(ByteSize(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawShare, E> {
        u64::try_from(v)
            .map(|v| RawShare::Bytes(ByteSize(v)))
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawShare, E> {
        if let Some(percent) = v.trim().strip_suffix('%') {
            return percent
                .trim()
                .parse::<f64>()
                .map(|p| RawShare::Fraction(p / 100.0))
                .map_err(|_| E::custom(format_args!("invalid percentage {v:?}")));
        }
        v.parse()
            .map(RawShare::Bytes)
            .map_err(|e| E::custom(format_args!("invalid byte size {v:?}: {e}")))
    }
}

/// The smallest share in bytes written as such (0 aside).
pub(crate) const MIN_SHARE_BYTES: u64 = 64 * KIB;

/// Checks a share against the budget (`origin.pass_buffer_bytes`) it divides.
pub(crate) fn client_share(raw: RawShare, budget: u64) -> Result<ClientShare, String> {
    match raw {
        RawShare::Fraction(0.0) => Ok(ClientShare::Off),
        RawShare::Fraction(f) if (0.001..=1.0).contains(&f) => Ok(ClientShare::Fraction(
            (f * f64::from(PER_MILLION)).round() as u32,
        )),
        RawShare::Fraction(f) => Err(format!(
            "a fraction must be 0 (no bound) or between 0.001 and 1 (0.1% to 100%), got {f}"
        )),
        RawShare::Bytes(ByteSize(0)) => Ok(ClientShare::Off),
        RawShare::Bytes(b) if b.0 >= MIN_SHARE_BYTES && b.0 <= budget => {
            Ok(ClientShare::Bytes(b.0))
        }
        RawShare::Bytes(b) => Err(format!(
            "a byte size must be 0 (no bound) or between {} and origin.pass_buffer_bytes ({}), \
             got {b}",
            ByteSize(MIN_SHARE_BYTES),
            ByteSize(budget)
        )),
    }
}
