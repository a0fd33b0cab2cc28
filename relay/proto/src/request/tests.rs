//! `parse_request`: limits, request-line and target forms, Host, framing and smuggling defences.

use super::*;

fn parse(buf: &[u8]) -> Result<Parsed<'_>, ParseError> {
    parse_request(buf, &Limits::default())
}

fn complete(buf: &[u8]) -> (Request<'_>, usize) {
    match parse(buf) {
        Ok(Parsed::Complete { request, head_len }) => (request, head_len),
        other => panic!("expected a complete request, got {other:?}"),
    }
}

fn err(buf: &[u8]) -> ParseError {
    match parse(buf) {
        Err(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

const GET: &[u8] = b"GET /videos/a.mp4?t=3 HTTP/1.1\r\n\
    Host: example.com\r\n\
    Range: bytes=0-99\r\n\
    If-Range: \"abc\"\r\n\
    If-None-Match: W/\"x\", \"y\"\r\n\
    If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
    User-Agent: test\r\n\
    \r\n";

#[test]
fn valid_get() {
    let (r, head_len) = complete(GET);
    assert_eq!(head_len, GET.len());
    assert_eq!(r.method, Method::Get);
    assert_eq!(r.method_str, "GET");
    assert_eq!(r.target, "/videos/a.mp4?t=3");
    assert_eq!(r.path, "/videos/a.mp4");
    assert_eq!(r.version, 1);
    assert!(r.keep_alive);
    assert_eq!(r.content_length, 0);
    assert_eq!(r.host, Some(&b"example.com"[..]));
    assert_eq!(r.range, Some(&b"bytes=0-99"[..]));
    assert_eq!(r.if_range, Some(&b"\"abc\""[..]));
    assert_eq!(r.if_none_match, Some(&b"W/\"x\", \"y\""[..]));
    assert_eq!(
        r.if_modified_since,
        Some(&b"Sun, 06 Nov 1994 08:49:37 GMT"[..])
    );
    assert!(!r.authorization);
}

#[test]
fn authorization_is_noticed_in_any_case() {
    for head in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer x\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nauthorization: Basic eDp5\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nHost: a\r\nAUTHORIZATION:\r\n\r\n",
    ] {
        assert!(complete(head).0.authorization, "{head:?}");
    }
    // Proxy-Authorization is for relay, not the origin; it is not Authorization.
    let (r, _) = complete(b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Authorization: x\r\n\r\n");
    assert!(!r.authorization);
}

#[test]
fn rfc9111_5_2_1_cache_directives_are_noticed_in_any_case() {
    for head in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nCache-Control: no-cache\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\ncache-control: max-age=0\r\n\r\n",
        b"GET / HTTP/1.0\r\nPRAGMA: no-cache\r\n\r\n",
    ] {
        assert!(complete(head).0.cache_directives, "{head:?}");
    }
    let (r, _) = complete(b"GET / HTTP/1.1\r\nHost: a\r\nCache-Controls: x\r\n\r\n");
    assert!(!r.cache_directives);
}

#[test]
fn valid_head_and_other_methods() {
    let (r, _) = complete(b"HEAD / HTTP/1.1\r\nhost: a\r\n\r\n");
    assert_eq!(
        (r.method, r.path, r.host),
        (Method::Head, "/", Some(&b"a"[..]))
    );
    assert_eq!(r.range, None);
    let (r, _) = complete(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(
        (r.method, r.method_str, r.content_length),
        (Method::Other, "POST", 5)
    );
    // Methods are case-sensitive.
    let (r, _) = complete(b"get / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.method, Method::Other);
    // Bare LF line endings are accepted (RFC 9112 §2.2).
    let (r, n) = complete(b"GET / HTTP/1.1\nHost: a\n\n");
    assert_eq!((r.method, n), (Method::Get, 24));
}

#[test]
fn request_target_forms() {
    let (r, _) = complete(b"GET http://example.com/a/b?q HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.target, r.path), ("http://example.com/a/b?q", "/a/b"));
    let (r, _) = complete(b"GET HTTP://example.com HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.path, "/");
    let (r, _) = complete(b"GET http://example.com?q=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.path, r.query), ("/", Some("q=1")));
    let (r, _) = complete(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.path, "*");
    let (r, _) = complete(b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.path, "");
    for bad in [
        &b"GET * HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"GET foo HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http:///a HTTP/1.1\r\nHost: x\r\n\r\n",
        // Only the http scheme is served.
        b"GET https://example.com/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://u@example.com/ HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        assert_eq!(err(bad), ParseError::InvalidTarget, "{bad:?}");
    }
}

#[test]
fn rfc9112_3_2_2_an_absolute_form_authority_replaces_host() {
    let (r, _) =
        complete(b"GET http://Cdn.Example:8080/a?b=c HTTP/1.1\r\nHost: other.example\r\n\r\n");
    assert_eq!(
        r.authority,
        Some(Authority {
            host: "Cdn.Example",
            port: Some(8080)
        })
    );
    assert_eq!(r.host, Some(&b"other.example"[..]));
    let mut origin_form = String::new();
    r.push_origin_form(&mut origin_form);
    assert_eq!(origin_form, "/a?b=c");
    // Host is still required and still validated (RFC 9112 §3.2).
    assert_eq!(
        err(b"GET http://a.example/ HTTP/1.1\r\n\r\n"),
        ParseError::MissingHost
    );
    assert_eq!(
        err(b"GET http://a.example/ HTTP/1.1\r\nHost: a/b\r\n\r\n"),
        ParseError::InvalidHost
    );
    // HTTP/1.0 may name its authority in the target alone.
    let (r, _) = complete(b"GET http://a.example/x HTTP/1.0\r\n\r\n");
    assert_eq!(r.authority.map(|a| a.host), Some("a.example"));
}

#[test]
fn rfc9112_3_2_host_is_validated_once_and_required_in_http_1_1() {
    let (r, _) = complete(b"GET /x?y#z HTTP/1.1\r\nHost: Example.com.:80\r\n\r\n");
    assert_eq!(
        r.authority,
        Some(Authority {
            host: "Example.com",
            port: Some(80)
        })
    );
    let mut origin_form = String::new();
    r.push_origin_form(&mut origin_form);
    assert_eq!(origin_form, "/x?y");
    for bad in [
        &b"GET / HTTP/1.1\r\nHost: victim.example/v3\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a:http\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: /static\r\n\r\n",
    ] {
        assert_eq!(err(bad), ParseError::InvalidHost, "{bad:?}");
    }
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"),
        ParseError::MultipleHost
    );
    assert_eq!(err(b"GET / HTTP/1.1\r\n\r\n"), ParseError::MissingHost);
    // An empty Host is valid: the target has no authority (RFC 9112 §3.2).
    let (r, _) = complete(b"GET / HTTP/1.1\r\nHost:\r\n\r\n");
    assert_eq!(r.authority.map(|a| a.host), Some(""));
    let (r, _) = complete(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(r.authority, None);
}

#[test]
fn leading_empty_lines_are_skipped() {
    let buf = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let (r, head_len) = complete(buf);
    assert_eq!((r.path, head_len), ("/", buf.len()));
    assert_eq!(parse(b"\r\n\r\n"), Ok(Parsed::Partial));
}

#[test]
fn pipelined_requests() {
    let buf = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\
        POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\
        HEAD /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let mut rest = &buf[..];
    let mut seen = Vec::new();
    while !rest.is_empty() {
        let (r, head_len) = complete(rest);
        seen.push((r.method, r.path, r.keep_alive));
        let skip = head_len + usize::try_from(r.content_length).unwrap();
        rest = &rest[skip..];
    }
    assert_eq!(
        seen,
        [
            (Method::Get, "/1", true),
            (Method::Other, "/2", true),
            (Method::Head, "/3", false)
        ]
    );
}

#[test]
fn every_truncation_is_partial() {
    let with_body = b"\r\nPOST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n";
    for buf in [GET, &with_body[..], b"GET / HTTP/1.0\n\n"] {
        for end in 0..buf.len() {
            assert_eq!(parse(&buf[..end]), Ok(Parsed::Partial), "cut at {end}");
        }
        assert!(matches!(parse(buf), Ok(Parsed::Complete { .. })));
    }
}

#[test]
fn oversized_head_is_431() {
    let limits = Limits {
        max_head_bytes: 64,
        ..Limits::default()
    };
    let big =
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    assert!(big.len() > 64);
    assert_eq!(parse_request(big, &limits), Err(ParseError::HeadTooLarge));
    // Still partial but already too long.
    assert_eq!(
        parse_request(&big[..65], &limits),
        Err(ParseError::HeadTooLarge)
    );
    assert_eq!(parse_request(&big[..64], &limits), Ok(Parsed::Partial));
    // A head of exactly the limit is fine, whatever follows it.
    let exact = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let limits = Limits {
        max_head_bytes: exact.len(),
        ..Limits::default()
    };
    let mut two = exact.to_vec();
    two.extend_from_slice(exact);
    assert!(matches!(
        parse_request(&two, &limits),
        Ok(Parsed::Complete { head_len, .. }) if head_len == exact.len()
    ));
    // Endless empty lines count towards the limit too.
    let blank = vec![b'\n'; Limits::default().max_head_bytes + 1];
    assert_eq!(parse(&blank), Err(ParseError::HeadTooLarge));
    assert_eq!(ParseError::HeadTooLarge.status(), 431);
}

#[test]
fn too_many_headers_is_431() {
    let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..64 {
        buf.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    buf.extend_from_slice(b"\r\n");
    assert_eq!(err(&buf), ParseError::TooManyHeaders);
    assert_eq!(ParseError::TooManyHeaders.status(), 431);
    let limits = Limits {
        max_headers: 65,
        ..Limits::default()
    };
    assert!(matches!(
        parse_request(&buf, &limits),
        Ok(Parsed::Complete { .. })
    ));
    // Above the cap acts as the cap.
    let limits = Limits {
        max_headers: 1000,
        ..Limits::default()
    };
    let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..MAX_HEADERS_CAP {
        buf.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    buf.extend_from_slice(b"\r\n");
    assert_eq!(
        parse_request(&buf, &limits),
        Err(ParseError::TooManyHeaders)
    );
}

#[test]
fn long_uri_is_414() {
    let limits = Limits {
        max_uri_bytes: 10,
        ..Limits::default()
    };
    let ok = b"GET /123456789 HTTP/1.1\r\nHost: a\r\n\r\n";
    assert!(matches!(
        parse_request(ok, &limits),
        Ok(Parsed::Complete { .. })
    ));
    let long = b"GET /1234567890 HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(parse_request(long, &limits), Err(ParseError::UriTooLong));
    // Detected while the request line is still arriving.
    assert_eq!(
        parse_request(b"GET /1234567890", &limits),
        Err(ParseError::UriTooLong)
    );
    assert_eq!(
        parse_request(b"GET /123456789", &limits),
        Ok(Parsed::Partial)
    );
    // A target longer than the whole head limit is 414, not 431.
    let mut huge = b"GET /".to_vec();
    huge.resize(20 * 1024, b'a');
    assert_eq!(parse(&huge), Err(ParseError::UriTooLong));
    assert_eq!(ParseError::UriTooLong.status(), 414);
}

#[test]
fn malformed_request_lines_are_400() {
    for buf in [
        &b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
        b"GET /\r\nHost: a\r\n\r\n",
        b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
        b" GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / FTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\rHost: a\r\n\r\n",
    ] {
        let e = err(buf);
        assert_eq!(
            e.status(),
            400,
            "{:?} gave {e:?}",
            String::from_utf8_lossy(buf)
        );
        assert_eq!(
            e,
            ParseError::InvalidRequestLine,
            "{:?}",
            String::from_utf8_lossy(buf)
        );
    }
}

#[test]
fn malformed_header_lines_are_400() {
    for buf in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: v\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\n(x): v\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n",
    ] {
        assert_eq!(
            err(buf),
            ParseError::InvalidHeader,
            "{:?}",
            String::from_utf8_lossy(buf)
        );
    }
}

#[test]
fn unsupported_versions_are_505() {
    for buf in [
        &b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET / HTTP/3",
    ] {
        assert_eq!(err(buf), ParseError::UnsupportedVersion);
    }
    assert_eq!(ParseError::UnsupportedVersion.status(), 505);
    assert_eq!(
        ParseError::UnsupportedVersion.reason(),
        "HTTP Version Not Supported"
    );
}

#[test]
fn smuggling_defences() {
    let cases: &[(&[u8], ParseError)] = &[
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            ParseError::TransferEncodingWithContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            ParseError::TransferEncodingWithContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            ParseError::ConflictingContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n",
            ParseError::InvalidContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -3\r\n\r\n",
            ParseError::InvalidContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3a\r\n\r\n",
            ParseError::InvalidContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n",
            ParseError::InvalidContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n",
            ParseError::InvalidContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
            ParseError::InvalidContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n",
            ParseError::InvalidContentLength,
        ),
        // Obsolete line folding.
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
            ParseError::InvalidHeader,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n",
            ParseError::InvalidHeader,
        ),
        (
            b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
            ParseError::InvalidHeader,
        ),
        // Whitespace between field name and colon.
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\n",
            ParseError::InvalidHeader,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\t: chunked\r\n\r\n",
            ParseError::InvalidHeader,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            ParseError::TransferEncodingUnsupported,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            ParseError::TransferEncodingNotChunked,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
            ParseError::TransferEncodingNotChunked,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n",
            ParseError::TransferEncodingNotChunked,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n",
            ParseError::TransferEncodingNotChunked,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            ParseError::DuplicateHeader("Transfer-Encoding"),
        ),
        (
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            ParseError::TransferEncodingHttp10,
        ),
        (b"GET / HTTP/1.1\r\n\r\n", ParseError::MissingHost),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            ParseError::MultipleHost,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            ParseError::MultipleHost,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\nRange: bytes=5-6\r\n\r\n",
            ParseError::DuplicateHeader("Range"),
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"a\"\r\nIf-None-Match: \"b\"\r\n\r\n",
            ParseError::DuplicateHeader("If-None-Match"),
        ),
    ];
    for (buf, want) in cases {
        assert_eq!(err(buf), *want, "{:?}", String::from_utf8_lossy(buf));
    }
    assert_eq!(ParseError::TransferEncodingUnsupported.status(), 501);
    assert_eq!(ParseError::TransferEncodingNotChunked.status(), 400);
    assert_eq!(ParseError::TransferEncodingWithContentLength.status(), 400);
    assert_eq!(ParseError::MissingHost.status(), 400);
}

#[test]
fn expect_100_continue_and_other_expectations() {
    let (r, _) = complete(
        b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue \r\nContent-Length: 9\r\n\r\n",
    );
    assert!(r.expect_continue);
    let (r, _) = complete(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n");
    assert!(!r.expect_continue, "HTTP/1.0 expectations are ignored");
    let (r, _) = complete(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(!r.expect_continue);
    for buf in [
        &b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n"[..],
        b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, x\r\n\r\n",
    ] {
        assert_eq!(err(buf), ParseError::UnsupportedExpectation);
    }
    assert_eq!(
        err(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nExpect: 100-continue\r\n\r\n"),
        ParseError::DuplicateHeader("Expect")
    );
    assert_eq!(ParseError::UnsupportedExpectation.status(), 417);
}

#[test]
fn a_chunked_body_is_announced_not_measured() {
    for te in ["chunked", "Chunked", " CHUNKED \t"] {
        let buf = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n");
        let (r, _) = complete(buf.as_bytes());
        assert!(r.chunked, "{te:?}");
        assert_eq!(r.content_length, 0);
    }
    let (r, _) = complete(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n");
    assert!(!r.chunked);
}

#[test]
fn content_length_edge_cases() {
    let (r, _) =
        complete(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\ncontent-length: 7\r\n\r\n");
    assert_eq!(r.content_length, 7);
    let (r, _) = complete(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007 \r\n\r\n");
    assert_eq!(r.content_length, 7);
    let (r, _) =
        complete(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n");
    assert_eq!(r.content_length, u64::MAX);
}

#[test]
fn keep_alive_rules() {
    let cases: &[(&[u8], bool)] = &[
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            false,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n",
            false,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nConnection: close\r\n\r\n",
            false,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n",
            true,
        ),
        (b"GET / HTTP/1.0\r\n\r\n", false),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
        (
            b"GET / HTTP/1.0\r\nConnection: te,\tKeep-Alive \r\n\r\n",
            true,
        ),
        (
            b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
            false,
        ),
    ];
    for (buf, want) in cases {
        let (r, _) = complete(buf);
        assert_eq!(r.keep_alive, *want, "{:?}", String::from_utf8_lossy(buf));
    }
    // HTTP/1.0 needs no Host.
    let (r, _) = complete(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!((r.version, r.host), (0, None));
}

#[test]
fn zero_limits_never_panic() {
    let zero = Limits {
        max_head_bytes: 0,
        max_headers: 0,
        max_uri_bytes: 0,
    };
    assert_eq!(parse_request(b"", &zero), Ok(Parsed::Partial));
    assert_eq!(parse_request(GET, &zero), Err(ParseError::HeadTooLarge));
    let no_headers = Limits {
        max_headers: 0,
        ..Limits::default()
    };
    assert_eq!(
        parse_request(GET, &no_headers),
        Err(ParseError::TooManyHeaders)
    );
}

#[test]
fn every_error_has_a_status_and_reason() {
    let all = [
        ParseError::HeadTooLarge,
        ParseError::TooManyHeaders,
        ParseError::UriTooLong,
        ParseError::InvalidRequestLine,
        ParseError::InvalidTarget,
        ParseError::InvalidHeader,
        ParseError::UnsupportedVersion,
        ParseError::InvalidContentLength,
        ParseError::ConflictingContentLength,
        ParseError::TransferEncodingWithContentLength,
        ParseError::TransferEncodingHttp10,
        ParseError::TransferEncodingUnsupported,
        ParseError::MissingHost,
        ParseError::MultipleHost,
        ParseError::InvalidHost,
        ParseError::DuplicateHeader("Range"),
    ];
    for e in all {
        assert!(!e.reason().is_empty(), "{e:?}");
        assert!(!e.to_string().is_empty());
    }
    assert_eq!(
        ParseError::HeadTooLarge.reason(),
        "Request Header Fields Too Large"
    );
    assert_eq!(ParseError::MissingHost.reason(), "Bad Request");
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap deterministic stand-in for the fuzz target.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let alphabet = b"GET HTTP/1.01\r\n: Host,-=x\t";
    for _ in 0..2000 {
        let mut buf = Vec::new();
        for _ in 0..(state % 80) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            buf.push(alphabet[(state % alphabet.len() as u64) as usize]);
        }
        let _ = parse(&buf);
        state = state.wrapping_add(1);
    }
    // Every single-byte substitution of a valid request.
    let mut buf = GET.to_vec();
    for i in 0..buf.len() {
        let original = buf[i];
        for b in 0..=255u8 {
            buf[i] = b;
            if let Ok(Parsed::Complete { head_len, .. }) = parse(&buf) {
                assert!(head_len <= buf.len());
            }
        }
        buf[i] = original;
    }
}
