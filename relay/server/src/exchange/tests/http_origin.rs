//! HTTP origins: waiting on a head fetch, streaming a fill, failures before and after the first byte, stale copies, the fields that go upstream.

use super::*;

#[test]
fn a_miss_waits_on_the_head_fetch_then_streams_the_fill_as_it_arrives() {
    let mut kit = Kit::new();
    let key = cdn_key("/v/seg1");
    // The test is the upstream: the head fetch is in flight when the request comes.
    let (pending, new) = kit.shared.cache.inflight.head(&key);
    assert!(new);
    let mut ex = kit.exchange();
    let before = Instant::now();
    let a = kit.input(&mut ex, &cdn_get("/v/seg1"));
    assert!(
        matches!(a, Action::Wait),
        "joined the fetch in flight: {a:?}"
    );
    assert!(ex.is_waiting());
    assert_eq!(ex.state_name(), "awaiting-head");
    let d = ex.deadline();
    assert!(d >= before + kit.timeouts.send);
    // A wake-up with nothing new keeps the deadline of the wait.
    assert!(matches!(ex.poll(&mut kit.cx()), Action::Wait));
    assert_eq!(ex.deadline(), d);
    assert!(pending.watchers.contains(0), "registered to be woken");

    // The origin answers: a 20000-byte object, its first chunk filling.
    let body = object(20_000);
    let meta = Arc::new(ObjectMeta::file(
        20_000,
        42,
        "\"v42\"".into(),
        String::new(),
    ));
    let (fill, mut writer) = Fill::new(
        ChunkKey {
            object: Arc::from(key.as_str()),
            version: 42,
            index: 0,
        },
        CHUNK as usize,
    );
    writer.append(&body[..1000]).unwrap();
    kit.shared
        .cache
        .inflight
        .finish_head(&key, Ok(meta), Some(fill.clone()), &kit.shared.wake);
    let (sent, next) = kit.woken(&mut ex);
    let (head, rest) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(field(&head, "content-length"), Some("20000"));
    // (The test made the fetch; this request waited on it.)
    assert_eq!(
        field(&head, "cache-status"),
        Some("relay; fwd=uri-miss; fwd-status=200; stored; collapsed")
    );
    assert!(field(&head, "age").is_some());
    assert_eq!(rest, &body[..1000], "what the fill had, at once");
    assert!(
        matches!(next, Action::Wait),
        "then it waits for more: {next:?}"
    );
    assert_eq!(ex.state_name(), "ready", "streaming from the fill it holds");

    writer.append(&body[1000..CHUNK as usize]).unwrap();
    writer.finish().unwrap();
    let (sent, next) = kit.woken(&mut ex);
    assert_eq!(sent, &body[1000..CHUNK as usize]);
    // The second chunk: the test makes its fill first, so the exchange joins it too.
    let Action::Wait = next else {
        // (it joined or started a fill: a start would submit to the upstream)
        panic!("{next:?}")
    };
    drop(fill);
}

#[test]
fn a_head_fetch_that_fails_is_a_502() {
    let mut kit = Kit::new();
    let (sent, next) = kit.head_fails("/gone");
    let (head, rest) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 502 "), "{head}");
    assert_eq!(rest, b"upstream failed\n");
    assert!(
        matches!(next, Action::Recv),
        "the connection stays: {next:?}"
    );
}

#[test]
fn a_fill_that_fails_before_any_byte_is_an_error_status_and_after_is_a_cut() {
    let mut kit = Kit::new();
    for (cut_after, expect_status) in [(0usize, true), (500, false)] {
        let key = cdn_key(&format!("/f{cut_after}"));
        kit.shared.cache.inflight.head(&key);
        let mut ex = kit.exchange();
        assert!(matches!(
            kit.input(&mut ex, &cdn_get(&format!("/f{cut_after}"))),
            Action::Wait
        ));
        let meta = Arc::new(ObjectMeta::file(9000, 7, String::new(), String::new()));
        let (fill, mut writer) = Fill::new(
            ChunkKey {
                object: Arc::from(key.as_str()),
                version: 7,
                index: 0,
            },
            9000,
        );
        if cut_after > 0 {
            writer.append(&object(cut_after)).unwrap();
        }
        kit.shared
            .cache
            .inflight
            .finish_head(&key, Ok(meta), Some(fill.clone()), &kit.shared.wake);
        let first = ex_poll(&mut kit, &mut ex);
        let (sent, next) = kit.run(&mut ex, first);
        assert!(matches!(next, Action::Wait), "{next:?}");
        writer.fail(FillError::Truncated);
        let (more, last) = kit.woken(&mut ex);
        if expect_status {
            assert!(sent.is_empty(), "nothing went out before the failure");
            let (head, _) = split_response(&more);
            assert!(head.starts_with("HTTP/1.1 502 "), "{head}");
            assert!(matches!(last, Action::Close), "{last:?}");
        } else {
            assert_eq!(split_response(&sent).1.len(), cut_after);
            assert!(more.is_empty(), "never a short body passed off as whole");
            assert!(matches!(last, Action::Close), "cut: {last:?}");
        }
    }
}

#[test]
fn each_wait_gets_a_deadline_of_its_own() {
    let mut kit = Kit::new();
    let key = cdn_key("/slow");
    kit.shared.cache.inflight.head(&key);
    let mut ex = kit.exchange();
    assert!(matches!(
        kit.input(&mut ex, &cdn_get("/slow")),
        Action::Wait
    ));
    let first = ex.deadline();
    std::thread::sleep(Duration::from_millis(20));
    let meta = Arc::new(ObjectMeta::file(100, 9, String::new(), String::new()));
    let (fill, _writer) = Fill::new(
        ChunkKey {
            object: Arc::from(key.as_str()),
            version: 9,
            index: 0,
        },
        100,
    );
    kit.shared
        .cache
        .inflight
        .finish_head(&key, Ok(meta), Some(fill), &kit.shared.wake);
    // The head came; the body's first bytes have not: a new wait, with its own deadline.
    assert!(matches!(ex_poll(&mut kit, &mut ex), Action::Wait));
    assert!(ex.deadline() > first);
}

#[test]
fn a_client_that_leaves_while_its_answer_waits_on_the_origin_is_gone() {
    let mut kit = Kit::new();
    let key = cdn_key("/w");
    kit.shared.cache.inflight.head(&key);
    let mut ex = kit.exchange();
    assert!(matches!(kit.input(&mut ex, &cdn_get("/w")), Action::Wait));
    assert_eq!(ex.on_recv_result(0, false), Received::Close);
}

#[test]
fn the_fields_of_a_miss_go_upstream_with_the_clients_address() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    kit.shared.cache.inflight.head(&cdn_key("/h"));
    assert!(matches!(kit.input(&mut ex, &cdn_get("/h")), Action::Wait));
    let fields = ex.fill_forward(&kit.cx());
    let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"User-Agent"), "{names:?}");
    assert!(!names.iter().any(|n| n.eq_ignore_ascii_case("host")));
    let xff = fields.iter().find(|(n, _)| n == "X-Forwarded-For").unwrap();
    assert_eq!(xff.1, b"192.0.2.7");
}

#[test]
fn a_request_to_an_http_origin_is_keyed_by_host_and_target() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    kit.shared.cache.inflight.head(&cdn_key("/p?q=1"));
    let a = kit.input(&mut ex, b"GET /p?q=1 HTTP/1.1\r\nHost: CDN.test\r\n\r\n");
    assert!(matches!(a, Action::Wait));
    assert_eq!(ex.key, cdn_key("/p?q=1"), "host lower-cased, query kept");
    assert_eq!(ex.target, "/p?q=1");
    assert!(matches!(ex.route, Route::Http(0)));
    // The same resource however its authority is written: an absolute-form target's replaces
    // Host (RFC 9112 §3.2.2); case, a root dot and the default port are normalised.
    for head in [
        &b"GET http://Cdn.Test.:80/p?q=1 HTTP/1.1\r\nHost: elsewhere\r\n\r\n"[..],
        b"GET /p?q=1#frag HTTP/1.1\r\nHost: cdn.test.:080\r\n\r\n",
    ] {
        let mut ex = kit.exchange();
        assert!(matches!(kit.input(&mut ex, head), Action::Wait), "{head:?}");
        assert_eq!(ex.key, cdn_key("/p?q=1"), "{head:?}");
        assert_eq!(ex.target, "/p?q=1");
    }
    // Another port names another resource (the origin, matched on the host, is the same).
    let mut ex = kit.exchange();
    let _ = kit.input(&mut ex, b"GET /p HTTP/1.1\r\nHost: cdn.test:8080\r\n\r\n");
    assert_eq!(ex.key, "http://cdn.test:8080/p");
}

#[test]
fn a_directory_key_never_meets_an_http_origin_key() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    let _ = kit.input(&mut ex, &get("/cdn.test/p"));
    assert!(matches!(ex.route, Route::Directory));
    assert_eq!(
        (ex.key.as_str(), ex.target.as_str()),
        ("dir:/cdn.test/p", "/cdn.test/p")
    );
    // A Host that is not an authority is refused before any key is made.
    let mut ex = kit.exchange();
    let (head, _, _) = kit.ask(&mut ex, b"GET /p HTTP/1.1\r\nHost: cdn.test/v3\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
}

#[test]
fn a_stale_copy_within_stale_while_revalidate_is_served_and_revalidated_once() {
    let mut kit = Kit::new();
    let key = cdn_key("/swr");
    let body = object(700);
    stale_object(&kit, &key, 6, &body, 60, 0);
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, &cdn_get("/swr"));
    assert!(matches!(a, Action::Send), "served at once: {a:?}");
    let (sent, _) = kit.run(&mut ex, a);
    let (head, rest) = split_response(&sent);
    assert_eq!(
        field(&head, "cache-status"),
        Some("relay; hit; detail=stale-while-revalidate"),
        "{head}"
    );
    assert_eq!(rest, &body[..]);
    assert_eq!(kit.count(&kit.stats.upstream_heads), 1, "one revalidation");
    // With a revalidation already in flight (the test's), a client is served the same way
    // and starts none.
    let key = cdn_key("/swr2");
    stale_object(&kit, &key, 9, &body, 60, 0);
    kit.shared.cache.inflight.head(&key);
    let mut again = kit.exchange();
    let a = kit.input(&mut again, &cdn_get("/swr2"));
    let (sent, next) = kit.run(&mut again, a);
    assert_eq!(split_response(&sent).1, &body[..]);
    assert!(matches!(next, Action::Recv));
    assert_eq!(kit.count(&kit.stats.upstream_heads), 1, "no second fetch");
}

#[test]
fn an_origin_failure_is_answered_from_a_stale_copy_within_stale_if_error() {
    let mut kit = Kit::new();
    let key = cdn_key("/sie");
    let body = object(900);
    stale_object(&kit, &key, 7, &body, 0, 60);
    let (sent, _) = kit.head_fails("/sie");
    let (head, rest) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(
        field(&head, "cache-status"),
        Some("relay; hit; detail=stale-if-error")
    );
    assert_eq!(rest, &body[..]);
}

/// A response served from a stored one carries its `Date` (the origin's) beside an `Age`
/// that counts from it; a 304 carries the fields RFC 9110 §15.4.5 lists that it has (and
/// `Age`), never an empty validator; a 412, made up here, carries relay's own `Date`.
#[test]
fn a_stored_response_s_date_age_and_304_fields() {
    let mut kit = Kit::new();
    let key = cdn_key("/dated");
    let body = object(300);
    let date = relay_cache::ResponseDate::from_unix(784_111_777);
    let meta = ObjectMeta {
        ttl: Duration::from_secs(60),
        initial_age: 30,
        date: Some(date),
        headers: bytes::Bytes::from_static(
            b"cache-control: public\r\nexpires: Sun, 06 Nov 1994 08:50:37 GMT\r\n\
              vary: accept-encoding\r\ncontent-location: /dated.txt\r\nx-other: 1\r\n",
        ),
        ..ObjectMeta::file(body.len() as u64, 5, "\"s\"".into(), String::new())
    };
    kit.shared.cache.meta.insert(&key, meta);
    kit.shared.cache.memory.insert(
        ChunkKey {
            object: Arc::from(key.as_str()),
            version: 5,
            index: 0,
        },
        bytes::Bytes::copy_from_slice(&body),
    );
    let stored = "Sun, 06 Nov 1994 08:49:37 GMT";
    let no_empty = |head: &str| {
        for line in head.lines().skip(1).filter(|l| !l.is_empty()) {
            let (n, v) = line.split_once(':').expect("a field");
            assert!(!v.trim().is_empty(), "{n} empty: {head}");
        }
    };

    let mut ex = kit.exchange();
    let (head, rest, _) = kit.ask(&mut ex, &cdn_get("/dated"));
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(rest, body);
    assert_eq!(field(&head, "date"), Some(stored), "{head}");
    assert_eq!(field(&head, "age"), Some("30"), "{head}");
    assert_eq!(field(&head, "last-modified"), None, "{head}");
    no_empty(&head);

    let mut ex = kit.exchange();
    let (head, rest, _) = kit.ask(
        &mut ex,
        b"GET /dated HTTP/1.1\r\nHost: cdn.test\r\nIf-None-Match: \"s\"\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 304 "), "{head}");
    assert!(rest.is_empty());
    for (name, value) in [
        ("date", stored),
        ("age", "30"),
        ("etag", "\"s\""),
        ("cache-control", "public"),
        ("expires", "Sun, 06 Nov 1994 08:50:37 GMT"),
        ("vary", "accept-encoding"),
        ("content-location", "/dated.txt"),
    ] {
        assert_eq!(field(&head, name), Some(value), "{name}: {head}");
    }
    for name in ["last-modified", "x-other", "content-type", "content-length"] {
        assert_eq!(field(&head, name), None, "{name}: {head}");
    }
    no_empty(&head);

    let mut ex = kit.exchange();
    let (head, _, _) = kit.ask(
        &mut ex,
        b"GET /dated HTTP/1.1\r\nHost: cdn.test\r\nIf-Match: \"other\"\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 412 "), "{head}");
    let now = String::from_utf8(kit.date.get().to_vec()).unwrap();
    assert_eq!(field(&head, "date"), Some(now.as_str()), "{head}");
    assert_eq!(field(&head, "x-other"), None, "{head}");
    no_empty(&head);
}

/// A body from one answer whose chunks the memory tier let go while its client waited on a
/// head fetch (a 304 renewed the description of a body no fetch holds any more): no byte
/// left yet, so the response starts over from the lookup and waits on the fetch that
/// brings the body whole again; its client gets that body, never a 502. A second loss in
/// the same response is a 502.
#[test]
fn a_body_from_one_answer_lost_before_its_first_byte_starts_over_once() {
    let mut kit = Kit::new();
    let key = cdn_key("/live");
    let whole = |version: u64| {
        let mut m = ObjectMeta::file(9000, version, String::new(), String::new());
        m.ranged = false;
        Arc::new(m)
    };
    for lost_twice in [false, true] {
        kit.shared.cache.inflight.head(&key);
        let mut ex = kit.exchange();
        assert!(matches!(
            kit.input(&mut ex, &cdn_get("/live")),
            Action::Wait
        ));
        // The test's second fetch, made before the exchange wakes: the one it starts over
        // on (a new fetch it would start goes to no origin).
        let finish = |kit: &mut Kit, version, first| {
            kit.shared.cache.inflight.finish_head(
                &key,
                Ok(whole(version)),
                first,
                &kit.shared.wake,
            );
        };
        finish(&mut kit, 7, None);
        kit.shared.cache.inflight.head(&key);
        let (sent, next) = kit.woken(&mut ex);
        assert!(
            sent.is_empty(),
            "nothing went out: {:?}",
            String::from_utf8_lossy(&sent)
        );
        assert!(matches!(next, Action::Wait), "{next:?}");
        assert_eq!(
            ex.state_name(),
            "awaiting-head",
            "started over on the new fetch"
        );
        let body = object(9000);
        let (fill, mut writer) = Fill::new(
            ChunkKey {
                object: Arc::from(key.as_str()),
                version: 8,
                index: 0,
            },
            9000,
        );
        let first = match lost_twice {
            false => {
                writer.append(&body).unwrap();
                writer.finish().unwrap();
                Some(fill)
            }
            true => None,
        };
        finish(&mut kit, 8, first);
        let (sent, next) = kit.woken(&mut ex);
        let (head, rest) = split_response(&sent);
        match lost_twice {
            false => {
                assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
                assert_eq!(rest, &body[..], "the new answer's body, whole");
                assert!(matches!(next, Action::Recv), "{next:?}");
            }
            true => {
                assert!(head.starts_with("HTTP/1.1 502 "), "{head}");
                assert!(matches!(next, Action::Close), "{next:?}");
            }
        }
    }
    assert_eq!(kit.count(&kit.stats.started_over), 2);
}
