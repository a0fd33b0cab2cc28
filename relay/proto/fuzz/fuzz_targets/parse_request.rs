//! Feeds arbitrary bytes to `parse_request` under the default limits and under small ones,
//! and checks properties, not only the absence of panics:
//!
//! - a complete head lies inside the input and the limits; every borrowed field points into
//!   the head; the classified method agrees with its token; errors map to the statuses the
//!   server answers with;
//! - re-parsing exactly the consumed head gives the same request and length, and so does the
//!   head followed by any other bytes (pipelining);
//! - every strict prefix of a complete head is `Partial`, never an error (the parser is
//!   called again as bytes arrive, so a prefix error would refuse a valid request);
//! - the range and conditional parsers accept whatever header values the parser lets
//!   through;
//! - a chunked body decodes to the same bytes, ends at the same place or fails the same way
//!   whether its input comes at once or in pieces of any size (the server decodes whatever
//!   has arrived and keeps what it could not consume), and its decoded length is what it
//!   handed out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_proto::chunked::{Decoder, Progress};
use relay_proto::range::{ByteRange, MAX_RANGES, parse_range};
use relay_proto::{Limits, Method, Parsed, Request, conditional, parse_request};

/// Small limits, so that the 414/431 paths are reached by short inputs.
const SMALL: Limits = Limits {
    max_head_bytes: 256,
    max_headers: 4,
    max_uri_bytes: 32,
};

fuzz_target!(|data: &[u8]| {
    for limits in [Limits::default(), SMALL] {
        check(data, &limits);
    }
});

fn check(data: &[u8], limits: &Limits) {
    let mut rest = data;
    // Walk pipelined requests the way the server does.
    loop {
        let (request, head_len) = match parse_request(rest, limits) {
            Ok(Parsed::Complete { request, head_len }) => (request, head_len),
            Ok(Parsed::Partial) => {
                // Partial only while a head may still fit.
                assert!(
                    rest.len() <= limits.max_head_bytes,
                    "Partial past the head limit"
                );
                break;
            }
            Err(e) => {
                assert!(matches!(e.status(), 400 | 414 | 417 | 431 | 501 | 505), "{e:?}");
                break;
            }
        };
        complete_invariants(rest, &request, head_len, limits);
        let head = &rest[..head_len];
        // The head alone parses to the same request.
        assert_eq!(
            parse_request(head, limits),
            Ok(Parsed::Complete { request, head_len }),
            "re-parsing the consumed head differs"
        );
        // So does the head followed by another request (pipelining).
        let mut piped = head.to_vec();
        piped.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: b\r\n\r\n");
        assert_eq!(
            parse_request(&piped, limits),
            Ok(Parsed::Complete { request, head_len }),
            "a pipelined follower changes the first request"
        );
        // Every strict prefix is Partial (all of them for short heads, some for long ones).
        let cuts: Vec<usize> = if head_len <= 300 {
            (0..head_len).collect()
        } else {
            vec![0, 1, head_len / 3, head_len / 2, head_len - 2, head_len - 1]
        };
        for cut in cuts {
            assert_eq!(
                parse_request(&head[..cut], limits),
                Ok(Parsed::Partial),
                "prefix of {cut} bytes of a complete {head_len}-byte head is not Partial"
            );
        }
        side_parsers(&request);
        if request.chunked {
            assert_eq!(request.content_length, 0);
            match chunked_body(&rest[head_len..], limits.max_head_bytes) {
                Some(len) => rest = &rest[head_len + len..],
                None => break,
            }
            continue;
        }
        let body = usize::try_from(request.content_length).unwrap_or(usize::MAX);
        match head_len.checked_add(body).and_then(|skip| rest.get(skip..)) {
            Some(next) => rest = next,
            None => break,
        }
    }
    // Every prefix of a short input parses without panicking, too.
    if data.len() <= 256 {
        for end in 0..data.len() {
            let _ = parse_request(&data[..end], limits);
        }
    }
}

fn complete_invariants(buf: &[u8], r: &Request<'_>, head_len: usize, limits: &Limits) {
    assert!(head_len > 0 && head_len <= buf.len());
    assert!(head_len <= limits.max_head_bytes);
    assert!(r.target.len() <= limits.max_uri_bytes);
    assert!(r.version <= 1);
    if r.version == 1 {
        assert!(r.host.is_some(), "HTTP/1.1 request without Host accepted");
        assert!(r.authority.is_some(), "HTTP/1.1 request without an authority");
    }
    if let Some(a) = r.authority {
        // A validated authority is borrowed from the head and never holds a path.
        assert!(!a.host.contains(['/', '?', '#', '@', ' ']), "host {:?}", a.host);
        let mut normal = String::new();
        a.push_normalised(&mut normal, relay_proto::HTTP_PORT);
        assert!(!normal.contains('/'));
    }
    match r.method {
        Method::Get => assert_eq!(r.method_str, "GET"),
        Method::Head => assert_eq!(r.method_str, "HEAD"),
        Method::Other => assert!(r.method_str != "GET" && r.method_str != "HEAD"),
    }
    let head = &buf[..head_len];
    let inside = |s: &[u8]| {
        let (start, end) = (head.as_ptr() as usize, head.as_ptr() as usize + head.len());
        let p = s.as_ptr() as usize;
        s.is_empty() || (p >= start && p + s.len() <= end)
    };
    assert!(inside(r.method_str.as_bytes()));
    assert!(inside(r.target.as_bytes()));
    for field in [
        r.host,
        r.range,
        r.if_range,
        r.if_none_match,
        r.if_modified_since,
    ]
    .into_iter()
    .flatten()
    {
        assert!(inside(field), "a field value points outside the head");
    }
    // The path is the target's own bytes (or one of the fixed strings for `*`/authority forms).
    assert!(
        r.path.is_empty() || r.path == "*" || r.path == "/" || r.target.contains(r.path),
        "path {:?} not from target {:?}",
        r.path,
        r.target
    );
    if r.target.starts_with('/') {
        assert!(r.target.starts_with(r.path));
        assert!(!r.path.contains(['?', '#']));
    }
}

fn side_parsers(request: &Request<'_>) {
    if let Some(range) = request.range {
        let mut out = [ByteRange::default(); MAX_RANGES];
        let _ = parse_range(range, request.content_length, &mut out);
    }
    // Request bytes stand in for the validators: any bytes must be safe.
    let _ = conditional::evaluate(
        request.if_none_match,
        request.if_modified_since,
        request.host,
        request.if_range,
    );
    if let Some(if_range) = request.if_range {
        let _ = conditional::if_range_allows(if_range, request.if_none_match, request.host);
    }
}

/// Decodes a chunked body at the start of `input` at once and in pieces; both must agree.
/// The body's wire length if it is complete in `input`.
fn chunked_body(input: &[u8], max_trailer: usize) -> Option<usize> {
    let mut whole = Vec::new();
    let mut d = Decoder::new(max_trailer);
    let at_once = d.decode(input, |b| whole.extend_from_slice(b));
    if let Ok(p) = at_once {
        assert!(p.consumed <= input.len());
        assert_eq!(d.body_len(), whole.len() as u64);
        assert_eq!(p.done, d.is_done());
    }
    // The same input arriving in pieces of a size taken from the input itself.
    let piece = 1 + input.first().map_or(0, |&b| usize::from(b % 17));
    let mut pieces = Vec::new();
    let mut d = Decoder::new(max_trailer);
    let mut pending: Vec<u8> = Vec::new();
    let mut taken = 0;
    let mut in_pieces = Ok(Progress { consumed: 0, done: false });
    for part in input.chunks(piece) {
        pending.extend_from_slice(part);
        match d.decode(&pending, |b| pieces.extend_from_slice(b)) {
            Ok(p) => {
                assert!(p.consumed <= pending.len());
                pending.drain(..p.consumed);
                taken += p.consumed;
                in_pieces = Ok(Progress { consumed: taken, done: p.done });
                if p.done {
                    break;
                }
            }
            Err(e) => {
                in_pieces = Err(e);
                break;
            }
        }
    }
    match (at_once, in_pieces) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "pieces of {piece} end elsewhere");
            assert!(whole == pieces, "pieces of {piece} decode to other bytes");
            a.done.then_some(a.consumed)
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "pieces of {piece} fail otherwise");
            None
        }
        // Bytes after the end of the body are not looked at; an error needs its bytes.
        (a, b) => panic!("at once {a:?}, in pieces of {piece} {b:?}"),
    }
}
