//! Which of a client's request header fields relay sends on to an origin.
//!
//! Hop-by-hop fields ([`HOP_BY_HOP`], and any a `Connection` field names) concern one
//! connection and never travel (RFC 9110 §7.6.1). Beyond those, each kind of upstream request
//! leaves out the fields relay writes itself or must not pass on: [`FILL_OWN`] for a cache
//! fill, [`PASS_OWN`] for a pass-through. Everything else is forwarded as the client sent it,
//! in its order and spelling, as a shared cache (nginx `proxy_cache`, Varnish) does.

use crate::{HOP_BY_HOP, MAX_HEADERS_CAP};

/// Fields a cache fill (a GET/HEAD miss, fetched once for every client that wants the object)
/// never forwards, lower-case:
/// - `host`: the fill sends the origin's authority;
/// - `range`, `if-range` and the conditionals: the fill asks for whole chunks and
///   revalidates with the stored validators; the client's own are answered from the cache;
/// - `accept-encoding`: the fill asks for `identity`, so the stored bytes suit every client;
/// - `content-length`, `transfer-encoding`, `expect`: a fill has no body;
/// - `proxy-authorization` and `relay-peer` (another relay's credentials): meant for relay
///   itself;
/// - `authorization`, last: a fill for a request without credentials never carries another's
///   (one with credentials sends its own, [`FILL_OWN_CREDENTIALED`]).
pub const FILL_OWN: &[&str] = &[
    "host",
    "range",
    "if-range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "accept-encoding",
    "content-length",
    "transfer-encoding",
    "expect",
    "proxy-authorization",
    "relay-peer",
    "authorization",
];

/// [`FILL_OWN`] for a fill made for a request with `Authorization`: its credentials go
/// with it, and its answer is stored only when it says it may answer such requests
/// (RFC 9111 §3.5).
pub const FILL_OWN_CREDENTIALED: &[&str] = match FILL_OWN.split_last() {
    Some((_, rest)) => rest,
    None => &[],
};

/// Fields a pass-through never forwards, lower-case: `host` (the origin's is sent),
/// `content-length` (the body is re-framed) and `relay-peer` (another relay's credentials,
/// meant for relay).
pub const PASS_OWN: &[&str] = &["host", "content-length", "relay-peer"];

/// The header fields of a request head to send upstream, as (name as spelled, value): all
/// but the hop-by-hop ones, those a `Connection` field names, and those in `own`
/// (lower-case names). A head that does not parse gives none; heads reach this function only
/// after [`crate::parse_request`] accepted them.
pub fn forwarded_fields(head: &[u8], own: &[&str]) -> Vec<(String, Vec<u8>)> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS_CAP];
    let mut req = httparse::Request::new(&mut slots);
    if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
        return Vec::new();
    }
    let named: Vec<&[u8]> = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(trim)
        .filter(|n| !n.is_empty())
        .collect();
    let listed = |list: &[&str], name: &str| list.iter().any(|n| n.eq_ignore_ascii_case(name));
    req.headers
        .iter()
        .filter(|h| {
            !listed(HOP_BY_HOP, h.name)
                && !listed(own, h.name)
                && !named
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(h.name.as_bytes()))
        })
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect()
}

/// Calls `f` with the header fields of a request head as (name, value); none when the head
/// does not parse (heads reach this only after [`crate::parse_request`] accepted them).
/// Allocation-free: the fields are read into slots on the stack.
pub fn with_fields<R>(
    head: &[u8],
    f: impl for<'h> FnOnce(&mut dyn Iterator<Item = (&'h [u8], &'h [u8])>) -> R,
) -> R {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS_CAP];
    let mut req = httparse::Request::new(&mut slots);
    let parsed = matches!(req.parse(head), Ok(httparse::Status::Complete(_)));
    let headers: &[httparse::Header<'_>] = if parsed { req.headers } else { &[] };
    f(&mut headers.iter().map(|h| (h.name.as_bytes(), h.value)))
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(fields: &[(String, Vec<u8>)]) -> Vec<&str> {
        fields.iter().map(|(n, _)| n.as_str()).collect()
    }

    const BROWSER: &[u8] = b"GET /v/a.mp4?x=1 HTTP/1.1\r\n\
        Host: example.com\r\n\
        User-Agent: Mozilla/5.0 (X11)\r\n\
        Accept: text/html, */*;q=0.8\r\n\
        Accept-Language: fr-CH, fr;q=0.9\r\n\
        Accept-Encoding: gzip, br\r\n\
        Cookie: session=abc; theme=dark\r\n\
        X-Custom-Trace: t-42\r\n\
        Range: bytes=0-99\r\n\
        If-Range: \"v1\"\r\n\
        If-None-Match: \"v1\"\r\n\
        If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
        If-Match: *\r\n\
        If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
        Expect: 100-continue\r\n\
        Content-Length: 0\r\n\
        Authorization: Bearer secret\r\n\
        Proxy-Authorization: Basic eDp5\r\n\
        Connection: keep-alive, X-Hop\r\n\
        Keep-Alive: timeout=5\r\n\
        X-Hop: one-link-only\r\n\
        TE: trailers\r\n\
        Upgrade: websocket\r\n\
        Proxy-Connection: keep-alive\r\n\
        \r\n";

    #[test]
    fn a_fill_for_a_request_with_credentials_carries_them_and_no_other_field_of_relays() {
        let own: Vec<&str> = FILL_OWN
            .iter()
            .copied()
            .filter(|n| *n != "authorization")
            .collect();
        assert_eq!(FILL_OWN_CREDENTIALED, &own[..]);
        let head =
            b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer t\r\nRange: bytes=0-1\r\n\r\n";
        let names = |own| -> Vec<String> {
            forwarded_fields(head, own)
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        };
        assert_eq!(names(FILL_OWN_CREDENTIALED), ["Authorization"]);
        assert!(names(FILL_OWN).is_empty());
    }

    #[test]
    fn a_fill_forwards_end_to_end_fields_as_sent() {
        let f = forwarded_fields(BROWSER, FILL_OWN);
        assert_eq!(
            names(&f),
            [
                "User-Agent",
                "Accept",
                "Accept-Language",
                "Cookie",
                "X-Custom-Trace"
            ]
        );
        assert_eq!(f[0].1, b"Mozilla/5.0 (X11)");
        assert_eq!(f[2].1, b"fr-CH, fr;q=0.9");
        assert_eq!(f[3].1, b"session=abc; theme=dark");
        assert_eq!(f[4].1, b"t-42");
    }

    #[test]
    fn a_pass_forwards_ranges_conditionals_and_credentials() {
        let f = forwarded_fields(BROWSER, PASS_OWN);
        let n = names(&f);
        for kept in [
            "Range",
            "If-Range",
            "If-None-Match",
            "If-Modified-Since",
            "If-Match",
            "If-Unmodified-Since",
            "Authorization",
            "Accept-Encoding",
            "Cookie",
        ] {
            assert!(n.contains(&kept), "{kept} missing from {n:?}");
        }
        for dropped in [
            "Host",
            "Content-Length",
            "Connection",
            "X-Hop",
            "TE",
            "Upgrade",
        ] {
            assert!(!n.contains(&dropped), "{dropped} forwarded: {n:?}");
        }
    }

    #[test]
    fn connection_named_fields_are_dropped_whatever_their_case() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nconnection: ,  x-one ,X-TWO\r\n\
            Connection: x-three\r\nX-One: 1\r\nx-two: 2\r\nX-THREE: 3\r\nX-Four: 4\r\n\r\n";
        let f = forwarded_fields(head, FILL_OWN);
        assert_eq!(names(&f), ["X-Four"]);
    }

    #[test]
    fn repeated_fields_keep_their_order_and_nothing_is_invented() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1\r\nX-A: \r\nCookie: b=2\r\n\r\n";
        let f = forwarded_fields(head, FILL_OWN);
        assert_eq!(
            f,
            [
                ("Cookie".to_string(), b"a=1".to_vec()),
                ("X-A".to_string(), Vec::new()),
                ("Cookie".to_string(), b"b=2".to_vec()),
            ]
        );
        let bare = forwarded_fields(b"GET / HTTP/1.0\r\n\r\n", FILL_OWN);
        assert!(bare.is_empty());
    }

    #[test]
    fn a_head_that_does_not_parse_forwards_nothing() {
        for bad in [
            &b""[..],
            b"GET / HTTP/1.1\r\nHost: a\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        ] {
            assert!(forwarded_fields(bad, FILL_OWN).is_empty(), "{bad:?}");
        }
    }
}
