//! Validation (RFC 9111 §4.3): the conditional request that revalidates a stored response,
//! how to read upstream's answer, and applying a 304 to the stored header fields (§4.3.4,
//! §3.2) without touching the stored body.
//!
//! Also [`strip_for_storage`]: the header fields a cache must not store (§3.1), and those a
//! qualified `private` / `no-cache` names.

use super::response_headers::{fmt_http_date, parse_http_date};
use super::stored::is_entity_tag;
use super::{CacheControl, PolicyConfig, StoredMeta, trim};
use thiserror::Error;

/// Stored header fields, in order: (name as received, value).
pub type HeaderList = Vec<(String, Vec<u8>)>;

/// Why a 304 cannot refresh a stored response.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum ValidateError {
    /// The response is not a 304.
    #[error("status {0} is not 304 Not Modified")]
    NotA304(u16),
    /// The 304 carries validators of another representation (§4.3.4): fetch the object
    /// unconditionally instead.
    #[error("304 validators do not match the stored response")]
    ValidatorMismatch,
}

/// The conditional header fields to revalidate a stored response (§4.3.1): `If-None-Match`
/// with its entity-tag and `If-Modified-Since` with its `Last-Modified` (verbatim), each when
/// present. Both `None`: the request is unconditional.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConditionalHeaders<'a> {
    /// Value for `If-None-Match`.
    pub if_none_match: Option<&'a [u8]>,
    /// Value for `If-Modified-Since`.
    pub if_modified_since: Option<&'a [u8]>,
}

/// The conditional header fields for revalidating `stored`.
pub fn conditional_headers(stored: &StoredMeta) -> ConditionalHeaders<'_> {
    ConditionalHeaders {
        if_none_match: stored.etag.as_deref(),
        if_modified_since: stored.last_modified_value.as_deref(),
    }
}

/// What upstream's answer to a validation request means (§4.3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValidationOutcome {
    /// 304: refresh the stored response with [`apply_304`] and serve it.
    NotModified,
    /// 5xx: forward it, or act as if upstream failed (serve stale where
    /// [`super::Phase::StaleIfError`] allows).
    ServerError,
    /// Any other full response: it replaces the stored one (subject to
    /// [`super::storable`]) and is served.
    Replaced,
}

impl ValidationOutcome {
    /// Classifies upstream's status.
    pub fn of(status: u16) -> ValidationOutcome {
        match status {
            304 => ValidationOutcome::NotModified,
            500..=599 => ValidationOutcome::ServerError,
            _ => ValidationOutcome::Replaced,
        }
    }
}

/// Fields never stored or updated (§3.1, §3.2): hop-by-hop fields, proxy authentication,
/// and — on update only — fields describing the stored body's framing or encoding.
const NOT_STORED: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "transfer-encoding",
    "upgrade",
    "trailer",
    "proxy-authenticate",
    "proxy-authentication-info",
    "proxy-authorization",
];

/// Not taken from a 304: they describe the stored body (`Content-Length` per §3.2;
/// `Content-Range`, `Content-Encoding` to keep the stored response consistent, as §3.2
/// permits), or the stored response's secondary key (`Vary`: the stored variant keeps the
/// key it was stored under).
const NOT_UPDATED: &[&str] = &[
    "content-length",
    "content-range",
    "content-encoding",
    "vary",
];

fn contains(list: &[&str], name: &[u8]) -> bool {
    list.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(name))
}

/// Names listed in `Connection` field lines.
fn connection_listed<'a>(headers: &[(&'a [u8], &'a [u8])]) -> Vec<&'a [u8]> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, v)| super::list_elements(v))
        .collect()
}

/// Removes what a shared cache must not store (§3.1): hop-by-hop fields and those listed in
/// `Connection`, proxy authentication fields, and the fields named by a qualified `private`
/// or `no-cache` in `directives` (so the rest is reusable without validation, §5.2.2.4/7).
pub fn strip_for_storage(headers: &mut HeaderList, directives: &CacheControl) {
    let listed: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| super::list_elements(v).map(|e| String::from_utf8_lossy(e).into_owned()))
        .collect();
    headers.retain(|(name, _)| {
        let n = name.as_bytes();
        !contains(NOT_STORED, n)
            && !listed.iter().any(|l| l.eq_ignore_ascii_case(name))
            && !directives
                .private
                .fields()
                .iter()
                .any(|f| f.eq_ignore_ascii_case(name))
            && !directives
                .no_cache
                .fields()
                .iter()
                .any(|f| f.eq_ignore_ascii_case(name))
    });
}

/// The opaque part of an entity-tag (without `W/`), for weak comparison.
fn opaque(tag: &[u8]) -> &[u8] {
    tag.strip_prefix(b"W/").unwrap_or(tag)
}

/// Refreshes a stored response with a 304 (§4.3.4): checks that the 304 is about the stored
/// representation, replaces the stored header fields with those of the 304 (except those
/// listed above), and returns the new [`StoredMeta`], whose age and freshness now count from
/// the 304 (`request_time`, `response_time` of the validation exchange).
///
/// Selection (§4.3.4): if the 304 has an `ETag`, it must match the stored one (weak
/// comparison; a stored response without one does not match); else if both have a
/// `Last-Modified`, they must be equal; a 304 without validators refreshes the response it
/// answers (relay validates one stored response at a time).
///
/// The stored `Age` is dropped (the 304 is a new first-hand response; its own `Age`, if any,
/// is taken), and a 304 without a valid `Date` gets one from `response_time`
/// (RFC 9110 §6.6.1), so the old `Date` does not make the refreshed response look old.
pub fn apply_304<'a, I>(
    stored: &StoredMeta,
    stored_headers: &mut HeaderList,
    status: u16,
    not_modified: I,
    request_time: u64,
    response_time: u64,
    config: &PolicyConfig,
) -> Result<StoredMeta, ValidateError>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    if status != 304 {
        return Err(ValidateError::NotA304(status));
    }
    let new: Vec<(&[u8], &[u8])> = not_modified.into_iter().collect();
    let first = |name: &str| {
        new.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| trim(v))
    };
    if let Some(tag) = first("etag") {
        let matches = is_entity_tag(tag)
            && stored
                .etag
                .as_deref()
                .is_some_and(|s| opaque(s) == opaque(tag));
        if !matches {
            return Err(ValidateError::ValidatorMismatch);
        }
    } else if let (Some(lm), Some(stored_lm)) = (
        first("last-modified").and_then(parse_http_date),
        stored.last_modified,
    ) && lm != stored_lm
    {
        return Err(ValidateError::ValidatorMismatch);
    }

    let new_cc = CacheControl::parse(
        new.iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"cache-control"))
            .map(|(_, v)| *v),
    );
    let listed = connection_listed(&new);
    let excluded = |name: &[u8]| {
        contains(NOT_STORED, name)
            || contains(NOT_UPDATED, name)
            || listed.iter().any(|l| l.eq_ignore_ascii_case(name))
            || [&new_cc, &stored.directives].iter().any(|d| {
                d.private
                    .fields()
                    .iter()
                    .chain(d.no_cache.fields())
                    .any(|f| f.as_bytes().eq_ignore_ascii_case(name))
            })
    };

    stored_headers.retain(|(n, _)| !n.eq_ignore_ascii_case("age"));
    let mut replaced: Vec<&[u8]> = Vec::new();
    for &(name, value) in &new {
        let Ok(name_str) = std::str::from_utf8(name) else {
            continue;
        };
        if excluded(name) || !super::is_token(name) {
            continue;
        }
        if !replaced.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            stored_headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name_str));
            replaced.push(name);
        }
        stored_headers.push((name_str.to_owned(), value.to_vec()));
    }
    if first("date").and_then(parse_http_date).is_none() {
        stored_headers.retain(|(n, _)| !n.eq_ignore_ascii_case("date"));
        stored_headers.push(("Date".to_owned(), fmt_http_date(response_time).into_bytes()));
    }
    let meta = StoredMeta::from_response(
        stored.status,
        stored_headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_slice())),
        request_time,
        response_time,
        config,
    );
    strip_for_storage(stored_headers, &meta.directives);
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::freshness::{current_age, is_fresh};

    fn list(pairs: &[(&str, &str)]) -> HeaderList {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn meta_of(headers: &HeaderList, t: u64) -> StoredMeta {
        StoredMeta::from_response(
            200,
            headers.iter().map(|(n, v)| (n.as_bytes(), v.as_slice())),
            t,
            t,
            &PolicyConfig::default(),
        )
    }

    fn get<'a>(h: &'a HeaderList, name: &str) -> Vec<&'a [u8]> {
        h.iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    const D0: &str = "Thu, 01 Jan 1970 00:16:40 GMT"; // 1000
    const D1: &str = "Thu, 01 Jan 1970 00:33:20 GMT"; // 2000
    const LM: &str = "Thu, 01 Jan 1970 00:00:10 GMT";

    #[test]
    fn rfc9111_4_3_1_conditional_request() {
        let h = list(&[
            ("ETag", "W/\"v1\""),
            ("Last-Modified", LM),
            ("Cache-Control", "max-age=1"),
        ]);
        let m = meta_of(&h, 1000);
        let c = conditional_headers(&m);
        assert_eq!(c.if_none_match, Some(&b"W/\"v1\""[..]));
        assert_eq!(c.if_modified_since, Some(LM.as_bytes()));
        let h = list(&[
            ("Last-Modified", "not a date"),
            ("Cache-Control", "max-age=1"),
        ]);
        let m = meta_of(&h, 1000);
        let c = conditional_headers(&m);
        assert_eq!(
            c,
            ConditionalHeaders {
                if_none_match: None,
                if_modified_since: None
            }
        );
    }

    #[test]
    fn rfc9111_4_3_3_outcomes() {
        assert_eq!(ValidationOutcome::of(304), ValidationOutcome::NotModified);
        assert_eq!(ValidationOutcome::of(503), ValidationOutcome::ServerError);
        assert_eq!(ValidationOutcome::of(200), ValidationOutcome::Replaced);
        assert_eq!(ValidationOutcome::of(404), ValidationOutcome::Replaced);
    }

    #[test]
    fn rfc9111_4_3_4_304_updates_headers_keeps_body_fields() {
        let mut h = list(&[
            ("Date", D0),
            ("Cache-Control", "max-age=60"),
            ("ETag", "\"v1\""),
            ("Content-Length", "1234"),
            ("Content-Type", "text/plain"),
            ("Content-Encoding", "gzip"),
            ("Age", "30"),
            ("X-Old", "a"),
            ("X-Old", "b"),
            ("Vary", "Accept-Encoding"),
        ]);
        let stored = meta_of(&h, 1000);
        let nm = [
            (&b"Date"[..], D1.as_bytes()),
            (b"Cache-Control", b"max-age=600"),
            (b"ETag", b"\"v1\""),
            (b"Content-Length", b"0"),
            (b"Content-Encoding", b"br"),
            (b"X-Old", b"c"),
            (b"Vary", b"*"),
            (b"Connection", b"x-hop"),
            (b"X-Hop", b"1"),
            (b"Keep-Alive", b"timeout=5"),
        ];
        let m = apply_304(
            &stored,
            &mut h,
            304,
            nm,
            1999,
            2000,
            &PolicyConfig::default(),
        );
        let m = m.expect("matching 304");
        assert_eq!(get(&h, "content-length"), [b"1234"]);
        assert_eq!(get(&h, "content-encoding"), [b"gzip"]);
        assert_eq!(get(&h, "content-type"), [b"text/plain"]);
        assert_eq!(get(&h, "x-old"), [b"c"]);
        assert_eq!(get(&h, "cache-control"), [b"max-age=600"]);
        assert_eq!(get(&h, "vary"), [b"Accept-Encoding"]);
        assert!(get(&h, "age").is_empty());
        assert!(get(&h, "x-hop").is_empty() && get(&h, "connection").is_empty());
        assert!(get(&h, "keep-alive").is_empty());
        assert_eq!(m.directives.max_age, Some(600));
        assert_eq!(current_age(&m, 2000), 1);
        assert!(is_fresh(&m, 2500));
    }

    #[test]
    fn rfc9111_4_3_4_304_without_date_gets_one() {
        let mut h = list(&[
            ("Date", D0),
            ("Cache-Control", "max-age=60"),
            ("ETag", "\"v1\""),
        ]);
        let stored = meta_of(&h, 1000);
        let m = apply_304(
            &stored,
            &mut h,
            304,
            [(&b"Date"[..], &b"garbage"[..])],
            2000,
            2000,
            &PolicyConfig::default(),
        );
        let m = m.expect("304 without validators refreshes");
        assert_eq!(m.date, Some(2000));
        assert!(is_fresh(&m, 2059));
        assert_eq!(get(&h, "date"), [D1.as_bytes()]);
    }

    #[test]
    fn rfc9111_4_3_4_mismatched_validators_rejected() {
        let mut h = list(&[
            ("Cache-Control", "max-age=60"),
            ("ETag", "\"v1\""),
            ("Last-Modified", LM),
        ]);
        let stored = meta_of(&h, 1000);
        let before = h.clone();
        let cfg = PolicyConfig::default();
        for field in [
            (&b"ETag"[..], &b"\"v2\""[..]),
            (&b"ETag"[..], &b"garbage"[..]),
            (&b"Last-Modified"[..], D1.as_bytes()),
        ] {
            let r = apply_304(&stored, &mut h, 304, [field], 0, 0, &cfg);
            assert_eq!(r, Err(ValidateError::ValidatorMismatch), "{field:?}");
        }
        let r = apply_304(&stored, &mut h, 200, std::iter::empty(), 0, 0, &cfg);
        assert_eq!(r, Err(ValidateError::NotA304(200)));
        assert_eq!(h, before, "nothing changed on error");
        // weak comparison: W/"v1" matches "v1"
        let r = apply_304(
            &stored,
            &mut h,
            304,
            [(&b"ETag"[..], &b"W/\"v1\""[..])],
            0,
            0,
            &cfg,
        );
        assert!(r.is_ok());
        // a stored response without ETag is not selected by a 304 with one
        let mut h2 = list(&[("Cache-Control", "max-age=60")]);
        let s2 = meta_of(&h2, 0);
        let r = apply_304(
            &s2,
            &mut h2,
            304,
            [(&b"ETag"[..], &b"\"v1\""[..])],
            0,
            0,
            &cfg,
        );
        assert_eq!(r, Err(ValidateError::ValidatorMismatch));
    }

    #[test]
    fn rfc9111_3_1_strip_for_storage() {
        let mut h = list(&[
            ("Connection", "close, X-Hop"),
            ("X-Hop", "1"),
            ("Transfer-Encoding", "chunked"),
            ("Set-Cookie", "a=b"),
            ("X-Private", "me"),
            ("Content-Type", "text/plain"),
            ("Proxy-Authenticate", "Basic"),
        ]);
        let d = CacheControl::parse([&b"private=\"x-private\", no-cache=\"set-cookie\""[..]]);
        strip_for_storage(&mut h, &d);
        assert_eq!(h, list(&[("Content-Type", "text/plain")]));
    }

    #[test]
    fn rfc9111_4_3_4_304_qualified_private_fields_not_taken() {
        let mut h = list(&[("Cache-Control", "max-age=60"), ("ETag", "\"v1\"")]);
        let stored = meta_of(&h, 0);
        let nm = [
            (
                &b"Cache-Control"[..],
                &b"max-age=60, private=\"set-cookie\""[..],
            ),
            (b"Set-Cookie", b"s=1"),
        ];
        let r = apply_304(&stored, &mut h, 304, nm, 0, 0, &PolicyConfig::default());
        assert!(r.is_ok());
        assert!(get(&h, "set-cookie").is_empty());
    }
}
