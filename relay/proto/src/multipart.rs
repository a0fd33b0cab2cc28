//! `multipart/byteranges` bodies for multi-range responses (RFC 9110 §14.6).
//!
//! The body is, for parts `0..n`:
//!
//! ```text
//! [CRLF] "--" boundary CRLF
//! ["Content-Type: " type CRLF]
//! "Content-Range: bytes " start "-" end "/" total CRLF
//! CRLF
//! <the range's bytes>
//! ```
//!
//! then `CRLF "--" boundary "--" CRLF`, where the leading CRLF is present for
//! every part but the first. [`Multipart::body_len`] computes the exact length
//! with the same code that writes the heads, so `Content-Length` always agrees.

use crate::range::ByteRange;
use crate::response::{ContentRange, Sink};

/// The boundary is empty, longer than 70 bytes, or has a byte outside
/// `A-Z a-z 0-9 ' + _ - .` (boundary characters that need no quoting).
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
#[error("invalid multipart boundary")]
pub struct InvalidBoundary;

/// Writes the framing of one `multipart/byteranges` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Multipart<'a> {
    boundary: &'a str,
    content_type: Option<&'a str>,
    total: u64,
}

/// Counts bytes instead of writing them, for [`Multipart::body_len`].
struct Counter(u64);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 = self.0.saturating_add(bytes.len() as u64);
    }
}

impl<'a> Multipart<'a> {
    /// Framing for parts of a representation of `total` bytes whose own
    /// `Content-Type` (if known) is `content_type`.
    pub fn new(
        boundary: &'a str,
        content_type: Option<&'a str>,
        total: u64,
    ) -> Result<Self, InvalidBoundary> {
        let valid = (1..=70).contains(&boundary.len())
            && boundary
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"'+_-.".contains(&b));
        if !valid {
            return Err(InvalidBoundary);
        }
        Ok(Multipart {
            boundary,
            content_type,
            total,
        })
    }

    /// The response's `Content-Type` value, written into `out` (cleared first).
    pub fn content_type(&self, out: &mut String) {
        out.clear();
        out.push_str("multipart/byteranges; boundary=");
        out.push_str(self.boundary);
    }

    /// Exact body length for `ranges`, framing and data included.
    pub fn body_len(&self, ranges: &[ByteRange]) -> u64 {
        let mut count = Counter(0);
        for (index, range) in ranges.iter().enumerate() {
            self.write_part_head(index, *range, &mut count);
            count.0 = count.0.saturating_add(range.len());
        }
        self.write_trailer(&mut count);
        count.0
    }

    /// Appends the head of part `index` (0-based), which carries `range`.
    pub fn part_head(&self, index: usize, range: ByteRange, out: &mut Vec<u8>) {
        self.write_part_head(index, range, out);
    }

    /// Appends the closing delimiter, after the last part's data.
    pub fn trailer(&self, out: &mut Vec<u8>) {
        self.write_trailer(out);
    }

    fn write_part_head(&self, index: usize, range: ByteRange, out: &mut impl Sink) {
        if index > 0 {
            out.put(b"\r\n");
        }
        out.put(b"--");
        out.put(self.boundary.as_bytes());
        out.put(b"\r\n");
        if let Some(content_type) = self.content_type {
            out.put(b"Content-Type: ");
            out.put(content_type.as_bytes());
            out.put(b"\r\n");
        }
        out.put(b"Content-Range: ");
        ContentRange::Bytes {
            start: range.start,
            end: range.end,
            total: self.total,
        }
        .write_value(out);
        out.put(b"\r\n\r\n");
    }

    fn write_trailer(&self, out: &mut impl Sink) {
        out.put(b"\r\n--");
        out.put(self.boundary.as_bytes());
        out.put(b"--\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    #[test]
    fn boundaries() {
        assert!(Multipart::new("relay-3d6b6a416f9b", None, 10).is_ok());
        assert!(Multipart::new(&"a".repeat(70), None, 10).is_ok());
        assert_eq!(
            Multipart::new(&"a".repeat(71), None, 10),
            Err(InvalidBoundary)
        );
        for bad in ["", "a b", "a\r\nb", "a\"b", "a;b", "é"] {
            assert_eq!(
                Multipart::new(bad, None, 10),
                Err(InvalidBoundary),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn body_bytes_and_length() {
        let data: Vec<u8> = (0..100u8).map(|i| b'a' + i % 26).collect();
        let ranges = [r(0, 4), r(10, 12), r(95, 99)];
        let mp = Multipart::new("BOUNDARY", Some("text/plain"), 100).unwrap();
        let mut body = Vec::new();
        for (i, range) in ranges.iter().enumerate() {
            mp.part_head(i, *range, &mut body);
            body.extend_from_slice(&data[range.start as usize..=range.end as usize]);
        }
        mp.trailer(&mut body);
        assert_eq!(
            String::from_utf8(body.clone()).unwrap(),
            "--BOUNDARY\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-4/100\r\n\r\n\
             abcde\
             \r\n--BOUNDARY\r\nContent-Type: text/plain\r\nContent-Range: bytes 10-12/100\r\n\r\n\
             klm\
             \r\n--BOUNDARY\r\nContent-Type: text/plain\r\nContent-Range: bytes 95-99/100\r\n\r\n\
             rstuv\
             \r\n--BOUNDARY--\r\n"
        );
        assert_eq!(mp.body_len(&ranges), body.len() as u64);
        let mut content_type = String::from("stale");
        mp.content_type(&mut content_type);
        assert_eq!(content_type, "multipart/byteranges; boundary=BOUNDARY");
    }

    #[test]
    fn length_without_content_type_and_with_huge_numbers() {
        let total = u64::MAX;
        let mp = Multipart::new("b", None, total).unwrap();
        let ranges = [r(0, 0), r(u64::MAX - 2, u64::MAX - 2)];
        let mut framing = Vec::new();
        for (i, range) in ranges.iter().enumerate() {
            mp.part_head(i, *range, &mut framing);
        }
        mp.trailer(&mut framing);
        let text = String::from_utf8(framing.clone()).unwrap();
        assert!(text.contains("Content-Range: bytes 18446744073709551613-18446744073709551613/18446744073709551615\r\n"));
        assert!(!text.contains("Content-Type"));
        assert_eq!(mp.body_len(&ranges), framing.len() as u64 + 2);
        assert_eq!(mp.body_len(&[]), "\r\n--b--\r\n".len() as u64);
    }
}
