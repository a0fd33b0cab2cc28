//! Reading an origin's response head defensively: framing (Content-Length, Content-Range),
//! validators (ETag, Last-Modified). Freshness is `relay_cache::policy`'s (RFC 9111). Garbage
//! yields an error or "absent", never a panic.

use http::HeaderMap;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, LAST_MODIFIED};

/// What the cache needs from a response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectHead {
    /// The whole object's length, when the head tells it.
    pub total: Option<u64>,
    /// For a 206: the first byte offset of the body.
    pub range_start: u64,
    pub etag: String,
    pub last_modified: String,
}

/// Why a head is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("invalid or conflicting Content-Length")]
    ContentLength,
    #[error("invalid Content-Range")]
    ContentRange,
}

fn one(h: &HeaderMap, name: http::header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Content-Length: every copy must be the same decimal number.
pub fn content_length(h: &HeaderMap) -> Result<Option<u64>, HeadError> {
    let mut value = None;
    for v in h.get_all(CONTENT_LENGTH) {
        let s = v.to_str().map_err(|_| HeadError::ContentLength)?;
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HeadError::ContentLength);
            }
            let n: u64 = part.parse().map_err(|_| HeadError::ContentLength)?;
            if value.is_some_and(|v| v != n) {
                return Err(HeadError::ContentLength);
            }
            value = Some(n);
        }
    }
    Ok(value)
}

/// A parsed `Content-Range`: the byte range (None for `*`) and the total (None for `*`).
pub type ContentRange = (Option<(u64, u64)>, Option<u64>);

/// `Content-Range: bytes a-b/total` or `bytes */total`.
pub fn content_range(h: &HeaderMap) -> Result<ContentRange, HeadError> {
    let Some(v) = one(h, CONTENT_RANGE) else {
        return Err(HeadError::ContentRange);
    };
    let rest = v.strip_prefix("bytes ").ok_or(HeadError::ContentRange)?;
    let (range, total) = rest.split_once('/').ok_or(HeadError::ContentRange)?;
    let num = |s: &str| -> Result<u64, HeadError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HeadError::ContentRange);
        }
        s.parse().map_err(|_| HeadError::ContentRange)
    };
    let total = if total == "*" {
        None
    } else {
        Some(num(total)?)
    };
    if range == "*" {
        return Ok((None, total));
    }
    let (a, b) = range.split_once('-').ok_or(HeadError::ContentRange)?;
    let (a, b) = (num(a)?, num(b)?);
    if a > b || total.is_some_and(|t| b >= t) {
        return Err(HeadError::ContentRange);
    }
    Ok((Some((a, b)), total))
}

/// Reads the head of a 200 or 206 response.
pub fn parse(status: u16, h: &HeaderMap) -> Result<ObjectHead, HeadError> {
    let (total, range_start) = if status == 206 {
        let (range, total) = content_range(h)?;
        let (a, _) = range.ok_or(HeadError::ContentRange)?;
        (total, a)
    } else {
        (content_length(h)?, 0)
    };
    Ok(ObjectHead {
        total,
        range_start,
        etag: one(h, ETAG).unwrap_or("").to_string(),
        last_modified: one(h, LAST_MODIFIED)
            .filter(|v| httpdate::parse_http_date(v).is_ok())
            .unwrap_or("")
            .to_string(),
    })
}

/// The version of an object: a hash of its validators and length. Chunks of different
/// versions never mix.
pub fn version(etag: &str, last_modified: &str, len: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in etag
        .bytes()
        .chain([0])
        .chain(last_modified.bytes())
        .chain([0])
        .chain(len.to_le_bytes())
    {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Statuses that count as an origin error (RFC 5861 §4; stale-if-error applies).
pub fn is_error_status(status: u16) -> bool {
    matches!(status, 500 | 502 | 503 | 504)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn content_length_rules() {
        assert_eq!(content_length(&headers(&[])), Ok(None));
        assert_eq!(
            content_length(&headers(&[("content-length", "10")])),
            Ok(Some(10))
        );
        assert_eq!(
            content_length(&headers(&[
                ("content-length", "10"),
                ("content-length", "10")
            ])),
            Ok(Some(10))
        );
        for bad in ["10, 11", "-1", "1e3", "", "99999999999999999999999"] {
            assert_eq!(
                content_length(&headers(&[("content-length", bad)])),
                Err(HeadError::ContentLength),
                "{bad}"
            );
        }
    }

    #[test]
    fn content_range_rules() {
        let cr = |v| content_range(&headers(&[("content-range", v)]));
        assert_eq!(cr("bytes 0-99/1000"), Ok((Some((0, 99)), Some(1000))));
        assert_eq!(cr("bytes */0"), Ok((None, Some(0))));
        assert_eq!(cr("bytes 5-9/*"), Ok((Some((5, 9)), None)));
        for bad in [
            "bytes 9-5/10",
            "bytes 0-10/10",
            "items 0-1/2",
            "bytes 0-1",
            "bytes a-b/c",
        ] {
            assert_eq!(cr(bad), Err(HeadError::ContentRange), "{bad}");
        }
    }

    #[test]
    fn versions_differ_by_validator() {
        assert_ne!(version("\"a\"", "", 10), version("\"b\"", "", 10));
        assert_ne!(version("\"a\"", "", 10), version("\"a\"", "", 11));
        assert_eq!(version("\"a\"", "x", 10), version("\"a\"", "x", 10));
    }
}
