//! Conditional requests (RFC 9110 §13) for GET and HEAD.
//!
//! [`evaluate`] applies `If-None-Match` and `If-Modified-Since` in the
//! §13.2.2 order; [`if_range_allows`] decides whether a `Range` header is
//! honoured. Validators are passed as the bytes relay sends in `ETag` and
//! `Last-Modified`. Invalid request fields are ignored, which always errs
//! towards sending the full representation.
//!
//! [`precondition_failed`] applies `If-Match` and `If-Unmodified-Since` (steps 1
//! and 2): a client resuming a download with `Range` and `If-Match` gets 412,
//! not bytes of another version to append to the ones it has.
//!
//! Not covered: the "date later than now" rule for `If-Modified-Since`, which
//! needs a clock.

use httpdate::HttpDate;

/// Outcome of evaluating a request's preconditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Serve the representation (200, or 206 after range processing).
    Proceed,
    /// Answer 304 Not Modified.
    NotModified,
}

/// An entity-tag: `[ "W/" ] DQUOTE *etagc DQUOTE` (RFC 9110 §8.8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityTag<'a> {
    /// Whether the tag is weak (`W/` prefix).
    pub weak: bool,
    /// The opaque tag, without quotes.
    pub opaque: &'a [u8],
}

impl<'a> EntityTag<'a> {
    /// Parses a whole field value as one entity-tag (surrounding OWS allowed).
    pub fn parse(value: &'a [u8]) -> Option<EntityTag<'a>> {
        match EntityTag::parse_prefix(trim_ows(value))? {
            (tag, []) => Some(tag),
            _ => None,
        }
    }

    /// Parses an entity-tag at the start of `s`; returns it and the rest.
    fn parse_prefix(s: &'a [u8]) -> Option<(EntityTag<'a>, &'a [u8])> {
        let (weak, s) = match s.strip_prefix(b"W/") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let s = s.strip_prefix(b"\"")?;
        let close = s.iter().position(|&b| b == b'"')?;
        let (opaque, rest) = s.split_at(close);
        if !opaque.iter().all(|&b| is_etagc(b)) {
            return None;
        }
        Some((
            EntityTag { weak, opaque },
            rest.get(1..).unwrap_or_default(),
        ))
    }

    /// Strong comparison: both strong and the same opaque tag.
    pub fn strong_eq(&self, other: &EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    /// Weak comparison: the same opaque tag, weakness ignored.
    pub fn weak_eq(&self, other: &EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }
}

/// `etagc = %x21 / %x23-7E / obs-text`.
fn is_etagc(b: u8) -> bool {
    b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80
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

fn parse_date(value: &[u8]) -> Option<HttpDate> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Evaluates `If-None-Match` and `If-Modified-Since` for a GET or HEAD
/// (RFC 9110 §13.2.2 steps 3 and 4).
///
/// `etag` and `last_modified` are the selected representation's validators
/// as sent in `ETag` and `Last-Modified` (an IMF-fixdate).
pub fn evaluate(
    if_none_match: Option<&[u8]>,
    if_modified_since: Option<&[u8]>,
    etag: Option<&[u8]>,
    last_modified: Option<&[u8]>,
) -> Precondition {
    // If-Modified-Since is ignored whenever If-None-Match is present.
    let not_modified = match (if_none_match, if_modified_since, last_modified) {
        (Some(inm), _, _) => if_none_match_hits(inm, etag),
        (None, Some(ims), Some(lm)) => not_modified_since(ims, lm),
        _ => false,
    };
    if not_modified {
        Precondition::NotModified
    } else {
        Precondition::Proceed
    }
}

/// Whether `If-Match` or `If-Unmodified-Since` fails for the representation
/// (RFC 9110 §13.2.2 steps 1 and 2): the answer is 412. `If-Match` holds for `*`
/// or a listed tag that strongly matches `etag` (a malformed list, or no `etag`,
/// fails it); without `If-Match`, `If-Unmodified-Since` fails when
/// `last_modified` is later than its date (either date unreadable: ignored).
pub fn precondition_failed(
    if_match: Option<&[u8]>,
    if_unmodified_since: Option<&[u8]>,
    etag: Option<&[u8]>,
    last_modified: Option<&[u8]>,
) -> bool {
    if let Some(value) = if_match {
        return !if_match_holds(value, etag);
    }
    match (
        if_unmodified_since.and_then(parse_date),
        last_modified.and_then(parse_date),
    ) {
        (Some(since), Some(modified)) => modified > since,
        _ => false,
    }
}

fn if_match_holds(value: &[u8], etag: Option<&[u8]>) -> bool {
    list_matches(value, etag, |a, b| a.strong_eq(b))
}

/// Whether a list of entity-tags (or `*`) names `etag` under `same`; a malformed
/// list names nothing.
fn list_matches(
    value: &[u8],
    etag: Option<&[u8]>,
    same: fn(&EntityTag<'_>, &EntityTag<'_>) -> bool,
) -> bool {
    let value = trim_ows(value);
    if value == b"*" {
        return true;
    }
    let Some(current) = etag.and_then(EntityTag::parse) else {
        return false;
    };
    let mut rest = value;
    let mut hit = false;
    loop {
        // `#rule`: skip OWS and empty elements between members.
        while let [b' ' | b'\t' | b',', tail @ ..] = rest {
            rest = tail;
        }
        if rest.is_empty() {
            return hit;
        }
        let Some((tag, tail)) = EntityTag::parse_prefix(rest) else {
            return false;
        };
        hit |= same(&tag, &current);
        rest = trim_ows(tail);
        if !(rest.is_empty() || rest.starts_with(b",")) {
            return false;
        }
    }
}

/// Whether an `If-None-Match` value matches the representation, so the
/// condition is false and a GET/HEAD gets 304. `*` matches any existing
/// representation; otherwise any listed tag must weakly match `etag`.
/// A malformed list matches nothing.
pub fn if_none_match_hits(value: &[u8], etag: Option<&[u8]>) -> bool {
    list_matches(value, etag, |a, b| a.weak_eq(b))
}

/// Whether the representation is unmodified since the `If-Modified-Since`
/// date. Either date failing to parse means "modified" (serve it).
pub fn not_modified_since(if_modified_since: &[u8], last_modified: &[u8]) -> bool {
    match (parse_date(if_modified_since), parse_date(last_modified)) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// Whether an `If-Range` value lets the `Range` header apply (RFC 9110
/// §13.1.5): an entity-tag must strongly match `etag`; a date must exactly
/// match `last_modified`. Otherwise the full representation is sent.
pub fn if_range_allows(value: &[u8], etag: Option<&[u8]>, last_modified: Option<&[u8]>) -> bool {
    let value = trim_ows(value);
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        let (Some(wanted), Some(current)) =
            (EntityTag::parse(value), etag.and_then(EntityTag::parse))
        else {
            return false;
        };
        return wanted.strong_eq(&current);
    }
    match (parse_date(value), last_modified.and_then(parse_date)) {
        (Some(wanted), Some(current)) => wanted == current,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_and_if_unmodified_since_fail_for_another_version() {
        let (etag, lm) = (
            Some(&b"\"v2\""[..]),
            Some(&b"Sun, 06 Nov 1994 08:49:37 GMT"[..]),
        );
        let fails = |im: Option<&str>, ius: Option<&str>| {
            precondition_failed(im.map(str::as_bytes), ius.map(str::as_bytes), etag, lm)
        };
        assert!(!fails(None, None));
        assert!(!fails(Some("*"), None));
        assert!(!fails(Some("\"v1\", \"v2\""), None));
        assert!(fails(Some("\"v1\""), None));
        // Strong comparison: a weak tag never holds.
        assert!(fails(Some("W/\"v2\""), None));
        assert!(fails(Some("garbage"), None));
        assert!(precondition_failed(Some(b"\"v2\""), None, None, lm));
        // If-Match decides alone when present.
        assert!(!fails(
            Some("\"v2\""),
            Some("Sat, 01 Jan 1994 00:00:00 GMT")
        ));
        assert!(fails(None, Some("Sat, 01 Jan 1994 00:00:00 GMT")));
        assert!(!fails(None, Some("Sun, 06 Nov 1994 08:49:37 GMT")));
        assert!(!fails(None, Some("not a date")));
    }

    const ETAG: &[u8] = b"\"v1\"";
    const LM: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    #[test]
    fn entity_tags() {
        assert_eq!(
            EntityTag::parse(b" W/\"a b\" "),
            None,
            "space is not an etagc"
        );
        assert_eq!(
            EntityTag::parse(b"W/\"xyz\""),
            Some(EntityTag {
                weak: true,
                opaque: b"xyz"
            })
        );
        assert_eq!(
            EntityTag::parse(b"\"\""),
            Some(EntityTag {
                weak: false,
                opaque: b""
            })
        );
        for bad in [&b"xyz"[..], b"\"xyz", b"w/\"x\"", b"\"x\"y", b"W/x", b""] {
            assert_eq!(
                EntityTag::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let strong = EntityTag::parse(b"\"1\"").unwrap();
        let weak = EntityTag::parse(b"W/\"1\"").unwrap();
        assert!(strong.strong_eq(&strong));
        assert!(!strong.strong_eq(&weak));
        assert!(!weak.strong_eq(&weak));
        assert!(weak.weak_eq(&strong));
    }

    #[test]
    fn if_none_match() {
        assert!(if_none_match_hits(b"\"v1\"", Some(ETAG)));
        assert!(
            if_none_match_hits(b"W/\"v1\"", Some(ETAG)),
            "weak comparison"
        );
        assert!(if_none_match_hits(b"\"v1\"", Some(b"W/\"v1\"")));
        assert!(if_none_match_hits(b"\"a\", \"b\" ,W/\"v1\"", Some(ETAG)));
        assert!(if_none_match_hits(b", ,\"v1\",", Some(ETAG)));
        assert!(if_none_match_hits(b"*", Some(ETAG)));
        assert!(
            if_none_match_hits(b" * ", None),
            "* matches any representation"
        );
        assert!(!if_none_match_hits(b"\"v2\"", Some(ETAG)));
        assert!(!if_none_match_hits(b"\"a\", \"b\"", Some(ETAG)));
        assert!(!if_none_match_hits(b"\"v1\"", None));
        assert!(!if_none_match_hits(b"", Some(ETAG)));
        // Malformed lists match nothing.
        assert!(!if_none_match_hits(b"v1", Some(ETAG)));
        assert!(!if_none_match_hits(b"\"v1\" \"v2\"", Some(ETAG)));
        assert!(!if_none_match_hits(b"\"v1\", junk", Some(ETAG)));
        assert!(!if_none_match_hits(b"\"v1\", *", Some(ETAG)));
    }

    #[test]
    fn if_modified_since() {
        assert!(not_modified_since(LM, LM));
        assert!(not_modified_since(b"Sun, 06 Nov 1994 08:49:38 GMT", LM));
        assert!(!not_modified_since(b"Sun, 06 Nov 1994 08:49:36 GMT", LM));
        // Obsolete formats parse too.
        assert!(not_modified_since(b"Sunday, 06-Nov-94 08:49:37 GMT", LM));
        assert!(not_modified_since(b"Sun Nov  6 08:49:37 1994", LM));
        // Invalid dates are ignored.
        assert!(!not_modified_since(b"yesterday", LM));
        assert!(!not_modified_since(b"Sun, 06 Nov 1994 25:49:37 GMT", LM));
        assert!(!not_modified_since(b"\xff\xfe", LM));
        assert!(!not_modified_since(LM, b"garbage"));
    }

    #[test]
    fn precedence() {
        use Precondition::*;
        let later = Some(&b"Mon, 07 Nov 1994 08:49:37 GMT"[..]);
        let earlier = Some(&b"Sat, 05 Nov 1994 08:49:37 GMT"[..]);
        assert_eq!(evaluate(None, None, Some(ETAG), Some(LM)), Proceed);
        assert_eq!(
            evaluate(Some(ETAG), None, Some(ETAG), Some(LM)),
            NotModified
        );
        assert_eq!(
            evaluate(Some(b"\"x\""), None, Some(ETAG), Some(LM)),
            Proceed
        );
        assert_eq!(evaluate(None, later, Some(ETAG), Some(LM)), NotModified);
        assert_eq!(evaluate(None, earlier, Some(ETAG), Some(LM)), Proceed);
        assert_eq!(evaluate(None, later, Some(ETAG), None), Proceed);
        assert_eq!(
            evaluate(None, Some(b"bogus"), Some(ETAG), Some(LM)),
            Proceed
        );
        // If-None-Match present: If-Modified-Since is ignored both ways.
        assert_eq!(
            evaluate(Some(b"\"x\""), later, Some(ETAG), Some(LM)),
            Proceed
        );
        assert_eq!(
            evaluate(Some(ETAG), earlier, Some(ETAG), Some(LM)),
            NotModified
        );
        // Even a malformed If-None-Match suppresses If-Modified-Since.
        assert_eq!(
            evaluate(Some(b"junk"), later, Some(ETAG), Some(LM)),
            Proceed
        );
    }

    #[test]
    fn if_range() {
        assert!(if_range_allows(b"\"v1\"", Some(ETAG), Some(LM)));
        assert!(if_range_allows(b" \"v1\" ", Some(ETAG), None));
        assert!(!if_range_allows(b"\"v2\"", Some(ETAG), Some(LM)));
        assert!(
            !if_range_allows(b"W/\"v1\"", Some(ETAG), Some(LM)),
            "weak never matches"
        );
        assert!(!if_range_allows(b"\"v1\"", Some(b"W/\"v1\""), Some(LM)));
        assert!(!if_range_allows(b"\"v1\"", None, Some(LM)));
        assert!(if_range_allows(LM, Some(ETAG), Some(LM)));
        assert!(if_range_allows(LM, None, Some(LM)));
        assert!(!if_range_allows(
            b"Sun, 06 Nov 1994 08:49:38 GMT",
            Some(ETAG),
            Some(LM)
        ));
        assert!(!if_range_allows(
            b"Sun, 06 Nov 1994 08:49:36 GMT",
            Some(ETAG),
            Some(LM)
        ));
        assert!(!if_range_allows(LM, Some(ETAG), None));
        assert!(!if_range_allows(b"", Some(ETAG), Some(LM)));
        assert!(!if_range_allows(b"\"v1\", \"v2\"", Some(ETAG), Some(LM)));
        assert!(!if_range_allows(b"not a date", Some(ETAG), Some(LM)));
    }
}
