//! Defensive parsing of what an origin sends in a response head: the body's framing
//! (`Content-Length`, `Transfer-Encoding`; RFC 9112 §6), `Content-Range` of a 206
//! (RFC 9110 §14.4), and HTTP dates (RFC 9110 §5.6.7) with the cache's rules for invalid ones.
//!
//! Framing is strict, because a wrong length means a wrong body passed off as whole: differing
//! or malformed `Content-Length` values are errors, and so is a response carrying both
//! `Transfer-Encoding` and `Content-Length` (RFC 9112 §6.3 lets the former override, but also
//! says such a message "ought to be handled as an error"; a cache must not store a possible
//! smuggling attempt).

use super::{is_token, list_elements, trim};
use thiserror::Error;

/// Why a response head cannot be framed or its range trusted.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum FramingError {
    /// A `Content-Length` value that is not a decimal number, or overflows.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// Several `Content-Length` values that differ.
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    /// `Transfer-Encoding` and `Content-Length` together.
    #[error("Transfer-Encoding together with Content-Length")]
    TransferEncodingWithContentLength,
    /// A `Transfer-Encoding` list that is not a list of tokens.
    #[error("invalid Transfer-Encoding")]
    InvalidTransferEncoding,
    /// `chunked` applied more than once or not as the final coding.
    #[error("chunked is not the final transfer coding, or is applied twice")]
    ChunkedNotFinal,
    /// A `Content-Range` that does not parse or describes an impossible range.
    #[error("invalid Content-Range")]
    InvalidContentRange,
    /// More than one `Content-Range` field line.
    #[error("more than one Content-Range")]
    MultipleContentRange,
}

/// How the response body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: a response to HEAD, or 1xx, 204, 304.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (such a body cannot be told complete from cut short, so
    /// the caller should not cache it unless it has other evidence of completeness).
    UntilClose,
}

/// Parses all `Content-Length` values (each line may be a list, `42, 42`); equal duplicates
/// are accepted (RFC 9110 §8.6). `Ok(None)` when there is none.
pub fn parse_content_length<'a>(
    lines: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<u64>, FramingError> {
    let mut found: Option<u64> = None;
    for line in lines {
        let mut elements = 0;
        for elem in line.split(|&b| b == b',') {
            let n = parse_u64(trim(elem)).ok_or(FramingError::InvalidContentLength)?;
            elements += 1;
            match found {
                Some(prev) if prev != n => return Err(FramingError::ConflictingContentLength),
                _ => found = Some(n),
            }
        }
        if elements == 0 {
            return Err(FramingError::InvalidContentLength);
        }
    }
    Ok(found)
}

/// `1*DIGIT` as u64; `None` on anything else or overflow.
fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The framing of a response body (RFC 9112 §6.3). `head_request`: the request was HEAD.
/// `identity` transfer codings (obsolete, still sent by some origins) are ignored.
pub fn body_framing<'a, I>(
    head_request: bool,
    status: u16,
    headers: I,
) -> Result<BodyFraming, FramingError>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    if head_request || status < 200 || status == 204 || status == 304 {
        return Ok(BodyFraming::Empty);
    }
    let mut content_length = Vec::new();
    let mut codings = 0usize;
    let mut chunked_last = false;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(b"content-length") {
            content_length.push(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let mut any = false;
            for coding in list_elements(value) {
                any = true;
                // a coding may carry parameters: `gzip;q=1` is not valid here but tolerate
                let name = trim(coding.split(|&b| b == b';').next().unwrap_or_default());
                if !is_token(name) {
                    return Err(FramingError::InvalidTransferEncoding);
                }
                if name.eq_ignore_ascii_case(b"identity") {
                    continue;
                }
                if chunked_last {
                    return Err(FramingError::ChunkedNotFinal);
                }
                chunked_last = name.eq_ignore_ascii_case(b"chunked");
                codings += 1;
            }
            if !any {
                return Err(FramingError::InvalidTransferEncoding);
            }
        }
    }
    let length = parse_content_length(content_length.iter().copied())?;
    match (codings, length) {
        (0, Some(n)) => Ok(BodyFraming::Length(n)),
        (0, None) => Ok(BodyFraming::UntilClose),
        (_, Some(_)) => Err(FramingError::TransferEncodingWithContentLength),
        (_, None) if chunked_last => Ok(BodyFraming::Chunked),
        (_, None) => Ok(BodyFraming::UntilClose),
    }
}

/// A parsed `Content-Range` (bytes only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentRange {
    /// `bytes first-last/complete` or `bytes first-last/*`.
    Bytes {
        /// First byte position.
        first: u64,
        /// Last byte position (inclusive).
        last: u64,
        /// The complete length, when known.
        complete: Option<u64>,
    },
    /// `bytes */complete` (sent with 416).
    Unsatisfied {
        /// The complete length.
        complete: u64,
    },
}

impl ContentRange {
    /// The number of bytes the body of a 206 carrying this range must have.
    pub fn body_len(&self) -> Option<u64> {
        match *self {
            ContentRange::Bytes { first, last, .. } => last.checked_sub(first)?.checked_add(1),
            ContentRange::Unsatisfied { .. } => None,
        }
    }
}

/// Parses one `Content-Range` value; the range must be possible (`first <= last < complete`).
pub fn parse_content_range(value: &[u8]) -> Result<ContentRange, FramingError> {
    let bad = FramingError::InvalidContentRange;
    let v = trim(value);
    let unit = v.get(..6).ok_or(bad)?;
    if !unit.eq_ignore_ascii_case(b"bytes ") {
        return Err(bad);
    }
    let v = trim(v.get(6..).unwrap_or_default());
    let slash = v.iter().position(|&b| b == b'/').ok_or(bad)?;
    let (range, complete) = v.split_at(slash);
    let complete = complete.get(1..).unwrap_or_default();
    let complete = match complete {
        b"*" => None,
        c => Some(parse_u64(c).ok_or(bad)?),
    };
    if range == b"*" {
        return complete
            .map(|complete| ContentRange::Unsatisfied { complete })
            .ok_or(bad);
    }
    let dash = range.iter().position(|&b| b == b'-').ok_or(bad)?;
    let (first, last) = range.split_at(dash);
    let first = parse_u64(first).ok_or(bad)?;
    let last = parse_u64(last.get(1..).unwrap_or_default()).ok_or(bad)?;
    if first > last || complete.is_some_and(|c| last >= c) {
        return Err(bad);
    }
    Ok(ContentRange::Bytes {
        first,
        last,
        complete,
    })
}

/// The `Content-Range` of a response given as field lines: `Ok(None)` without one, an error
/// when there are several.
pub fn content_range<'a, I>(headers: I) -> Result<Option<ContentRange>, FramingError>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let mut found = None;
    for v in super::values_of(headers, "content-range") {
        if found.is_some() {
            return Err(FramingError::MultipleContentRange);
        }
        found = Some(parse_content_range(v)?);
    }
    Ok(found)
}

/// Parses an HTTP date (IMF-fixdate, obsolete RFC 850 or asctime), in seconds since the
/// epoch. `None` when invalid.
pub fn parse_http_date(value: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(trim(value)).ok()?;
    httpdate::parse_http_date(s).ok().map(super::unix_seconds)
}

/// The first valid date among `lines` (for `Date`, `Last-Modified`); `None` when none is
/// valid, which callers treat as absent.
pub fn first_date<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Option<u64> {
    lines.into_iter().find_map(parse_http_date)
}

/// `Expires` (RFC 9111 §5.3): an invalid date, such as `0`, means "already expired" (the
/// epoch); several differing values count as invalid (§4.2.1). `None` when absent.
pub fn parse_expires<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Option<u64> {
    let mut result = None;
    for line in lines {
        let t = parse_http_date(line).unwrap_or(0);
        result = match result {
            Some(prev) if prev != t => Some(0),
            _ => Some(t),
        };
    }
    result
}

/// Formats seconds since the epoch as an IMF-fixdate (clamped to years 1970..=9999).
pub fn fmt_http_date(secs: u64) -> String {
    const LAST_SECOND_OF_9999: u64 = 253_402_300_799;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.min(LAST_SECOND_OF_9999));
    httpdate::fmt_http_date(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()))
    }

    #[test]
    fn rfc9110_8_6_content_length() {
        assert_eq!(parse_content_length([&b"42"[..]]), Ok(Some(42)));
        assert_eq!(
            parse_content_length([&b"42, 42"[..], b" 42 "]),
            Ok(Some(42))
        );
        assert_eq!(parse_content_length(std::iter::empty()), Ok(None));
        assert_eq!(
            parse_content_length([&b"42"[..], b"43"]),
            Err(FramingError::ConflictingContentLength)
        );
        assert_eq!(
            parse_content_length([&b"42, 7"[..]]),
            Err(FramingError::ConflictingContentLength)
        );
        for bad in [
            &b""[..],
            b"-1",
            b"+5",
            b"0x10",
            b"4 2",
            b"42,",
            b"1e3",
            b"18446744073709551616",
        ] {
            assert_eq!(
                parse_content_length([bad]),
                Err(FramingError::InvalidContentLength),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_content_length([&b"18446744073709551615"[..]]),
            Ok(Some(u64::MAX))
        );
    }

    #[test]
    fn rfc9112_6_3_framing() {
        let f = |head, status, hs: &[(&str, &str)]| body_framing(head, status, h(hs));
        assert_eq!(
            f(false, 200, &[("Content-Length", "10")]),
            Ok(BodyFraming::Length(10))
        );
        assert_eq!(
            f(true, 200, &[("Content-Length", "x")]),
            Ok(BodyFraming::Empty)
        );
        for s in [100, 204, 304] {
            assert_eq!(
                f(false, s, &[("Content-Length", "10")]),
                Ok(BodyFraming::Empty)
            );
        }
        assert_eq!(f(false, 200, &[]), Ok(BodyFraming::UntilClose));
        assert_eq!(
            f(false, 200, &[("Transfer-Encoding", "gzip, Chunked")]),
            Ok(BodyFraming::Chunked)
        );
        assert_eq!(
            f(
                false,
                200,
                &[
                    ("transfer-encoding", "gzip"),
                    ("transfer-encoding", "chunked")
                ]
            ),
            Ok(BodyFraming::Chunked)
        );
        assert_eq!(
            f(false, 200, &[("Transfer-Encoding", "gzip")]),
            Ok(BodyFraming::UntilClose)
        );
        assert_eq!(
            f(
                false,
                200,
                &[("Transfer-Encoding", "identity"), ("Content-Length", "3")]
            ),
            Ok(BodyFraming::Length(3))
        );
        assert_eq!(
            f(false, 200, &[("Transfer-Encoding", "chunked, gzip")]),
            Err(FramingError::ChunkedNotFinal)
        );
        assert_eq!(
            f(false, 200, &[("Transfer-Encoding", "chunked, chunked")]),
            Err(FramingError::ChunkedNotFinal)
        );
        assert_eq!(
            f(
                false,
                200,
                &[("Transfer-Encoding", "chunked"), ("Content-Length", "3")]
            ),
            Err(FramingError::TransferEncodingWithContentLength)
        );
        assert_eq!(
            f(false, 200, &[("Transfer-Encoding", ",")]),
            Err(FramingError::InvalidTransferEncoding)
        );
        assert_eq!(
            f(false, 200, &[("Transfer-Encoding", "chu nked")]),
            Err(FramingError::InvalidTransferEncoding)
        );
        assert_eq!(
            f(
                false,
                200,
                &[("Content-Length", "3"), ("Content-Length", "4")]
            ),
            Err(FramingError::ConflictingContentLength)
        );
    }

    #[test]
    fn rfc9110_14_4_content_range() {
        assert_eq!(
            parse_content_range(b"bytes 0-499/1234"),
            Ok(ContentRange::Bytes {
                first: 0,
                last: 499,
                complete: Some(1234)
            })
        );
        assert_eq!(
            parse_content_range(b"Bytes 10-10/*"),
            Ok(ContentRange::Bytes {
                first: 10,
                last: 10,
                complete: None
            })
        );
        assert_eq!(
            parse_content_range(b"bytes */1234"),
            Ok(ContentRange::Unsatisfied { complete: 1234 })
        );
        assert_eq!(
            parse_content_range(b"bytes 0-499/1234").map(|r| r.body_len()),
            Ok(Some(500))
        );
        let max = parse_content_range(b"bytes 0-18446744073709551615/*");
        assert_eq!(max.map(|r| r.body_len()), Ok(None));
        for bad in [
            &b"bytes 5-4/10"[..],
            b"bytes 0-10/10",
            b"bytes */*",
            b"items 0-1/2",
            b"bytes 0-/10",
            b"bytes -5/10",
            b"bytes 0-1",
            b"bytes",
            b"",
            b"bytes 0-99999999999999999999/*",
            b"bytes 1-2/3/4",
            b"\xff",
        ] {
            assert_eq!(
                parse_content_range(bad),
                Err(FramingError::InvalidContentRange),
                "{bad:?}"
            );
        }
        assert_eq!(
            content_range(h(&[
                ("Content-Range", "bytes 0-1/2"),
                ("content-range", "bytes 0-1/2")
            ])),
            Err(FramingError::MultipleContentRange)
        );
        assert_eq!(content_range(h(&[])), Ok(None));
    }

    #[test]
    fn rfc9110_5_6_7_date_formats() {
        let t = Some(784_111_777);
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT"), t);
        assert_eq!(parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"), t);
        assert_eq!(parse_http_date(b"Sun Nov  6 08:49:37 1994"), t);
        assert_eq!(parse_http_date(b"  Sun, 06 Nov 1994 08:49:37 GMT "), t);
        for bad in [
            &b"0"[..],
            b"-1",
            b"",
            b"yesterday",
            b"Sun, 06 Nov 1994 25:49:37 GMT",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
        assert_eq!(fmt_http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(fmt_http_date(u64::MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn rfc9111_5_3_invalid_expires_is_in_the_past() {
        assert_eq!(parse_expires([&b"0"[..]]), Some(0));
        assert_eq!(parse_expires([&b"garbage"[..]]), Some(0));
        assert_eq!(parse_expires(std::iter::empty()), None);
        let d = &b"Sun, 06 Nov 1994 08:49:37 GMT"[..];
        assert_eq!(parse_expires([d, d]), Some(784_111_777));
        // two different Expires: considered stale (§4.2.1)
        assert_eq!(
            parse_expires([d, b"Mon, 07 Nov 1994 08:49:37 GMT"]),
            Some(0)
        );
        assert_eq!(first_date([&b"bad"[..], d]), Some(784_111_777));
    }
}
