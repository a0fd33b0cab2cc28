//! Answers relay makes up itself: each counted by its status and the reason decided where
//! it is known (the upstream's `FillError`, the parser's `ParseError`, the directory's
//! `OriginError`); answers from the cache or an origin count nothing.

use super::*;
use relay_cache::fill::Wait;

/// Every (status, reason) counted so far, sorted.
fn made_up(kit: &Kit) -> Vec<(&'static str, &'static str, u64)> {
    let mut counted: Vec<_> = kit.stats.made_up.each().collect();
    counted.sort();
    counted
}

#[test]
fn a_head_fetch_failure_is_counted_by_what_the_upstream_reported() {
    for (e, status, reason) in [
        (FillError::Connect, "502", "connect"),
        (FillError::Tls, "502", "tls"),
        (FillError::Closed, "502", "closed"),
        (
            FillError::timeout(Wait::FirstByte, 250),
            "504",
            "first_byte_timeout",
        ),
        (FillError::Framing, "502", "framing"),
        (FillError::Malformed, "502", "malformed"),
        (FillError::Down, "502", "down"),
        (FillError::Status(401), "401", "status"),
    ] {
        let mut kit = Kit::new();
        let (sent, _) = kit.head_fails_with("/x", e);
        let (head, _) = split_response(&sent);
        let want = match status {
            "401" => "4xx",
            s => s,
        };
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{e:?}: {head}"
        );
        assert_eq!(made_up(&kit), vec![(want, reason, 1)], "{e:?}");
    }
}

#[test]
fn a_fill_failing_before_its_first_byte_is_counted_with_the_fill_error() {
    let mut kit = Kit::new();
    let key = cdn_key("/idle");
    kit.shared.cache.inflight.head(&key);
    let mut ex = kit.exchange();
    assert!(matches!(
        kit.input(&mut ex, &cdn_get("/idle")),
        Action::Wait
    ));
    let meta = Arc::new(ObjectMeta::file(9000, 7, String::new(), String::new()));
    let chunk = ChunkKey {
        object: Arc::from(key.as_str()),
        version: 7,
        index: 0,
    };
    let (fill, writer) = Fill::new(chunk, 9000);
    kit.shared
        .cache
        .inflight
        .finish_head(&key, Ok(meta), Some(fill.clone()), &kit.shared.wake);
    let a = ex_poll(&mut kit, &mut ex);
    let (sent, _) = kit.run(&mut ex, a);
    assert!(sent.is_empty());
    writer.fail(FillError::timeout(Wait::Idle, 300));
    let (sent, _) = kit.woken(&mut ex);
    assert!(sent.starts_with(b"HTTP/1.1 504 "));
    assert_eq!(made_up(&kit), vec![("504", "idle_timeout", 1)]);
}

#[test]
fn bad_requests_are_counted_by_the_status_they_get() {
    let mut kit = Kit::new();
    for (req, status) in [
        (&b"GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"[..], "400"),
        (&b"GET /a HTTP/2.0\r\nHost: x\r\n\r\n"[..], "505"),
    ] {
        let mut ex = kit.exchange();
        let (head, _, next) = kit.ask(&mut ex, req);
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
        assert!(matches!(next, Action::Linger), "{next:?}");
    }
    assert_eq!(
        made_up(&kit),
        vec![("400", "bad_request", 1), ("505", "bad_request", 1)]
    );
}

#[test]
fn directory_answers_are_counted_by_the_origin_error() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    let (head, _, _) = kit.ask(&mut ex, &get("/nope"));
    assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
    let (head, _, _) = kit.ask(&mut ex, b"DELETE /f HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 405 "), "{head}");
    let a = kit.input(&mut ex, &get("/x"));
    let a = match a {
        Action::OpenDir { .. } => ex.on_dir_opened(&mut kit.cx(), Err(-libc::EIO)),
        other => panic!("{other:?}"),
    };
    let (sent, _) = kit.run(&mut ex, a);
    assert!(sent.starts_with(b"HTTP/1.1 502 "));
    assert_eq!(
        made_up(&kit),
        vec![
            ("404", "not_found", 1),
            ("405", "method_not_allowed", 1),
            ("502", "origin_io", 1),
        ]
    );
}

#[test]
fn a_pass_through_refused_for_its_body_is_counted() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    let req = format!(
        "POST /up HTTP/1.1\r\nHost: {CDN}\r\nContent-Length: {}\r\n\r\n",
        128 << 20
    );
    let (head, _, _) = kit.ask(&mut ex, req.as_bytes());
    assert!(head.starts_with("HTTP/1.1 413 "), "{head}");
    let mut ex = kit.exchange();
    let req =
        format!("POST /up HTTP/1.1\r\nHost: {CDN}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    let (head, _, _) = kit.ask(&mut ex, req.as_bytes());
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    assert_eq!(
        made_up(&kit),
        vec![("400", "bad_body", 1), ("413", "body_too_large", 1)]
    );
}

#[test]
fn answers_from_the_cache_or_the_origin_count_nothing() {
    let mut kit = Kit::new();
    kit.file("ok.txt", b"fine");
    let mut ex = kit.exchange();
    for _ in 0..2 {
        let (head, _, _) = kit.ask(&mut ex, &get("/ok.txt"));
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    }
    assert_eq!(made_up(&kit), vec![]);
}
