//! What the cache needs from an origin's response head: framing (Content-Length,
//! Content-Range) and validators (ETag, Last-Modified). The fields are parsed by
//! `relay_cache::policy::response_headers` (and freshness is `relay_cache::policy`'s, RFC
//! 9111); this reads them off hyper's `HeaderMap`. Garbage yields an error or "absent", never
//! a panic.

use http::HeaderMap;
use http::header::{CONTENT_LENGTH, ETAG, LAST_MODIFIED, TRANSFER_ENCODING};
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

/// Where the bytes of an answer with `status` end in the object: after the last byte its
/// `Content-Range` names for a 206 (a body running on past it, whatever its
/// `Content-Length` says, chunked or until the close, is not read further: its bytes past
/// the range would be taken for the object's next ones), nowhere before the body's own end
/// for any other.
pub fn answer_end(status: u16, h: &HeaderMap) -> u64 {
    match (status, content_range(h)) {
        (206, Ok(ContentRange::Bytes { last, .. })) => last.saturating_add(1),
        _ => u64::MAX,
    }
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
    let (etag, last_modified) = validators(h);
    Ok(ObjectHead {
        total,
        range_start,
        etag,
        last_modified,
    })
}

/// The answer's validators as kept: its `ETag` and a `Last-Modified` that is a date (empty
/// when absent).
pub fn validators(h: &HeaderMap) -> (String, String) {
    (
        one(h, ETAG).unwrap_or("").to_string(),
        one(h, LAST_MODIFIED)
            .filter(|v| response_headers::parse_http_date(v.as_bytes()).is_some())
            .unwrap_or("")
            .to_string(),
    )
}

/// How the body of an answer with `status` to a GET is delimited (RFC 9112 §6.3): by its
/// length, chunked, until the connection closes, or not at all (204, 304). Both
/// `Transfer-Encoding` and `Content-Length`, or either malformed, is an error: such an
/// answer is refused, never stored (§6.3 ¶3: a cache cannot know which one is right).
pub fn framing(status: u16, h: &HeaderMap) -> Result<response_headers::BodyFraming, FramingError> {
    response_headers::body_framing(false, status, pairs(h))
}

/// Whether an answer carries a transfer coding other than `chunked` (and the obsolete
/// `identity`), e.g. `gzip, chunked` (RFC 9112 §6.1): hyper takes off only the chunked
/// coding and relay drops the hop-by-hop field, so the bytes under any other coding would
/// be served as the body.
pub fn foreign_transfer_coding(h: &HeaderMap) -> bool {
    h.get_all(TRANSFER_ENCODING).iter().any(|v| {
        v.as_bytes().split(|&b| b == b',').any(|coding| {
            let name = coding.split(|&b| b == b';').next().unwrap_or_default();
            let name = name.trim_ascii();
            !name.is_empty()
                && !name.eq_ignore_ascii_case(b"chunked")
                && !name.eq_ignore_ascii_case(b"identity")
        })
    })
}

/// Whether an answer's validators name its representation strongly enough that ranges of
/// it fetched in separate requests may be combined (RFC 9110 §8.8.1, §14.2): a strong
/// entity tag, or a Last-Modified at least 60 seconds before the answer's Date (§8.8.2.2).
/// A weak tag (`W/`) never combines ranges, whatever the Last-Modified.
pub fn strong_validator(h: &HeaderMap) -> bool {
    match one(h, ETAG) {
        Some(tag) if tag.starts_with("W/") => return false,
        Some(tag) if tag.len() >= 2 && tag.starts_with('"') && tag.ends_with('"') => return true,
        _ => {}
    }
    let date = |name| one(h, name).and_then(|v| response_headers::parse_http_date(v.as_bytes()));
    match (date(LAST_MODIFIED), date(http::header::DATE)) {
        (Some(modified), Some(date)) => date.saturating_sub(modified) >= 60 && date >= modified,
        _ => false,
    }
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

    /// A 206 is read as far as its `Content-Range` goes, whatever its length says; any
    /// other answer to its own end.
    #[test]
    fn a_206_is_read_no_further_than_its_range() {
        let with = |cl: Option<&str>| {
            let mut pairs = vec![("content-range", "bytes 100-199/1000")];
            pairs.extend(cl.map(|v| ("content-length", v)));
            headers(&pairs)
        };
        assert_eq!(answer_end(206, &with(None)), 200);
        assert_eq!(answer_end(206, &with(Some("1100"))), 200);
        assert_eq!(
            answer_end(206, &headers(&[("content-range", "bytes */9")])),
            u64::MAX
        );
        assert_eq!(answer_end(206, &headers(&[])), u64::MAX);
        assert_eq!(answer_end(200, &with(Some("100"))), u64::MAX);
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
    fn rfc9110_8_8_1_only_strong_validators_combine_ranges() {
        let strong = |pairs: &[(&str, &str)]| strong_validator(&headers(pairs));
        const LM: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert!(strong(&[("etag", "\"v1\"")]));
        assert!(!strong(&[("etag", "W/\"v1\"")]));
        assert!(!strong(&[
            ("etag", "W/\"v1\""),
            ("last-modified", LM),
            ("date", "Mon, 07 Nov 1994 08:49:37 GMT")
        ]));
        assert!(!strong(&[]));
        assert!(!strong(&[("etag", "v1")]), "an unquoted tag is no tag");
        // §8.8.2.2: Last-Modified counts as strong a minute or more before Date.
        assert!(strong(&[
            ("last-modified", LM),
            ("date", "Sun, 06 Nov 1994 08:50:37 GMT")
        ]));
        assert!(!strong(&[
            ("last-modified", LM),
            ("date", "Sun, 06 Nov 1994 08:50:36 GMT")
        ]));
        assert!(!strong(&[("last-modified", LM)]), "without a Date");
        assert!(!strong(&[("last-modified", "yesterday"), ("date", LM)]));
    }

    #[test]
    fn rfc9112_6_3_framing_with_both_fields_is_refused() {
        use response_headers::BodyFraming;
        let f = |status, pairs: &[(&str, &str)]| framing(status, &headers(pairs));
        assert_eq!(
            f(200, &[("content-length", "3")]),
            Ok(BodyFraming::Length(3))
        );
        assert_eq!(
            f(200, &[("transfer-encoding", "chunked")]),
            Ok(BodyFraming::Chunked)
        );
        assert_eq!(f(200, &[]), Ok(BodyFraming::UntilClose));
        assert_eq!(f(204, &[("content-length", "3")]), Ok(BodyFraming::Empty));
        assert_eq!(
            f(
                200,
                &[("transfer-encoding", "chunked"), ("content-length", "3")]
            ),
            Err(FramingError::TransferEncodingWithContentLength)
        );
        assert_eq!(
            f(404, &[("content-length", "3, 4")]),
            Err(FramingError::ConflictingContentLength)
        );
    }

    #[test]
    fn rfc9112_6_1_only_chunked_is_a_transfer_coding_relay_can_undo() {
        for (te, foreign) in [
            ("chunked", false),
            ("Chunked", false),
            ("identity, chunked", false),
            ("gzip, chunked", true),
            ("gzip", true),
            ("chunked, gzip", true),
            ("x-custom;p=1, chunked", true),
        ] {
            let h = headers(&[("transfer-encoding", te)]);
            assert_eq!(foreign_transfer_coding(&h), foreign, "{te}");
        }
        let split = headers(&[
            ("transfer-encoding", "gzip"),
            ("transfer-encoding", "chunked"),
        ]);
        assert!(foreign_transfer_coding(&split));
        assert!(!foreign_transfer_coding(&headers(&[])));
    }

    #[test]
    fn versions_differ_by_validator() {
        assert_ne!(version("\"a\"", "", 10), version("\"b\"", "", 10));
        assert_ne!(version("\"a\"", "", 10), version("\"a\"", "", 11));
        assert_eq!(version("\"a\"", "x", 10), version("\"a\"", "x", 10));
    }
}
