//! `Range` request header (RFC 9110 §14.1–14.2) into byte ranges, without allocating.
//!
//! The caller owns the output array; [`parse_range`] fills its front and says
//! how many entries are meaningful. Ranges are sorted and overlapping or
//! adjacent ones coalesced (RFC 9110 §14.2 allows it), so a request for the
//! same bytes many times over costs no more than asking once.

/// Most range-specs honoured in one header; more and the header is ignored
/// (the full representation is served) to blunt range-amplification attacks.
pub const MAX_RANGES: usize = 16;

/// An inclusive byte range within a representation of known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ByteRange {
    /// First byte offset.
    pub start: u64,
    /// Last byte offset, inclusive; always `>= start` and `< len`.
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes in the range (never zero).
    #[expect(clippy::len_without_is_empty, reason = "a ByteRange is never empty")]
    pub fn len(&self) -> u64 {
        // `end < len <= u64::MAX` and `start <= end`, so this cannot overflow.
        self.end - self.start + 1
    }
}

/// What to do with a request's `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// Ignore the header and serve the full representation with 200: not the
    /// `bytes` unit, syntactically invalid, or too many ranges.
    None,
    /// Serve one range with 206.
    Single(ByteRange),
    /// Serve the first `n` entries of the output array as `multipart/byteranges`.
    Multi(usize),
    /// No range overlaps the representation: answer 416 with `bytes */len`.
    Unsatisfiable,
}

/// One `range-spec`, before it meets the representation length.
enum Spec {
    /// `first-pos "-" [ last-pos ]`.
    Int { first: u64, last: Option<u64> },
    /// `"-" suffix-length`.
    Suffix(u64),
}

impl Spec {
    fn parse(item: &[u8]) -> Option<Spec> {
        let dash = item.iter().position(|&b| b == b'-')?;
        let (first, last) = (item.get(..dash)?, item.get(dash + 1..)?);
        if first.is_empty() {
            return Some(Spec::Suffix(parse_digits(last)?));
        }
        let first = parse_digits(first)?;
        let last = if last.is_empty() {
            None
        } else {
            Some(parse_digits(last)?)
        };
        if last.is_some_and(|last| last < first) {
            return None;
        }
        Some(Spec::Int { first, last })
    }

    /// The satisfiable part of the range for a representation of `len` bytes.
    fn resolve(&self, len: u64) -> Option<ByteRange> {
        let last_byte = len.checked_sub(1)?;
        match *self {
            Spec::Int { first, last } => (first <= last_byte).then(|| ByteRange {
                start: first,
                end: last.map_or(last_byte, |last| last.min(last_byte)),
            }),
            Spec::Suffix(0) => None,
            Spec::Suffix(n) => Some(ByteRange {
                start: len.saturating_sub(n),
                end: last_byte,
            }),
        }
    }
}

/// `1*DIGIT`, saturating at `u64::MAX` (a huge position is simply past the end).
fn parse_digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The one range a `Range` value asks for, as (first byte, last byte when it names one):
/// `bytes=N-` or `bytes=N-M`. None for a suffix range (`bytes=-N`), several ranges, or a
/// value that is not a byte range. (What a fetch ahead of the answer may ask for; the
/// answer itself follows [`parse_range`].)
pub fn single_range(value: &[u8]) -> Option<(u64, Option<u64>)> {
    let s = std::str::from_utf8(value).ok()?;
    let (unit, set) = s.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut ranges = set.split(',').map(str::trim).filter(|r| !r.is_empty());
    let only = ranges.next()?;
    if ranges.next().is_some() {
        return None;
    }
    let (start, end) = only.split_once('-')?;
    let number = |v: &str| -> Option<u64> {
        let v = v.trim();
        match !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
            true => v.parse().ok(),
            false => None,
        }
    };
    let start = number(start)?;
    match end.trim() {
        "" => Some((start, None)),
        end => number(end)
            .filter(|&e| e >= start)
            .map(|e| (start, Some(e))),
    }
}

/// Evaluates a `Range` field value against a representation of `len` bytes.
///
/// Satisfiable ranges are written to the front of `out`, sorted and coalesced;
/// unsatisfiable ones among satisfiable ones are dropped.
pub fn parse_range(value: &[u8], len: u64, out: &mut [ByteRange; MAX_RANGES]) -> RangeSpec {
    let value = trim_ows(value);
    let Some(eq) = value.iter().position(|&b| b == b'=') else {
        return RangeSpec::None;
    };
    let (unit, set) = value.split_at(eq);
    let set = set.get(1..).unwrap_or_default();
    if !trim_ows(unit).eq_ignore_ascii_case(b"bytes") {
        return RangeSpec::None;
    }

    let mut specs = 0;
    let mut count = 0;
    // `#rule` lists tolerate empty elements and OWS around commas.
    for item in set.split(|&b| b == b',').map(trim_ows) {
        if item.is_empty() {
            continue;
        }
        specs += 1;
        if specs > MAX_RANGES {
            return RangeSpec::None;
        }
        let Some(spec) = Spec::parse(item) else {
            return RangeSpec::None;
        };
        if let Some(range) = spec.resolve(len)
            && let Some(slot) = out.get_mut(count)
        {
            *slot = range;
            count += 1;
        }
    }
    if specs == 0 {
        return RangeSpec::None;
    }
    match coalesce(out.get_mut(..count).unwrap_or_default()) {
        0 => RangeSpec::Unsatisfiable,
        1 => RangeSpec::Single(out[0]),
        n => RangeSpec::Multi(n),
    }
}

/// Sorts `ranges` by start and merges overlapping or adjacent ones in place;
/// returns how many remain at the front.
fn coalesce(ranges: &mut [ByteRange]) -> usize {
    ranges.sort_unstable_by_key(|r| r.start);
    let mut kept: usize = 0;
    for i in 0..ranges.len() {
        let next = ranges[i];
        match kept.checked_sub(1).and_then(|last| ranges.get_mut(last)) {
            Some(prev) if next.start <= prev.end.saturating_add(1) => {
                prev.end = prev.end.max(next.end);
            }
            _ => {
                ranges[kept] = next;
                kept += 1;
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    fn spec(value: &str, len: u64) -> (RangeSpec, Vec<ByteRange>) {
        let mut out = [ByteRange::default(); MAX_RANGES];
        let spec = parse_range(value.as_bytes(), len, &mut out);
        let n = match spec {
            RangeSpec::Single(_) => 1,
            RangeSpec::Multi(n) => n,
            _ => 0,
        };
        (spec, out[..n].to_vec())
    }

    fn single(value: &str, len: u64) -> Option<ByteRange> {
        match spec(value, len).0 {
            RangeSpec::Single(range) => Some(range),
            _ => None,
        }
    }

    #[test]
    fn single_forms() {
        assert_eq!(single("bytes=0-99", 1000), Some(r(0, 99)));
        assert_eq!(single("bytes=100-", 1000), Some(r(100, 999)));
        assert_eq!(single("bytes=-500", 1000), Some(r(500, 999)));
        assert_eq!(single("bytes=0-0", 1000), Some(r(0, 0)));
        assert_eq!(single("bytes=999-999", 1000), Some(r(999, 999)));
        assert_eq!(single("Bytes = 5-9 ", 1000), Some(r(5, 9)));
        assert_eq!(single("BYTES=5-9", 1000), Some(r(5, 9)));
        assert_eq!(r(5, 9).len(), 5);
    }

    #[test]
    fn clamping() {
        assert_eq!(single("bytes=0-99999", 1000), Some(r(0, 999)));
        assert_eq!(single("bytes=-5000", 1000), Some(r(0, 999)));
        assert_eq!(
            single("bytes=990-18446744073709551615", 1000),
            Some(r(990, 999))
        );
        assert_eq!(
            single("bytes=0-99999999999999999999999", 1000),
            Some(r(0, 999))
        );
        assert_eq!(single("bytes=-99999999999999999999999", 10), Some(r(0, 9)));
        assert_eq!(
            single("bytes=0-", u64::MAX),
            Some(r(0, u64::MAX - 1)),
            "largest representation"
        );
        assert_eq!(r(0, u64::MAX - 1).len(), u64::MAX);
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(spec("bytes=1000-", 1000).0, RangeSpec::Unsatisfiable);
        assert_eq!(spec("bytes=1000-2000", 1000).0, RangeSpec::Unsatisfiable);
        assert_eq!(spec("bytes=-0", 1000).0, RangeSpec::Unsatisfiable);
        assert_eq!(
            spec("bytes=5000-6000, 2000-", 1000).0,
            RangeSpec::Unsatisfiable
        );
        assert_eq!(
            spec("bytes=99999999999999999999999-", 1000).0,
            RangeSpec::Unsatisfiable
        );
        // An empty representation satisfies no range at all.
        for value in [
            "bytes=0-0",
            "bytes=0-",
            "bytes=-1",
            "bytes=-0",
            "bytes=0-5,-3",
        ] {
            assert_eq!(spec(value, 0).0, RangeSpec::Unsatisfiable, "{value}");
        }
        // Unsatisfiable members are dropped when others are satisfiable.
        assert_eq!(single("bytes=5000-, 0-9", 1000), Some(r(0, 9)));
    }

    #[test]
    fn ignored_headers() {
        for value in [
            "",
            "bytes",
            "bytes=",
            "bytes= , ,",
            "items=0-5",
            "bytes=-",
            "bytes=5",
            "bytes=a-b",
            "bytes=5-3",
            "bytes=+5-9",
            "bytes=5 - 9",
            "bytes=0-1-2",
            "bytes=--5",
            "bytes=0-5,x",
            "bytes=0x10-",
            "bytes=١-٢",
        ] {
            assert_eq!(spec(value, 1000).0, RangeSpec::None, "{value:?}");
        }
    }

    #[test]
    fn multiple_ranges() {
        let (s, ranges) = spec("bytes=0-9, 20-29,-10", 100);
        assert_eq!(s, RangeSpec::Multi(3));
        assert_eq!(ranges, [r(0, 9), r(20, 29), r(90, 99)]);
        // Sorted by start, whatever the request order.
        let (s, ranges) = spec("bytes=50-59,0-9", 100);
        assert_eq!(s, RangeSpec::Multi(2));
        assert_eq!(ranges, [r(0, 9), r(50, 59)]);
        // Empty list elements are tolerated.
        let (_, ranges) = spec("bytes=,0-1,,5-6,", 100);
        assert_eq!(ranges, [r(0, 1), r(5, 6)]);
    }

    #[test]
    fn coalescing() {
        // Overlapping.
        assert_eq!(single("bytes=0-50,25-75", 100), Some(r(0, 75)));
        // Adjacent.
        assert_eq!(single("bytes=0-9,10-19", 100), Some(r(0, 19)));
        // Contained.
        assert_eq!(single("bytes=0-99,10-19", 100), Some(r(0, 99)));
        // The same range many times over is one range.
        assert_eq!(single("bytes=0-,0-,0-,0-,0-,0-,0-,0-", 100), Some(r(0, 99)));
        let (s, ranges) = spec("bytes=40-49,0-9,5-14,45-60", 100);
        assert_eq!(s, RangeSpec::Multi(2));
        assert_eq!(ranges, [r(0, 14), r(40, 60)]);
    }

    #[test]
    fn range_count_limit() {
        let sixteen = (0..16).map(|i| format!("{}-{}", i * 10, i * 10 + 1));
        let value = format!("bytes={}", sixteen.collect::<Vec<_>>().join(","));
        assert_eq!(spec(&value, 1000).0, RangeSpec::Multi(16));
        let seventeen = (0..17).map(|i| format!("{}-{}", i * 10, i * 10 + 1));
        let value = format!("bytes={}", seventeen.collect::<Vec<_>>().join(","));
        assert_eq!(spec(&value, 1000).0, RangeSpec::None);
        // Counted before coalescing: 17 copies of one range is still too many.
        let value = format!("bytes={}", vec!["0-1"; 17].join(","));
        assert_eq!(spec(&value, 1000).0, RangeSpec::None);
    }

    #[test]
    fn a_single_range_is_read_when_there_is_one() {
        use super::single_range;
        assert_eq!(single_range(b"bytes=0-"), Some((0, None)));
        assert_eq!(single_range(b"bytes= 500-999"), Some((500, Some(999))));
        assert_eq!(single_range(b"Bytes=7-7"), Some((7, Some(7))));
        assert_eq!(single_range(b"bytes=0-0,5000-"), None, "several");
        assert_eq!(single_range(b"bytes=-500"), None, "a suffix");
        assert_eq!(single_range(b"bytes=9-3"), None);
        assert_eq!(single_range(b"bytes=+5-"), None);
        assert_eq!(single_range(b"items=0-1"), None);
        assert_eq!(single_range(b"bytes"), None);
    }
}
