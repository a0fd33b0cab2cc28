//! relay in front of an HTTP origin the test owns: chunked Range fetches, coalescing,
//! origins that misbehave, failures, and never a wrong body passed off as whole.

use relay_tests::client::Client;
use relay_tests::origin::{Object, Origin};
use relay_tests::{Relay, pattern};
use std::sync::atomic::Ordering;
use std::time::Duration;

const CHUNK: usize = 64 * 1024;

fn proxy_config(origin: &Origin, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[cache]\nchunk_size = {CHUNK}\n\
         memory_bytes = 67108864\n\n[origin]\n\n[[origin.http]]\nurl = \"{}\"\n\
         first_byte_timeout_ms = 2000\nidle_timeout_ms = 2000\nretries = 1\n{extra}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        origin.url()
    )
}

/// A relay before `origin` (`extra` in its table) with chunks of `chunk` bytes, a memory tier
/// of `memory` bytes and a read-ahead of `read_ahead` bytes.
fn small_tier_relay(
    origin: &Origin,
    extra: &str,
    chunk: usize,
    memory: usize,
    read_ahead: usize,
) -> Relay {
    Relay::start(
        &proxy_config(origin, extra)
            .replace(
                &format!("chunk_size = {CHUNK}"),
                &format!("chunk_size = {chunk}"),
            )
            .replace(
                "memory_bytes = 67108864",
                &format!("memory_bytes = {memory}"),
            )
            .replace(
                "[origin]\n",
                &format!("[origin]\nread_ahead_bytes = {read_ahead}\n"),
            ),
    )
}

fn get(relay: &Relay, path: &str) -> relay_tests::client::Response {
    Client::connect(relay.addr).get(path)
}

#[test]
fn chunks_are_fetched_once_and_then_served_from_memory() {
    let origin = Origin::start();
    let body = pattern(5 * CHUNK + 777, 11);
    origin.put("/v/seg1.ts", Object::new(body.clone(), "v1"));
    let relay = Relay::start(&proxy_config(&origin, ""));
    let r = get(&relay, "/v/seg1.ts");
    assert_eq!(r.status, 200);
    assert!(
        r.body == body,
        "first fetch differs from the origin's bytes"
    );
    assert_eq!(
        r.header("cache-status"),
        Some("relay; fwd=uri-miss; fwd-status=200; stored")
    );
    assert_eq!(r.header("etag"), Some("\"v1\""));
    // One Range request: the head fetch asks for a read-ahead's worth (16 MiB by default),
    // which holds the whole object.
    let ranges = origin.ranges("/v/seg1.ts");
    assert_eq!(ranges, [format!("bytes=0-{}", (16 << 20) - 1)]);
    let r = get(&relay, "/v/seg1.ts");
    assert!(r.body == body);
    assert_eq!(r.header("cache-status"), Some("relay; hit"));
    assert_eq!(origin.count("/v/seg1.ts"), 1);
    // A range across chunk boundaries, from memory.
    let mut c = Client::connect(relay.addr);
    c.send(b"GET /v/seg1.ts HTTP/1.1\r\nHost: t\r\nRange: bytes=65530-200000\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 206);
    assert!(r.body == body[65530..=200000]);
    // 404 passes through; nothing is fetched twice for it being cached.
    assert_eq!(get(&relay, "/v/nope").status, 404);
}

#[test]
fn five_hundred_clients_on_a_cold_object_make_one_fetch() {
    let origin = Origin::start();
    let body = pattern(8 * CHUNK, 12);
    origin.put("/hot.bin", Object::new(body.clone(), "hot"));
    // Slow the origin so all clients arrive while the chunks are still streaming.
    origin.behaviour.piece_bytes.store(8192, Ordering::Relaxed);
    origin.behaviour.piece_delay_ms.store(3, Ordering::Relaxed);
    let relay = Relay::start(&proxy_config(&origin, ""));
    let addr = relay.addr;
    let clients: Vec<_> = (0..500)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.get("/hot.bin")
            })
        })
        .collect();
    let mut ok = 0;
    for t in clients {
        let r = t.join().expect("client thread");
        assert_eq!(r.status, 200);
        assert!(r.body == body, "a client got different bytes");
        ok += 1;
    }
    assert_eq!(ok, 500);
    // (Its 8 chunks in the head fetch's one answer.)
    assert_eq!(
        origin.count("/hot.bin"),
        1,
        "origin fetches: {:?}",
        origin.ranges("/hot.bin")
    );
}

#[test]
fn clients_stream_bytes_while_the_chunk_fills() {
    let origin = Origin::start();
    let body = pattern(CHUNK, 13);
    origin.put("/slow.bin", Object::new(body.clone(), "s"));
    // 64 KiB in 16 pieces, 100 ms apart: 1.6 s for the whole chunk.
    origin.behaviour.piece_bytes.store(4096, Ordering::Relaxed);
    origin
        .behaviour
        .piece_delay_ms
        .store(100, Ordering::Relaxed);
    let relay = Relay::start(&proxy_config(&origin, ""));
    let mut s = std::net::TcpStream::connect(relay.addr).unwrap();
    use std::io::{Read, Write};
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t0 = std::time::Instant::now();
    s.write_all(b"GET /slow.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 1024];
    let n = s.read(&mut first).unwrap();
    let first_byte = t0.elapsed();
    assert!(n > 0);
    assert!(
        first_byte < Duration::from_millis(800),
        "first bytes after {first_byte:?}: the client waited for the whole chunk"
    );
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
}

#[test]
fn an_origin_that_ignores_range_is_cut_into_chunks_correctly() {
    let origin = Origin::start();
    origin.behaviour.ignore_range.store(true, Ordering::Relaxed);
    let body = pattern(3 * CHUNK + 5, 14);
    origin.put("/whole.bin", Object::new(body.clone(), "w"));
    let relay = Relay::start(&proxy_config(&origin, ""));
    let r = get(&relay, "/whole.bin");
    assert_eq!(r.status, 200);
    assert!(r.body == body);
    let r = get(&relay, "/whole.bin");
    assert!(r.body == body);
    assert_eq!(r.header("cache-status"), Some("relay; hit"));
    let mut c = Client::connect(relay.addr);
    c.send(b"GET /whole.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=100000-100009\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 206);
    assert!(r.body == body[100000..100010]);
}

#[test]
fn a_changed_object_is_never_stitched_from_two_versions() {
    let origin = Origin::start();
    let v1 = pattern(4 * CHUNK, 15);
    origin.put("/obj", Object::new(v1.clone(), "one"));
    let relay = Relay::start(&proxy_config(&origin, ""));
    // Fetch only the first chunk, then change the object at the origin.
    let mut c = Client::connect(relay.addr);
    c.send(b"GET /obj HTTP/1.1\r\nHost: t\r\nRange: bytes=0-99\r\n\r\n");
    assert!(c.read_response(false).unwrap().body == v1[..100]);
    let v2 = pattern(4 * CHUNK, 16);
    origin.put("/obj", Object::new(v2.clone(), "two"));
    // The full object now needs chunks 1..3 from a different version: the client must see
    // a cut connection, never v1's first chunk followed by v2's bytes as a whole body.
    let mut c = Client::connect(relay.addr);
    c.send(b"GET /obj HTTP/1.1\r\nHost: t\r\n\r\n");
    match c.read_response(false) {
        None => {} // cut: correct
        Some(r) => assert!(
            r.body == v1 || r.body == v2,
            "a body mixing two versions was passed off as whole"
        ),
    }
    // The next request sees the new version whole (the old description was dropped).
    let mut ok = false;
    for _ in 0..5 {
        let r = get(&relay, "/obj");
        if r.status == 200 && r.body == v2 {
            ok = true;
            break;
        }
    }
    assert!(ok, "the new version was never served whole");
}

#[test]
fn a_cut_upstream_body_is_never_presented_as_complete_nor_stored() {
    let origin = Origin::start();
    let body = pattern(2 * CHUNK, 17);
    origin.put("/cut.bin", Object::new(body.clone(), "c"));
    origin
        .behaviour
        .truncate_after
        .store(1000, Ordering::Relaxed);
    let relay = Relay::start(&proxy_config(&origin, ""));
    let mut c = Client::connect(relay.addr);
    c.send(b"GET /cut.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    // Either an error status, or a response cut short (None): never 200 with a full body.
    if let Some(r) = c.read_response(false) {
        assert_ne!(
            r.status, 200,
            "a truncated upstream body was passed off as whole"
        );
    }
    origin.behaviour.truncate_after.store(0, Ordering::Relaxed);
    let r = get(&relay, "/cut.bin");
    assert_eq!(r.status, 200);
    assert!(r.body == body);
    assert_eq!(
        r.header("cache-status"),
        Some("relay; fwd=uri-miss; fwd-status=200; stored")
    );
}

#[test]
fn origin_down_is_502_and_too_slow_is_504() {
    // Nothing listens on this port (bound then dropped).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n[origin]\n[[origin.http]]\n\
         url = \"http://{dead_addr}\"\nretries = 1\nconnect_timeout_ms = 500\n\
         [admin]\nenabled = false\n"
    );
    let relay = Relay::start(&cfg);
    assert_eq!(get(&relay, "/x").status, 502);
    drop(relay);

    let origin = Origin::start();
    origin.put("/slow", Object::new(b"late".to_vec(), "l"));
    origin
        .behaviour
        .head_delay_ms
        .store(1500, Ordering::Relaxed);
    let relay = Relay::start(&proxy_config(&origin, "").replace(
        "first_byte_timeout_ms = 2000",
        "first_byte_timeout_ms = 300",
    ));
    let t0 = std::time::Instant::now();
    assert_eq!(get(&relay, "/slow").status, 504);
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn responses_without_freshness_are_relayed_but_not_kept() {
    let origin = Origin::start();
    let mut o = Object::new(b"dynamic".to_vec(), "d");
    o.cache_control = None;
    o.last_modified = None;
    origin.put("/dyn", o);
    let mut o = Object::new(b"secret".to_vec(), "p");
    o.cache_control = Some("private, max-age=60".into());
    origin.put("/private", o);
    let relay = Relay::start(&proxy_config(&origin, ""));
    for path in ["/dyn", "/private"] {
        for _ in 0..2 {
            let r = get(&relay, path);
            assert_eq!(r.status, 200);
            // Not `stored`: nothing was.
            assert_eq!(
                r.header("cache-status"),
                Some("relay; fwd=uri-miss; fwd-status=200"),
                "{path}"
            );
        }
        assert_eq!(origin.count(path), 2, "{path} should be asked each time");
    }
    let empty = Object::new(Vec::new(), "e");
    origin.put("/empty", empty);
    let r = get(&relay, "/empty");
    assert_eq!((r.status, r.body.len()), (200, 0));
}

#[test]
fn origin_headers_and_age_reach_the_client() {
    let origin = Origin::start();
    let mut o = Object::new(b"{\"a\":1}".to_vec(), "j");
    o.extra_headers = vec![
        ("Content-Type".into(), "application/json".into()),
        ("X-Origin-Tag".into(), "blue".into()),
        ("Connection".into(), "X-Hop".into()),
        ("X-Hop".into(), "must-not-pass".into()),
    ];
    origin.put("/a.json", o);
    let relay = Relay::start(&proxy_config(&origin, ""));
    for _ in 0..2 {
        let r = get(&relay, "/a.json");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("x-origin-tag"), Some("blue"));
        assert_eq!(r.header("x-hop"), None, "a hop-by-hop field passed through");
        assert_eq!(r.header("cache-control"), Some("max-age=300"));
        let age: u64 = r.header("age").expect("Age").parse().unwrap();
        assert!(age < 5);
    }
}

#[test]
fn stale_copies_are_revalidated_or_served_as_the_origin_allows() {
    let origin = Origin::start();
    let mut o = Object::new(pattern(3000, 21), "r");
    o.cache_control = Some("max-age=1".into());
    origin.put("/reval", o);
    let mut o = Object::new(pattern(3000, 22), "w");
    o.cache_control = Some("max-age=1, stale-while-revalidate=60".into());
    origin.put("/swr", o);
    let mut o = Object::new(pattern(3000, 23), "e");
    o.cache_control = Some("max-age=1, stale-if-error=60".into());
    origin.put("/sie", o);
    let relay = Relay::start(&proxy_config(&origin, ""));
    for p in ["/reval", "/swr", "/sie"] {
        assert_eq!(
            get(&relay, p).header("cache-status"),
            Some("relay; fwd=uri-miss; fwd-status=200; stored")
        );
        assert_eq!(get(&relay, p).header("cache-status"), Some("relay; hit"));
    }
    std::thread::sleep(Duration::from_millis(2100));
    // Stale, no window: revalidated with If-None-Match; the origin's 304 renews the copy.
    let r = get(&relay, "/reval");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, pattern(3000, 21));
    assert_eq!(
        r.header("cache-status"),
        Some("relay; fwd=stale; fwd-status=304; stored")
    );
    assert_eq!(origin.count("/reval"), 2);
    assert_eq!(
        get(&relay, "/reval").header("cache-status"),
        Some("relay; hit")
    );
    // stale-while-revalidate: served at once, revalidated in the background.
    let r = get(&relay, "/swr");
    assert_eq!(r.body, pattern(3000, 22));
    assert_eq!(
        r.header("cache-status"),
        Some("relay; hit; detail=stale-while-revalidate")
    );
    let mut revalidated = false;
    for _ in 0..50 {
        if origin.count("/swr") == 2 {
            revalidated = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(revalidated, "no background revalidation");
    // stale-if-error: the origin fails (5xx), the stale copy stands in.
    let mut failing = Object::new(Vec::new(), "x");
    failing.status = 503;
    failing.cache_control = None;
    origin.put("/sie", failing);
    let r = get(&relay, "/sie");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, pattern(3000, 23));
    assert_eq!(
        r.header("cache-status"),
        Some("relay; hit; detail=stale-if-error")
    );
    // Without a window, the origin's error is relayed as it answered.
    let mut failing = Object::new(b"down\n".to_vec(), "y");
    failing.status = 503;
    origin.put("/reval", failing);
    std::thread::sleep(Duration::from_millis(1100));
    let r = get(&relay, "/reval");
    assert_eq!((r.status, &r.body[..]), (503, &b"down\n"[..]));
}

#[test]
fn stale_if_error_covers_an_origin_that_is_gone() {
    let origin = Origin::start();
    let mut o = Object::new(pattern(5000, 41), "g");
    o.cache_control = Some("max-age=1, stale-if-error=600".into());
    origin.put("/gone", o);
    let relay = Relay::start(&proxy_config(&origin, ""));
    assert_eq!(get(&relay, "/gone").status, 200);
    // The origin process goes away entirely: connections are refused.
    drop(origin);
    std::thread::sleep(Duration::from_millis(2100));
    let r = get(&relay, "/gone");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, pattern(5000, 41));
    assert_eq!(
        r.header("cache-status"),
        Some("relay; hit; detail=stale-if-error")
    );
}

#[test]
fn other_methods_pass_through_with_bodies_and_invalidate() {
    let origin = Origin::start();
    origin.put("/doc", Object::new(b"version one".to_vec(), "v1"));
    let relay = Relay::start(&proxy_config(&origin, ""));
    let r = get(&relay, "/doc");
    assert_eq!((r.status, &r.body[..]), (200, &b"version one"[..]));
    assert_eq!(
        get(&relay, "/doc").header("cache-status"),
        Some("relay; hit")
    );
    // POST: passed through with its body and unknown headers; the answer streams back.
    let mut c = Client::connect(relay.addr);
    let payload = pattern(100_000, 51);
    let mut req = format!(
        "POST /submit?x=1 HTTP/1.1\r\nHost: test\r\nX-Custom: kept\r\nContent-Length: {}\r\n\r\n",
        payload.len()
    )
    .into_bytes();
    req.extend_from_slice(&payload);
    c.send(&req);
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-method"), Some("POST"));
    assert_eq!(
        r.header("cache-status"),
        Some("relay; fwd=method; fwd-status=200")
    );
    let mut want = b"POST /submit?x=1 100000 bytes: ".to_vec();
    want.extend_from_slice(&payload);
    assert!(r.body == want, "the echoed body differs");
    let logged = origin.ranges("/submit?x=1");
    assert!(logged[0].contains("x-custom=kept"), "{logged:?}");
    // The connection stays usable after a pass-through.
    assert_eq!(c.get("/doc").body, b"version one");
    // PUT replaces the object at the origin and invalidates the cached copy.
    c.send(b"PUT /doc HTTP/1.1\r\nHost: test\r\nContent-Length: 11\r\n\r\nversion two");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    let r = get(&relay, "/doc");
    assert_eq!(r.body, b"version two");
    assert_eq!(
        r.header("cache-status"),
        Some("relay; fwd=uri-miss; fwd-status=200; stored")
    );
}

/// A successful POST invalidates every stored response for its URI (RFC 9111 §4.4), the
/// variants of a response that varies too, not only the one for requests without the
/// fields it varies on.
#[test]
fn an_unsafe_method_invalidates_every_variant_of_its_uri() {
    let origin = Origin::start();
    let greeting = |suffix: &str| {
        let mut o = Object::greeting();
        o.etag = format!("\"lang{}\"", suffix.trim());
        o.cache_control = Some("max-age=600".into());
        for (_, body) in o.by_language.iter_mut() {
            body.extend_from_slice(suffix.as_bytes());
        }
        o.body.extend_from_slice(suffix.as_bytes());
        o
    };
    origin.put("/greet", greeting(" 1"));
    let relay = Relay::start(&proxy_config(&origin, ""));
    let ask = |language: &str| {
        let mut c = Client::connect(relay.addr);
        let r = match language {
            "" => c.get("/greet"),
            l => c.get_with("/greet", &format!("Accept-Language: {l}\r\n")),
        };
        assert_eq!(r.status, 200);
        String::from_utf8_lossy(&r.body).into_owned()
    };
    for _ in 0..2 {
        assert_eq!(
            [ask("fr"), ask("de"), ask("")],
            ["bonjour 1", "hallo 1", "hello (default) 1"]
        );
    }
    let asked = origin.count("/greet");
    // The origin's object changes; a POST to its URI tells relay so.
    origin.put("/greet", greeting(" 2"));
    let mut c = Client::connect(relay.addr);
    c.send(b"POST /greet HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\nhi");
    assert_eq!(c.read_response(false).expect("an answer").status, 200);
    assert_eq!(
        [ask("de"), ask("fr"), ask("")],
        ["hallo 2", "bonjour 2", "hello (default) 2"],
        "a variant outlived the POST"
    );
    assert!(origin.count("/greet") > asked);
}

/// A response that varies, fetched for a client that sends the fields it varies on: that
/// client gets the answer to its own request, its cookie included (stored without it, as
/// `private="Set-Cookie"` says), as a miss; one that may not be stored at all costs one
/// request of the origin per client request, not one per variant asked on the way.
#[test]
fn the_client_that_fetches_a_variant_gets_its_own_answer_once() {
    let origin = Origin::start();
    let mut shared = Object::greeting();
    shared.cache_control = Some("max-age=600, private=\"Set-Cookie\"".into());
    shared
        .extra_headers
        .push(("Set-Cookie".into(), "sid=yours".into()));
    origin.put("/shared", shared);
    let mut private = Object::greeting();
    private.cache_control = Some("private".into());
    origin.put("/private", private);
    let relay = Relay::start(&proxy_config(&origin, ""));
    let mut c = Client::connect(relay.addr);
    let r = c.get_with("/shared", "Accept-Language: fr\r\n");
    assert_eq!(r.body, b"bonjour");
    assert_eq!(
        r.header("set-cookie"),
        Some("sid=yours"),
        "the fetching client's cookie"
    );
    assert_eq!(
        r.header("cache-status"),
        Some("relay; fwd=uri-miss; fwd-status=200; stored")
    );
    let r = c.get_with("/shared", "Accept-Language: fr\r\n");
    assert_eq!(r.header("cache-status"), Some("relay; hit"));
    assert_eq!(r.header("set-cookie"), None, "another's cookie shared");
    for i in 1..=3 {
        let r = c.get_with("/private", "Accept-Language: de\r\n");
        assert_eq!(r.body, b"hallo");
        assert_eq!(
            origin.count("/private"),
            i,
            "origin requests for {i} client requests"
        );
    }
}

/// A loopback listener for an origin a test writes by hand, and its address.
fn raw_origin() -> (std::net::TcpListener, std::net::SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

/// A request's head as a raw origin reads it (byte by byte, to its blank line).
fn read_head(conn: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The client whose request fetched a variant gets that variant whatever the base's
/// answer, asked next without its fields, turns out to be: here a 500 that may not be
/// stored and varies on nothing (it must not reach that client under its variant's fields,
/// nor its variant's cookie reach anyone else).
#[test]
fn the_client_that_fetches_a_variant_gets_it_whatever_the_base_answers() {
    use std::io::Write;
    let (listener, addr) = raw_origin();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(20) {
            let Ok(mut conn) = conn else { return };
            let head = read_head(&mut conn).to_ascii_lowercase();
            let answer: &[u8] = if head.contains("accept-language: fr") {
                b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60, private=\"Set-Cookie\"\r\n\
                  Vary: Accept-Language\r\nSet-Cookie: owner=A\r\nContent-Length: 14\r\n\
                  Connection: close\r\n\r\nFRENCH-VARIANT"
            } else {
                b"HTTP/1.1 500 Internal Server Error\r\nCache-Control: no-store\r\n\
                  Content-Length: 4\r\nConnection: close\r\n\r\nbase"
            };
            let _ = conn.write_all(answer);
        }
    });
    let relay = Relay::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[[origin.http]]\n\
         url = \"http://{addr}\"\nretries = 0\n\n[admin]\nlisten = \"127.0.0.1:0\"\n"
    ));
    let mut c = Client::connect(relay.addr);
    let r = c.get_with("/v", "Accept-Language: fr\r\n");
    assert_eq!((r.status, &r.body[..]), (200, &b"FRENCH-VARIANT"[..]));
    assert_eq!(r.header("set-cookie"), Some("owner=A"));
    // (No base is stored to say the object varies: the next asks again, as the first.)
    let r = c.get_with("/v", "Accept-Language: fr\r\n");
    assert_eq!((r.status, &r.body[..]), (200, &b"FRENCH-VARIANT"[..]));
    let r = c.get("/v");
    assert_eq!((r.status, &r.body[..]), (500, &b"base"[..]));
    assert_eq!(r.header("set-cookie"), None);
}

/// Answers without a length to POSTs, from a raw origin: many at once from one client
/// each hold a small window (not a whole one: 40 of them fit its share of the pass budget),
/// one that ends before its first body byte is a 502, one cut mid-body never looks whole
/// (no last chunk to an HTTP/1.1 client).
#[test]
fn posts_answered_without_a_length_stream_in_small_windows_and_fail_visibly() {
    use std::io::{Read, Write};
    let (listener, addr) = raw_origin();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(200) {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let head = read_head(&mut conn);
                let _ = conn.read(&mut [0u8; 1]); // The one-byte body.
                let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\
                               Connection: close\r\n\r\n";
                let _ = conn.write_all(chunked.as_bytes());
                if head.starts_with("POST /slow") {
                    std::thread::sleep(Duration::from_millis(1500));
                    let _ = conn.write_all(b"b\r\n{\"ok\":true}\r\n0\r\n\r\n");
                } else if head.starts_with("POST /cut") {
                    let _ = conn.write_all(b"5\r\nhello\r\n");
                    std::thread::sleep(Duration::from_millis(100));
                }
                // (/none: the head, then the close.)
            });
        }
    });
    let relay = Relay::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[[origin.http]]\n\
         url = \"http://{addr}\"\nretries = 0\n\n[admin]\nlisten = \"127.0.0.1:0\"\n"
    ));
    let post = |path: &str| {
        let mut c = Client::connect(relay.addr);
        c.send(format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx").as_bytes());
        c.read_response(false)
    };
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let all: Vec<_> = (0..40).map(|_| s.spawn(|| post("/slow"))).collect();
        all.into_iter()
            .map(|t| t.join().expect("client").map_or(0, |r| r.status))
            .collect()
    });
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(post("/none").map(|r| r.status), Some(502));
    assert!(post("/cut").is_none(), "a cut body read as whole");
}

/// A 304 whose Cache-Control says `private` (or `no-store`) replaces the stored one's
/// (RFC 9111 §4.3.4): the stored response is no longer shared; the next client's request
/// goes to the origin, not to a hit.
#[test]
fn a_304_that_says_private_ends_the_sharing() {
    // With a disk tier too: it would rebuild the description with its old terms.
    let dir = relay_tests::TempDir::new("304-private");
    for (cc, disk) in [("private", false), ("no-store", false), ("private", true)] {
        let origin = Origin::start();
        let mut o = Object::new(b"shared for a second".to_vec(), "v1");
        o.cache_control = Some("max-age=600".into());
        origin.put("/doc", o.clone());
        let config = proxy_config(&origin, "");
        let config = match disk {
            true => config.replace(
                "[origin]",
                &format!(
                    "disk_dir = \"{}\"\ndisk_bytes = \"64 MiB\"\ndisk_admission = \"always\"\n\n[origin]",
                    dir.path().join("disk").display()
                ),
            ),
            false => config,
        };
        let relay = Relay::start(&config);
        assert_eq!(get(&relay, "/doc").body, b"shared for a second");
        assert_eq!(
            get(&relay, "/doc").header("cache-status"),
            Some("relay; hit")
        );
        o.cache_control = Some(cc.into());
        origin.put("/doc", o);
        // (Time for the disk tier's write, then a client that asks for revalidation. A write
        // still in flight when its object is dropped lands after: a purge's race too.)
        std::thread::sleep(Duration::from_millis(1500));
        let r = Client::connect(relay.addr).get_with("/doc", "Cache-Control: no-cache\r\n");
        assert_eq!((r.status, &r.body[..]), (200, &b"shared for a second"[..]));
        let asked = origin.count("/doc");
        let r = get(&relay, "/doc");
        assert_eq!(r.status, 200);
        assert_ne!(
            r.header("cache-status"),
            Some("relay; hit"),
            "{cc}: shared still"
        );
        assert_eq!(
            origin.count("/doc"),
            asked + 1,
            "{cc}: not asked of the origin"
        );
    }
}

/// The chunked coding on the wire: `body` cut into chunks of the given sizes (cycled), with
/// a chunk extension on every other chunk, and a trailer field.
fn chunked(body: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut wire = Vec::new();
    let mut at = 0;
    for (i, &n) in sizes.iter().cycle().enumerate() {
        if at == body.len() {
            break;
        }
        let n = n.min(body.len() - at);
        let ext = if i % 2 == 1 { ";name=\"v a l\"" } else { "" };
        wire.extend_from_slice(format!("{n:X}{ext}\r\n").as_bytes());
        wire.extend_from_slice(&body[at..at + n]);
        wire.extend_from_slice(b"\r\n");
        at += n;
    }
    wire.extend_from_slice(b"0\r\nX-Checksum: 1234\r\n\r\n");
    wire
}

/// RFC 9112 §7.1: a recipient must be able to parse the chunked coding. A chunked upload is
/// passed through decoded, with its length (the origin reads it by `Content-Length`),
/// however the bytes are cut on the way in; the request behind it on the connection is
/// found and answered.
#[test]
fn chunked_request_bodies_pass_through_decoded() {
    let origin = Origin::start();
    origin.put("/doc", Object::new(b"cached".to_vec(), "d"));
    let relay = Relay::start(&proxy_config(&origin, ""));
    // (Up to one upload window, 256 KiB, a chunked body is collected and sent with its
    // length; a longer one is streamed on chunked, below.)
    let payload = pattern(200_000, 52);
    let mut wire =
        b"POST /up HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    wire.extend_from_slice(&chunked(&payload, &[1, 4000, 65536, 7, 100_000]));
    wire.extend_from_slice(b"GET /doc HTTP/1.1\r\nHost: test\r\n\r\n");
    let mut want = b"POST /up 200000 bytes: ".to_vec();
    want.extend_from_slice(&payload);
    // All at once, then in pieces small enough to cut every line and CRLF somewhere.
    for piece in [wire.len(), 997, 3] {
        let mut c = Client::connect(relay.addr);
        for part in wire.chunks(piece) {
            c.send(part);
        }
        let r = c.read_response(false).unwrap();
        assert_eq!(r.status, 200, "pieces of {piece}");
        assert!(
            r.body == want,
            "the origin got another body (pieces of {piece})"
        );
        assert_eq!(c.read_response(false).unwrap().body, b"cached");
    }
    let received = origin.received("/up");
    assert_eq!(received.len(), 3);
    for r in &received {
        assert_eq!(r.get("content-length"), Some("200000"));
        assert!(!r.has("transfer-encoding") && !r.has("x-checksum"), "{r:?}");
    }
    // Longer than a window: streamed on chunked as it comes, the same bytes.
    let long = pattern(3 << 20, 51);
    let mut c = Client::connect(relay.addr);
    c.send(b"POST /long HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n");
    for piece in chunked(&long, &[1, 70_000, 65536, 7, 300_000]).chunks(50_000) {
        c.send(piece);
    }
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == [b"POST /long 3145728 bytes: ".as_slice(), &long].concat());
    let received = origin.received("/long");
    assert_eq!(received[0].get("transfer-encoding"), Some("chunked"));
    assert!(!received[0].has("content-length"));
    // An empty chunked body is a body of length 0.
    let mut c = Client::connect(relay.addr);
    c.send(b"POST /empty HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!(
        (r.status, &r.body[..]),
        (200, &b"POST /empty 0 bytes: "[..])
    );
    // A GET with a chunked body is answered from the cache; its body is skipped and the
    // next request found.
    let mut c = Client::connect(relay.addr);
    c.send(b"GET /doc HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /doc HTTP/1.1\r\nHost: test\r\n\r\n");
    for _ in 0..2 {
        let r = c.read_response(false).unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"cached"[..]));
    }
    assert_eq!(origin.count("/doc"), 1);
}

/// Chunked framing that a server behind relay could read another way is refused with 400
/// and the connection closed, before anything reaches the origin; so is a body with
/// codings relay does not decode (501), and one over the pass-through limit (413).
#[test]
fn malformed_or_oversized_chunked_bodies_are_refused() {
    let origin = Origin::start();
    let relay = Relay::start(&proxy_config(&origin, ""));
    let cases: &[(&str, u16)] = &[
        (
            "Transfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n",
            400,
        ),
        ("Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", 400),
        (
            "Transfer-Encoding: chunked\r\n\r\n\r\nabc\r\n0\r\n\r\n",
            400,
        ),
        (
            "Transfer-Encoding: chunked\r\n\r\n3;\x01\r\nabc\r\n0\r\n\r\n",
            400,
        ),
        (
            "Transfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n",
            400,
        ),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        ("Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400),
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
            400,
        ),
        ("Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ];
    for (rest, status) in cases {
        let mut c = Client::connect(relay.addr);
        c.send(
            format!(
                "POST /up HTTP/1.1\r\nHost: test\r\n{rest}GET /x HTTP/1.1\r\nHost: test\r\n\r\n"
            )
            .as_bytes(),
        );
        let r = c.read_response(false).unwrap();
        assert_eq!(r.status, *status, "{rest:?}");
        assert!(c.is_closed(), "{rest:?}: the connection stays open");
    }
    assert!(
        origin.received("/up").is_empty(),
        "a refused body reached the origin"
    );
    // 64 MiB is the most relay collects for one pass-through. The client goes on sending a
    // little past it before it reads the answer: relay reads and drops that (a lingering
    // close), so the client is neither stuck on a closed window nor reset before it read
    // the 413; then the connection ends.
    let mut c = Client::connect(relay.addr);
    c.send(b"POST /up HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n");
    let block = [b"100000\r\n".as_slice(), &vec![b'z'; 1 << 20], b"\r\n"].concat();
    for _ in 0..66 {
        c.send(&block);
    }
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 413);
    assert!(c.is_closed());
    // The same with a length refused at the head: 8 MiB sent anyway, then the answer.
    let mut c = Client::connect(relay.addr);
    c.send(b"POST /up HTTP/1.1\r\nHost: test\r\nContent-Length: 104857600\r\n\r\n");
    for _ in 0..8 {
        c.send(&block);
    }
    assert_eq!(c.read_response(false).unwrap().status, 413);
    assert!(c.is_closed());
    assert!(origin.received("/up").is_empty());
}

/// Waits (bounded: 2 s) until the pass-through memory gauge satisfies `ok`.
fn wait_held(relay: &Relay, ok: impl Fn(u64) -> bool) {
    let admin = relay.admin.expect("admin");
    let mut held = 0;
    for _ in 0..200 {
        let text = String::from_utf8(Client::connect(admin).get("/metrics").body).unwrap();
        held = text
            .lines()
            .find_map(|l| l.strip_prefix("relay_pass_buffer_bytes ")?.parse().ok())
            .expect("relay_pass_buffer_bytes");
        if ok(held) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("pass-through memory stayed at {held} bytes");
}

/// Request bodies held for pass-throughs count against `origin.pass_buffer_bytes`, like the
/// response windows. A body longer than one upload window (256 KiB) is streamed to the
/// origin as it comes and holds one window however long it is (one longer than the whole
/// budget passes); a shorter one is collected whole first. When the budget has no room
/// for a window, or for a collected body, the request is 503 before any of it is read, and
/// a chunked one as soon as it outgrows the room; the room comes back once a body has gone
/// to the origin or its client has left. (All from one address: the per-client share is
/// off here, `fair.rs` tests it.)
#[test]
fn request_bodies_are_held_within_the_pass_through_budget() {
    const WINDOW: u64 = (256 << 10) + 128;
    let origin = Origin::start();
    let config = proxy_config(&origin, "").replace(
        "[origin]\n",
        "[origin]\npass_buffer_bytes = \"3 MiB\"\npass_buffer_per_client = 0\n",
    );
    let relay = Relay::start(&config);
    let big = pattern(2 << 20, 53);
    let head =
        |len: usize| format!("POST /up HTTP/1.1\r\nHost: test\r\nContent-Length: {len}\r\n\r\n");
    let echo = |body: &[u8]| [format!("POST /up {} bytes: ", body.len()).as_bytes(), body].concat();
    // Longer than the whole budget: streamed through one window.
    let huge = pattern(4 << 20, 52);
    let mut c = Client::connect(relay.addr);
    c.send(&[head(huge.len()).as_bytes(), &huge].concat());
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == echo(&huge), "the streamed body arrived otherwise");
    // Eleven clients send half of their 2 MiB bodies and stall: a window each stays
    // reserved, and the budget has no room for a twelfth. (PUTs: the origin answers
    // "stored", whose window fits where the echo of 2 MiB would not.)
    let put = format!(
        "PUT /up HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    let mut stalled: Vec<Client> = (0..11)
        .map(|_| {
            let mut c = Client::connect(relay.addr);
            c.send(put.as_bytes());
            c.send(&big[..1 << 20]);
            c
        })
        .collect();
    wait_held(&relay, |held| held == 11 * WINDOW);
    let mut c = Client::connect(relay.addr);
    c.send(head(big.len()).as_bytes());
    assert_eq!(c.read_response(false).unwrap().status, 503);
    // A chunked body is collected until it outgrows the room left.
    let mut c = Client::connect(relay.addr);
    c.send(b"POST /up HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n");
    for piece in chunked(&big, &[256 << 10]).chunks(64 << 10) {
        if c.try_send(piece).is_err() {
            break;
        }
    }
    assert_eq!(c.read_response(false).unwrap().status, 503);
    // Four stalled clients leave: their windows come back at once. The others finish one
    // by one: each body reaches the origin whole, and its room is back for its answer's
    // window (896 KiB and "stored"); a small body then fits too (collected, 100 KB).
    drop(stalled.drain(..4));
    wait_held(&relay, |held| held == 7 * WINDOW);
    for (i, s) in stalled.iter_mut().enumerate() {
        s.send(&big[1 << 20..]);
        let r = s.read_response(false).unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"stored"[..]), "upload {i}");
        if i == 0 {
            let small = pattern(100_000, 54);
            let mut c = Client::connect(relay.addr);
            c.send(&[head(small.len()).as_bytes(), &small].concat());
            assert!(c.read_response(false).unwrap().body == echo(&small));
        }
    }
    wait_held(&relay, |held| held == 0);
    // A client that leaves halfway gives its room back too.
    let mut gone = Client::connect(relay.addr);
    gone.send(head(big.len()).as_bytes());
    gone.send(&big[..1000]);
    wait_held(&relay, |held| held >= WINDOW);
    drop(gone);
    wait_held(&relay, |held| held == 0);
    let mut c = Client::connect(relay.addr);
    c.send(&[head(big.len()).as_bytes(), &big].concat());
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == echo(&big));
}

/// RFC 9110 §10.1.1: a client that sends `Expect: 100-continue` may wait for `100 Continue`
/// before it sends its body. relay sends it when it is about to read a pass-through's body,
/// so an upload is not held up by the client's wait, and closes the connection after
/// answering a request whose body it did not read. Other expectations are 417.
#[test]
fn expect_100_continue_is_answered_before_the_body_is_read() {
    let origin = Origin::start();
    origin.put("/doc", Object::new(b"cached".to_vec(), "d"));
    let relay = Relay::start(&proxy_config(&origin, ""));
    let payload = pattern(50_000, 55);
    let mut c = Client::connect(relay.addr);
    c.send(
        format!(
            "POST /up HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            payload.len()
        )
        .as_bytes(),
    );
    let interim = c.read_response(false).unwrap();
    assert_eq!(interim.status, 100);
    c.send(&payload);
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == [b"POST /up 50000 bytes: ".as_slice(), &payload].concat());
    // Chunked, too; and the connection goes on.
    c.send(b"POST /up HTTP/1.1\r\nHost: test\r\nExpect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(c.read_response(false).unwrap().status, 100);
    c.send(b"3\r\nabc\r\n0\r\n\r\n");
    assert_eq!(
        c.read_response(false).unwrap().body,
        b"POST /up 3 bytes: abc"
    );
    assert_eq!(c.get("/doc").body, b"cached");
    // curl waits for the 100 (here up to 30 s, where a 10 s limit would cut it off).
    let dir = relay_tests::TempDir::new("expect");
    let big = pattern(2 << 20, 56);
    let file = dir.write("big", &big);
    let (code, out, err) = relay_tests::curl(&[
        "--max-time",
        "10",
        "--expect100-timeout",
        "30",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        &format!("@{}", file.display()),
        &relay.url("/up"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out == [b"POST /up 2097152 bytes: ".as_slice(), &big].concat());
    // A cached GET that announces a body it waits to send: answered, then closed.
    let mut c = Client::connect(relay.addr);
    c.send(b"GET /doc HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"cached"[..]));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed());
    let mut c = Client::connect(relay.addr);
    c.send(
        b"POST /up HTTP/1.1\r\nHost: test\r\nExpect: something-else\r\nContent-Length: 5\r\n\r\n",
    );
    assert_eq!(c.read_response(false).unwrap().status, 417);
    assert!(c.is_closed());
}

/// A client that half-closes once its response has begun gets the whole body, even while
/// relay waits on the origin for the rest of it; one that leaves before its answer began
/// lets the fetch go (it is taken for gone, as nginx does).
#[test]
fn a_half_close_during_a_fill_still_gets_the_whole_body() {
    use std::io::{Read, Write};
    let origin = Origin::start();
    let body = pattern(4 * CHUNK, 57);
    origin.put("/slow", Object::new(body.clone(), "s"));
    origin
        .behaviour
        .piece_bytes
        .store(16 << 10, Ordering::Relaxed);
    origin.behaviour.piece_delay_ms.store(20, Ordering::Relaxed);
    let relay = Relay::start(&proxy_config(&origin, ""));
    let mut s = std::net::TcpStream::connect(relay.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut got = vec![0u8; 4096];
    let n = s.read(&mut got).unwrap();
    got.truncate(n);
    s.shutdown(std::net::Shutdown::Write).unwrap();
    s.read_to_end(&mut got).unwrap();
    assert!(
        got.ends_with(&body),
        "the body was cut after the half-close"
    );
}

/// Two waits in a row each have a deadline of their own: the origin's head, then the
/// first bytes of the body (the client's response head goes out with them). An origin that
/// takes most of the deadline for each still gets its answer through.
#[test]
fn each_wait_on_the_origin_has_its_own_deadline() {
    let origin = Origin::start();
    origin.put("/slow2", Object::new(b"at last".to_vec(), "s2"));
    origin.behaviour.head_delay_ms.store(700, Ordering::Relaxed);
    origin.behaviour.body_delay_ms.store(700, Ordering::Relaxed);
    let config = proxy_config(&origin, "")
        .replace("workers = 2", "workers = 2\nidle_timeout_ms = 1100")
        .replace(
            "first_byte_timeout_ms = 2000",
            "first_byte_timeout_ms = 10000",
        )
        .replace("idle_timeout_ms = 2000", "idle_timeout_ms = 10000");
    let relay = Relay::start(&config);
    let r = Client::connect(relay.addr).get("/slow2");
    assert_eq!((r.status, &r.body[..]), (200, &b"at last"[..]));
}

/// A client waiting on an origin that does not answer is answered 504 at its send deadline
/// (`server.idle_timeout_ms`), although every tick looks at it again: the deadline is set
/// when the wait starts, not each time the wait is checked.
#[test]
fn a_wait_on_a_silent_origin_ends_at_its_deadline() {
    let origin = Origin::start();
    origin.put("/late", Object::new(b"late".to_vec(), "l"));
    origin
        .behaviour
        .head_delay_ms
        .store(6000, Ordering::Relaxed);
    let config = proxy_config(&origin, "")
        .replace("workers = 2", "workers = 2\nidle_timeout_ms = 800")
        .replace(
            "first_byte_timeout_ms = 2000",
            "first_byte_timeout_ms = 10000",
        );
    let relay = Relay::start(&config);
    let started = std::time::Instant::now();
    let mut c = Client::connect(relay.addr);
    c.send(b"GET /late HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.read_response(false).expect("an answer");
    let waited = started.elapsed();
    assert_eq!(r.status, 504, "after {waited:?}");
    assert!(
        waited < Duration::from_millis(2500),
        "answered after {waited:?}, past the 800 ms deadline"
    );
}

#[test]
fn purge_by_key_and_prefix_hard_and_soft_with_a_token() {
    let origin = Origin::start();
    for p in ["/v/a", "/v/b", "/w/c"] {
        origin.put(p, Object::new(pattern(2000, 60), "p"));
    }
    let token = "0123456789abcdef-token";
    let cfg = proxy_config(&origin, "").replace(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\npurge_token = \"{token}\"\n"),
    );
    let relay = Relay::start(&cfg);
    let admin = relay.admin.expect("admin");
    for p in ["/v/a", "/v/b", "/w/c"] {
        get(&relay, p);
        assert_eq!(get(&relay, p).header("cache-status"), Some("relay; hit"));
    }
    let purge = |query: &str, tok: &str| {
        let mut c = Client::connect(admin);
        c.send(
            format!(
                "POST /purge?{query} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {tok}\r\n\
                 Content-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        );
        c.read_response(false).unwrap()
    };
    assert_eq!(
        purge("key=http://test/v/a", "wrong-token-wrong-token").status,
        401
    );
    assert_eq!(
        get(&relay, "/v/a").header("cache-status"),
        Some("relay; hit")
    );
    // Hard purge of one key: the next request goes to the origin.
    let r = purge("key=http%3A%2F%2Ftest%2Fv%2Fa", token);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        get(&relay, "/v/a").header("cache-status"),
        Some("relay; fwd=uri-miss; fwd-status=200; stored")
    );
    // Soft purge of a prefix: revalidated (304), chunks kept.
    let r = purge("prefix=http://test/v/&mode=soft", token);
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("\"mode\":\"soft\""));
    assert_eq!(
        get(&relay, "/v/b").header("cache-status"),
        Some("relay; fwd=stale; fwd-status=304; stored")
    );
    // Other prefixes are untouched.
    assert_eq!(
        get(&relay, "/w/c").header("cache-status"),
        Some("relay; hit")
    );
    // Hard purge of a prefix.
    assert_eq!(purge("prefix=http://test/w/", token).status, 200);
    assert_eq!(
        get(&relay, "/w/c").header("cache-status"),
        Some("relay; fwd=uri-miss; fwd-status=200; stored")
    );
    assert_eq!(purge("bogus=1", token).status, 400);
    // A key in no form relay writes (here the old host + path) is refused, not a no-op.
    let r = purge("key=test/w/c", token);
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("http://host/path"));
}

#[test]
fn vary_keeps_one_variant_per_request_value() {
    let origin = Origin::start();
    origin.put("/greet", Object::greeting());
    let relay = Relay::start(&proxy_config(&origin, ""));
    let fetch = |lang: Option<&str>| {
        let extra = lang.map_or(String::new(), |l| format!("Accept-Language: {l}\r\n"));
        Client::connect(relay.addr).get_with("/greet", &extra)
    };
    // A first client asking in French: the base fetch comes back varying, and its variant is
    // fetched with its value.
    let r = fetch(Some("fr"));
    assert_eq!(r.body, b"bonjour");
    assert_eq!(r.header("vary"), Some("Accept-Language"));
    assert_eq!(fetch(None).body, b"hello (default)");
    // The base is stored, this variant is not.
    let r = fetch(Some("de"));
    assert_eq!(r.body, b"hallo");
    assert_eq!(
        r.header("cache-status"),
        Some("relay; fwd=vary-miss; fwd-status=200; stored")
    );
    let fetched = origin.count("/greet");
    for (lang, want) in [
        (Some("fr"), &b"bonjour"[..]),
        (None, &b"hello (default)"[..]),
        (Some("de"), &b"hallo"[..]),
    ] {
        let r = fetch(lang);
        assert_eq!(r.body, want, "{lang:?}");
        assert_eq!(r.header("cache-status"), Some("relay; hit"), "{lang:?}");
    }
    assert_eq!(
        origin.count("/greet"),
        fetched,
        "a stored variant was fetched again"
    );
    assert_eq!(fetched, 3, "one fetch per variant");
}

/// An object with a weak validator only: its body comes from one answer, and no chunk of
/// it can be fetched alone.
fn weak(body: &[u8]) -> Object {
    let mut o = Object::new(body.to_vec(), "w");
    o.etag = "W/\"w\"".into();
    o.last_modified = None;
    o
}

/// The origin's answers come in `bytes` pieces, `delay_ms` apart.
fn in_pieces(origin: &Origin, bytes: u64, delay_ms: u64) {
    origin.behaviour.piece_bytes.store(bytes, Ordering::Relaxed);
    origin
        .behaviour
        .piece_delay_ms
        .store(delay_ms, Ordering::Relaxed);
}

/// A range deep into a cold object whose body comes from one answer (a weak validator, so
/// no chunk of it can be fetched alone), while that answer is still on its way: the client
/// waits for its chunk to come rather than being told the object changed (a 502).
#[test]
fn a_range_ahead_of_a_body_from_one_answer_waits_for_it() {
    let origin = Origin::start();
    let body = pattern(8 * CHUNK + 5, 31);
    origin.put("/weak.bin", weak(&body));
    // The answer comes in 16 KiB pieces, 5 ms apart: chunk 6 about half a second in.
    in_pieces(&origin, 16 << 10, 5);
    let relay = Relay::start(&proxy_config(&origin, ""));
    let from = 6 * CHUNK + 100;
    let got = relay_tests::fetch(
        &relay.url("/weak.bin"),
        &["-r", &format!("{from}-{}", from + 9)],
    );
    assert_eq!(got.status, 206, "{}", got.head);
    assert!(got.body == body[from..from + 10]);
}

/// A body from one answer that goes stale at once, through a memory tier smaller than it:
/// clients that revalidate it (304) while the first one's fetch still brings it read the
/// chunks the tier let go from that fetch, which keeps them for its readers, and wait for
/// the rest from it: each gets the body whole (they were cut as if the object changed).
#[test]
fn clients_revalidated_while_a_body_from_one_answer_arrives_get_it_whole() {
    let origin = Origin::start();
    let body = pattern(48 * CHUNK + 5, 32);
    let mut stale = weak(&body);
    stale.cache_control = Some("max-age=0".into());
    origin.put("/stale.bin", stale);
    in_pieces(&origin, 32 << 10, 3);
    // A tier of sixteen chunks.
    let relay = Relay::start(
        &proxy_config(&origin, "").replace("memory_bytes = 67108864", "memory_bytes = 1048576"),
    );
    let url = relay.url("/stale.bin");
    let first = {
        let url = url.clone();
        std::thread::spawn(move || relay_tests::fetch(&url, &["--limit-rate", "2M"]))
    };
    std::thread::sleep(Duration::from_millis(60));
    let later: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || relay_tests::fetch(&url, &["--limit-rate", "3M"]))
        })
        .collect();
    let first = first.join().expect("first client");
    assert!(first.status == 200 && first.body == body, "{}", first.head);
    for (i, c) in later.into_iter().enumerate() {
        let got = c.join().expect("client");
        assert!(
            got.status == 200 && got.body == body,
            "client {i}: {} of {} bytes ({})",
            got.body.len(),
            body.len(),
            got.head
        );
    }
}

/// Whole fetches wait for their clients holding a fetch slot each: at most half of an
/// origin's `max_connections` do. Two objects an origin ignores Range for, described and
/// their chunks then pushed out of a 1 MiB tier by others; two slow clients read them with
/// two fetch slots: one reads through a whole fetch, the other's fetches pause out as
/// before, and a third client's cold miss of another object meanwhile gets a slot at once
/// rather than waiting out the first-byte timeout for one (a 504).
#[test]
fn whole_fetches_leave_half_the_fetch_slots_to_other_misses() {
    let origin = Origin::start();
    origin.behaviour.ignore_range.store(true, Ordering::Relaxed);
    let body = pattern(20 * CHUNK + 5, 35);
    for name in ["/a.bin", "/b.bin"] {
        origin.put(name, Object::new(body.clone(), name));
    }
    for i in 0..4 {
        origin.put(
            &format!("/fill{i}.bin"),
            Object::new(pattern(8 * CHUNK, i), "f"),
        );
    }
    origin.put("/c.bin", Object::new(pattern(3 * CHUNK, 36), "c"));
    let relay = small_tier_relay(&origin, "max_connections = 2\n", CHUNK, 1 << 20, 2 * CHUNK);
    // Described, known to be answered whole, and their chunks pushed out of memory.
    for path in [
        "/a.bin",
        "/b.bin",
        "/fill0.bin",
        "/fill1.bin",
        "/fill2.bin",
        "/fill3.bin",
    ] {
        assert_eq!(get(&relay, path).status, 200, "{path}");
    }
    let (most, c, took) = std::thread::scope(|s| {
        let slow: Vec<_> = ["/a.bin", "/b.bin"]
            .into_iter()
            .map(|path| {
                let relay = &relay;
                s.spawn(move || Client::connect_paced(relay.addr, 200_000).get(path))
            })
            .collect();
        let mut most = 0.0f64;
        let until = std::time::Instant::now() + Duration::from_secs(1);
        while std::time::Instant::now() < until {
            most = most.max(relay.metric("relay_upstream_whole_fetches").unwrap_or(0.0));
            std::thread::sleep(Duration::from_millis(20));
        }
        let asked = std::time::Instant::now();
        let c = get(&relay, "/c.bin");
        let took = asked.elapsed();
        for (client, path) in slow.into_iter().zip(["/a.bin", "/b.bin"]) {
            let got = client.join().unwrap();
            assert_eq!(got.status, 200, "{path}");
            assert!(got.body == body, "{path}: {} bytes", got.body.len());
        }
        (most, c, took)
    });
    assert_eq!(c.status, 200);
    assert!(c.body == pattern(3 * CHUNK, 36));
    eprintln!(
        "whole fetches at most {most}; a cold miss beside them took {took:?}; {} and {} \
         answers of the two objects",
        origin.count("/a.bin"),
        origin.count("/b.bin")
    );
    assert_eq!(most, 1.0, "one whole fetch of two slots");
    assert!(
        took < Duration::from_millis(1500),
        "{took:?}: waited for a slot"
    );
    assert_eq!(relay.metric("relay_upstream_whole_fetches"), Some(0.0));
}

/// A whole answer that breaks off after filling chunks goes on as one new whole answer from
/// where it stopped, not one answer from the object's start per chunk: an object an origin
/// ignores Range for, its chunks pushed out of the tier, read by a slow client while the
/// origin cuts its first answer at 5 of 12 MiB. The client gets every byte; the origin is
/// asked twice for it (the cut answer and the one going on).
#[test]
fn a_whole_answer_that_breaks_off_goes_on_in_one_more() {
    const MIB: usize = 1 << 20;
    let origin = Origin::start();
    origin.behaviour.ignore_range.store(true, Ordering::Relaxed);
    let body = pattern(12 * MIB + 5, 38);
    origin.put("/big.bin", Object::new(body.clone(), "big"));
    for i in 0..3 {
        origin.put(
            &format!("/fill{i}.bin"),
            Object::new(pattern(2 * MIB, i), "f"),
        );
    }
    let relay = small_tier_relay(&origin, "", MIB, 2 * MIB, 2 * MIB);
    // Answered whole (noted), then its chunks pushed out of the tier.
    for path in ["/big.bin", "/fill0.bin", "/fill1.bin", "/fill2.bin"] {
        assert_eq!(get(&relay, path).status, 200, "{path}");
    }
    let before = origin.count("/big.bin");
    origin
        .behaviour
        .truncate_once_after
        .store(5 * MIB as u64, Ordering::Relaxed);
    let got = Client::connect_paced(relay.addr, 3_000_000).get("/big.bin");
    assert_eq!(got.status, 200);
    assert!(
        got.body == body,
        "{} of {} bytes",
        got.body.len(),
        body.len()
    );
    let answers = origin.count("/big.bin") - before;
    eprintln!("{answers} answers for a slow client, the first cut at 5 MiB");
    assert_eq!(
        origin.behaviour.truncate_once_after.load(Ordering::Relaxed),
        0,
        "no answer was cut: nothing tested"
    );
    assert!(answers <= 2, "{answers} answers");
}

/// An object an origin answered whole is forgotten as one it ignores Range for as soon as
/// the origin answers a range of it: a slow client afterwards has ordinary streamed fetches
/// (no whole fetch holds a slot waiting for it) and the bytes it asks for.
#[test]
fn an_origin_that_honours_range_again_gets_ordinary_fetches() {
    let origin = Origin::start();
    origin.behaviour.ignore_range.store(true, Ordering::Relaxed);
    let body = pattern(20 * CHUNK + 5, 37);
    origin.put("/v.bin", Object::new(body.clone(), "v"));
    for i in 0..4 {
        origin.put(
            &format!("/fill{i}.bin"),
            Object::new(pattern(8 * CHUNK, i), "f"),
        );
    }
    let relay = small_tier_relay(&origin, "", CHUNK, 1 << 20, 2 * CHUNK);
    // Answered whole (noted), then its chunks pushed out of the tier.
    for path in [
        "/v.bin",
        "/fill0.bin",
        "/fill1.bin",
        "/fill2.bin",
        "/fill3.bin",
    ] {
        assert_eq!(get(&relay, path).status, 200, "{path}");
    }
    origin
        .behaviour
        .ignore_range
        .store(false, Ordering::Relaxed);
    let ignored = relay.metric("relay_upstream_range_ignored_total");
    let (got, most) = std::thread::scope(|s| {
        let client = s.spawn(|| Client::connect_paced(relay.addr, 200_000).get("/v.bin"));
        let mut most = 0.0f64;
        while !client.is_finished() {
            most = most.max(relay.metric("relay_upstream_whole_fetches").unwrap_or(0.0));
            std::thread::sleep(Duration::from_millis(20));
        }
        (client.join().unwrap(), most)
    });
    assert_eq!(got.status, 200);
    assert!(got.body == body, "{} bytes", got.body.len());
    eprintln!(
        "whole fetches at most {most}; {} answers of the object",
        origin.count("/v.bin")
    );
    assert_eq!(most, 0.0, "a whole fetch waited for the client");
    assert_eq!(
        relay.metric("relay_upstream_range_ignored_total"),
        ignored,
        "a Range request answered whole after the origin honoured Range"
    );
}

/// An origin that ignores Range, read by a client slower than a chunk per streamed fetch's
/// pause through a memory tier much smaller than the object (1 MiB chunks: 12 of them, a
/// tier of two, so the object is far past what relay's socket takes ahead of the client).
/// The chunks the tier let go before the client read them are fetched again by a Range
/// request the origin answers with the whole body, read from its start: that answer then
/// runs on to the object's end at the client's pace (a whole feed, `relay_upstream::feed`),
/// rather than filling one chunk and leaving each later one to an answer of its own, which
/// made the origin send the object's start once per chunk (a quadratic cost). The client
/// gets every byte right, and the cost shows in `relay_upstream_range_ignored_total` and
/// `relay_upstream_range_skipped_bytes_total`.
#[test]
fn an_origin_that_ignores_range_sends_a_slow_client_its_object_about_twice() {
    const MIB: usize = 1 << 20;
    let origin = Origin::start();
    origin.behaviour.ignore_range.store(true, Ordering::Relaxed);
    let body = pattern(12 * MIB + 5, 33);
    origin.put("/big.bin", Object::new(body.clone(), "big"));
    // A read-ahead of two chunks: the client is more than a pause behind its streamed fetch.
    let relay = small_tier_relay(&origin, "", MIB, 2 * MIB, 2 * MIB);
    // 1 MiB chunks at 3 MB/s: about 350 ms each, past a streamed fetch's 200 ms pause.
    let got = Client::connect_paced(relay.addr, 3_000_000).get("/big.bin");
    assert_eq!(got.status, 200);
    assert!(
        got.body == body,
        "{} of {} bytes",
        got.body.len(),
        body.len()
    );
    let m = relay.metrics();
    let ignored = relay_tests::metric_in(&m, "relay_upstream_range_ignored_total").unwrap_or(0.0);
    let skipped =
        relay_tests::metric_in(&m, "relay_upstream_range_skipped_bytes_total").unwrap_or(0.0);
    let fetched = relay_tests::metric_in(&m, "relay_upstream_bytes_total").unwrap_or(0.0);
    let requests = origin.count("/big.bin");
    eprintln!(
        "a {} byte object read at 3 MB/s through a 2 MiB tier: {requests} requests, \
         {ignored} Range requests answered whole, {skipped} bytes thrown away, {fetched} \
         bytes from the origin",
        body.len()
    );
    assert!(ignored >= 1.0 && skipped > 0.0, "{m}");
    assert!(fetched >= body.len() as f64 + skipped);
    assert!(
        fetched <= 3.0 * body.len() as f64 && requests <= 3,
        "{requests} requests, {fetched} bytes from the origin for {} bytes",
        body.len()
    );
}

/// `If-Match` and `If-Unmodified-Since` (RFC 9110 §13.1.1, §13.1.4) are evaluated against
/// the stored object, cold or cached: a client resuming a download with `Range` and the
/// ETag of the version it has gets 412 when the object is another version now, never bytes
/// of it to append to its own (before, they were ignored: a 206 of the current version).
#[test]
fn if_match_and_if_unmodified_since_answer_412_for_another_version() {
    let origin = Origin::start();
    let body = pattern(3 * CHUNK + 7, 41);
    origin.put("/resume.bin", Object::new(body.clone(), "v2"));
    let relay = Relay::start(&proxy_config(&origin, ""));
    let url = relay.url("/resume.bin");
    // The first request is the miss: evaluated once the object is described.
    for _ in 0..2 {
        let stale = relay_tests::fetch(&url, &["-r", "100-", "-H", "If-Match: \"v1\""]);
        assert_eq!((stale.status, stale.body.len()), (412, 0), "{}", stale.head);
        let current = relay_tests::fetch(&url, &["-r", "100-", "-H", "If-Match: \"v1\", \"v2\""]);
        assert_eq!(current.status, 206, "{}", current.head);
        assert!(current.body == body[100..]);
        let weak = relay_tests::fetch(&url, &["-H", "If-Match: W/\"v2\""]);
        assert_eq!(weak.status, 412, "a weak tag never matches If-Match");
        // A list on two lines is the origin's to judge: served as asked here.
        let split = relay_tests::fetch(&url, &["-H", "If-Match: \"v1\"", "-H", "If-Match: \"v2\""]);
        assert_eq!(split.status, 200, "{}", split.head);
        let any = relay_tests::fetch(&url, &["-H", "If-Match: *"]);
        assert_eq!(any.status, 200);
        // Last-Modified is Tue, 01 Sep 2026 10:00:00 GMT.
        let before = relay_tests::fetch(
            &url,
            &["-H", "If-Unmodified-Since: Mon, 31 Aug 2026 10:00:00 GMT"],
        );
        assert_eq!(before.status, 412);
        let since = relay_tests::fetch(
            &url,
            &["-H", "If-Unmodified-Since: Tue, 01 Sep 2026 10:00:00 GMT"],
        );
        assert!(since.status == 200 && since.body == body);
    }
}
