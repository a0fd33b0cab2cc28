//! What the cache needs from an origin's response head: framing (Content-Length,
//! Content-Range) and validators (ETag, Last-Modified). The fields are parsed by
//! `relay_cache::policy::response_headers` (and freshness is `relay_cache::policy`'s, RFC
//! 9111); this reads them off hyper's `HeaderMap`. Garbage yields an error or "absent", never
//! a panic.

use http::HeaderMap;
use http::header::{CONTENT_LENGTH, ETAG, LAST_MODIFIED};
use relay_cache::policy::response_headers::{self, ContentRange, FramingError};

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

fn one(h: &HeaderMap, name: http::header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn pairs(h: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    h.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
}

/// Content-Length: every copy must be the same decimal number.
pub fn content_length(h: &HeaderMap) -> Result<Option<u64>, FramingError> {
    response_headers::parse_content_length(h.get_all(CONTENT_LENGTH).iter().map(|v| v.as_bytes()))
}

/// `Content-Range: bytes a-b/total` or `bytes */total`; exactly one.
pub fn content_range(h: &HeaderMap) -> Result<ContentRange, FramingError> {
    response_headers::content_range(pairs(h))?.ok_or(FramingError::InvalidContentRange)
}

/// Reads the head of a 200 or 206 response.
pub fn parse(status: u16, h: &HeaderMap) -> Result<ObjectHead, FramingError> {
    let (total, range_start) = if status == 206 {
        match content_range(h)? {
            ContentRange::Bytes {
                first, complete, ..
            } => (complete, first),
            ContentRange::Unsatisfied { .. } => return Err(FramingError::InvalidContentRange),
        }
    } else {
        (content_length(h)?, 0)
    };
    Ok(ObjectHead {
        total,
        range_start,
        etag: one(h, ETAG).unwrap_or("").to_string(),
        last_modified: one(h, LAST_MODIFIED)
            .filter(|v| response_headers::parse_http_date(v.as_bytes()).is_some())
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
        assert_eq!(
            content_length(&headers(&[("content-length", "10, 11")])),
            Err(FramingError::ConflictingContentLength)
        );
        for bad in ["-1", "1e3", "", "99999999999999999999999"] {
            assert_eq!(
                content_length(&headers(&[("content-length", bad)])),
                Err(FramingError::InvalidContentLength),
                "{bad}"
            );
        }
    }

    #[test]
    fn content_range_rules() {
        let cr = |v| content_range(&headers(&[("content-range", v)]));
        let bytes = |first, last, complete| {
            Ok(ContentRange::Bytes {
                first,
                last,
                complete,
            })
        };
        assert_eq!(cr("bytes 0-99/1000"), bytes(0, 99, Some(1000)));
        assert_eq!(
            cr("bytes */0"),
            Ok(ContentRange::Unsatisfied { complete: 0 })
        );
        assert_eq!(cr("bytes 5-9/*"), bytes(5, 9, None));
        for bad in [
            "bytes 9-5/10",
            "bytes 0-10/10",
            "items 0-1/2",
            "bytes 0-1",
            "bytes a-b/c",
        ] {
            assert_eq!(cr(bad), Err(FramingError::InvalidContentRange), "{bad}");
        }
    }

    #[test]
    fn versions_differ_by_validator() {
        assert_ne!(version("\"a\"", "", 10), version("\"b\"", "", 10));
        assert_ne!(version("\"a\"", "", 10), version("\"a\"", "", 11));
        assert_eq!(version("\"a\"", "x", 10), version("\"a\"", "x", 10));
    }
}
