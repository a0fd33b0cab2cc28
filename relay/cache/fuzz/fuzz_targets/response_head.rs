//! What an origin sends in a response head, through relay-cache's defensive parsers
//! (`policy::response_headers`, `policy::cache_control`, and `StoredMeta::from_response`,
//! which uses them all).
//!
//! Input: byte 0-1 the status (big-endian, modulo 1000), byte 2 flags (bit 0: the request
//! was HEAD; bits 1-3: config switches), then field lines separated by `\n`, each split at
//! its first `:` into name and value (values are not trimmed: any bytes reach the parsers).
//!
//! Properties beyond "no panic":
//! - framing: no body for HEAD/1xx/204/304; a `Length(n)` agrees with
//!   `parse_content_length` over the same lines; `Transfer-Encoding` with `Content-Length`
//!   is never framed;
//! - `Content-Range`: `first <= last`, `last < complete`, and formatting the value back
//!   parses to the same range;
//! - dates: a parsed date formats and re-parses to itself (years up to 9999);
//! - `Cache-Control`: delta-seconds stay within 2^31; several field lines mean the same as
//!   one line joining them with commas (RFC 9110 §5.3) when no quoted string spans them;
//! - `StoredMeta`: `request_time <= response_time`, `Age` within 2^31, an `ETag` kept only
//!   when it is one; freshness and age arithmetic never overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_cache::policy::cache_control::{CacheControl, MaxStale, SurrogateControl};
use relay_cache::policy::response_headers::{
    BodyFraming, ContentRange, FramingError, body_framing, content_range, first_date,
    fmt_http_date, parse_content_length, parse_content_range, parse_expires, parse_http_date,
};
use relay_cache::policy::{DELTA_SECONDS_MAX, PolicyConfig, StoredMeta, age_header, freshness};

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let status = u16::from_be_bytes([data[0], data[1]]) % 1000;
    let flags = data[2];
    let head_request = flags & 1 != 0;
    let config = PolicyConfig {
        heuristic: flags & 2 != 0,
        targeted: match flags & 4 {
            0 => Vec::new(),
            _ => vec!["cdn-cache-control".to_string()],
        },
        surrogate_control: flags & 8 != 0,
        ..PolicyConfig::default()
    };
    let headers: Vec<(&[u8], &[u8])> = data[3..]
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            Some((&line[..colon], &line[colon + 1..]))
        })
        .collect();
    let values = |name: &'static str| {
        headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| *v)
    };

    framing(
        head_request,
        status,
        &headers,
        values("content-length").collect(),
    );

    match content_range(headers.iter().copied()) {
        Ok(Some(cr)) => content_range_roundtrip(cr),
        Ok(None) => assert_eq!(values("content-range").count(), 0),
        Err(FramingError::MultipleContentRange) => assert!(values("content-range").count() > 1),
        Err(_) => {}
    }
    for (_, v) in &headers {
        if let Ok(cr) = parse_content_range(v) {
            content_range_roundtrip(cr);
        }
        date_roundtrip(v);
    }
    let _ = first_date(values("date"));
    let _ = parse_expires(values("expires"));
    let _ = age_header::parse_age(values("age"));

    let cc_lines: Vec<&[u8]> = values("cache-control").collect();
    let cc = CacheControl::parse(cc_lines.iter().copied());
    directives_in_range(&cc);
    if cc_lines.len() > 1
        && !cc_lines
            .iter()
            .any(|l| l.contains(&b'"') || l.contains(&b'\\'))
    {
        let joined = cc_lines.join(&b","[..]);
        assert_eq!(
            CacheControl::parse([&joined[..]]),
            cc,
            "field lines and their comma-joined value differ"
        );
    }
    if let Some(cdn) = CacheControl::parse_targeted(values("cdn-cache-control")) {
        directives_in_range(&cdn);
    }
    if let Some(sc) = SurrogateControl::parse(values("surrogate-control")) {
        assert!(sc.max_age.is_none_or(|a| a <= DELTA_SECONDS_MAX));
    }

    let (request_time, response_time) = (1_700_000_000, 1_700_000_005);
    let meta = StoredMeta::from_response(
        status,
        headers.iter().copied(),
        request_time,
        response_time,
        &config,
    );
    assert_eq!(meta.status, status);
    assert!(meta.request_time <= meta.response_time);
    assert!(meta.age <= DELTA_SECONDS_MAX);
    directives_in_range(&meta.directives);
    if let Some(etag) = &meta.etag {
        let inner = etag.strip_prefix(b"W/").unwrap_or(etag);
        assert!(inner.len() >= 2 && inner.starts_with(b"\"") && inner.ends_with(b"\""));
    }
    for now in [0, response_time, u64::MAX] {
        let _ = freshness::current_age(&meta, now);
        assert!(age_header::age_value(&meta, now) <= DELTA_SECONDS_MAX);
    }
    let _ = freshness::freshness_lifetime(&meta);
});

fn framing(head_request: bool, status: u16, headers: &[(&[u8], &[u8])], cl: Vec<&[u8]>) {
    let has_te = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case(b"transfer-encoding"));
    let result = body_framing(head_request, status, headers.iter().copied());
    if head_request || status < 200 || status == 204 || status == 304 {
        assert_eq!(result, Ok(BodyFraming::Empty));
        return;
    }
    let length = parse_content_length(cl.iter().copied());
    match result {
        Ok(BodyFraming::Length(n)) => {
            assert_eq!(length, Ok(Some(n)));
        }
        Ok(BodyFraming::Chunked) => {
            assert!(has_te);
            assert_eq!(length, Ok(None), "chunked framing with a Content-Length");
        }
        Ok(BodyFraming::UntilClose) => assert!(matches!(length, Ok(None))),
        Ok(BodyFraming::Empty) => panic!("Empty framing for status {status}"),
        Err(FramingError::TransferEncodingWithContentLength) => {
            assert!(has_te && !cl.is_empty());
        }
        Err(_) => {}
    }
    if has_te && !cl.is_empty() {
        assert!(
            result.is_err(),
            "Transfer-Encoding with Content-Length framed: {result:?}"
        );
    }
}

fn content_range_roundtrip(cr: ContentRange) {
    let text = match cr {
        ContentRange::Bytes {
            first,
            last,
            complete,
        } => {
            assert!(first <= last);
            if let Some(c) = complete {
                assert!(last < c);
            }
            assert!(cr.body_len().is_some() || (first == 0 && last == u64::MAX));
            let complete = complete.map_or("*".to_string(), |c| c.to_string());
            format!("bytes {first}-{last}/{complete}")
        }
        ContentRange::Unsatisfied { complete } => format!("bytes */{complete}"),
    };
    assert_eq!(parse_content_range(text.as_bytes()), Ok(cr), "{text}");
}

fn date_roundtrip(value: &[u8]) {
    const LAST_SECOND_OF_9999: u64 = 253_402_300_799;
    if let Some(t) = parse_http_date(value)
        && t <= LAST_SECOND_OF_9999
    {
        let text = fmt_http_date(t);
        assert_eq!(parse_http_date(text.as_bytes()), Some(t), "{text}");
    }
}

fn directives_in_range(cc: &CacheControl) {
    for v in [
        cc.max_age,
        cc.s_maxage,
        cc.stale_while_revalidate,
        cc.stale_if_error,
        cc.min_fresh,
    ]
    .into_iter()
    .flatten()
    {
        assert!(v <= DELTA_SECONDS_MAX, "delta-seconds {v} above 2^31");
    }
    if let Some(MaxStale::Limit(n)) = cc.max_stale {
        assert!(n <= DELTA_SECONDS_MAX);
    }
}
