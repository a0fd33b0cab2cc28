//! What reaches an HTTP origin on a client's behalf: a miss forwards the triggering client's
//! end-to-end request fields (never hop-by-hop ones, nor the ranges, conditionals and Host
//! relay sets itself); later clients are hits served from that one fill; requests with
//! `Authorization` carry it, and are answered from the cache only by a response that allows
//! it (RFC 9111 §3.5).

use relay_tests::client::{Client, Response};
use relay_tests::origin::{Object, Origin};
use relay_tests::{Relay, pattern};
use std::sync::atomic::Ordering;

const CHUNK: usize = 64 * 1024;
/// `origin.read_ahead_bytes` (its default): what a head fetch asks for from the start.
const READ_AHEAD: usize = 16 << 20;

fn proxy_config(origin: &Origin) -> String {
    proxy_config_with(origin, READ_AHEAD)
}

fn proxy_config_with(origin: &Origin, read_ahead: usize) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[cache]\nchunk_size = {CHUNK}\n\
         memory_bytes = 67108864\n\n[origin]\nread_ahead_bytes = {read_ahead}\n\n\
         [[origin.http]]\nurl = \"{}\"\n\
         first_byte_timeout_ms = 2000\nidle_timeout_ms = 2000\nretries = 1\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        origin.url()
    )
}

fn echoing(body: Vec<u8>, etag: &str) -> Object {
    let mut o = Object::new(body, etag);
    o.echo_headers = true;
    o
}

/// An echoing object that may be stored for its client only (`private`).
fn private(body: Vec<u8>, etag: &str) -> Object {
    let mut o = echoing(body, etag);
    o.cache_control = Some("private, max-age=60".into());
    o
}

fn request(relay: &Relay, head: &str) -> Response {
    let mut c = Client::connect(relay.addr);
    c.send(head.as_bytes());
    c.read_response(head.starts_with("HEAD "))
        .expect("response")
}

#[test]
fn a_miss_forwards_the_clients_end_to_end_fields_and_nothing_hop_by_hop() {
    let origin = Origin::start();
    let body = pattern(3000, 81);
    origin.put("/page", echoing(body.clone(), "p1"));
    let relay = Relay::start(&proxy_config(&origin));
    let r = request(
        &relay,
        "GET /page HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: test-agent/1.0\r\n\
         Accept: text/html\r\nAccept-Language: fr-CH, fr;q=0.9\r\n\
         Cookie: session=abc; theme=dark\r\nX-Custom-Trace: t-42\r\n\
         X-Forwarded-For: 203.0.113.9\r\n\
         Connection: keep-alive, X-Hop\r\nX-Hop: one-link-only\r\nKeep-Alive: timeout=5\r\n\
         TE: trailers\r\nAccept-Encoding: gzip\r\nRange: bytes=10-19\r\n\
         If-None-Match: \"other\"\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n",
    );
    // The client's own Range and conditionals are answered by relay from the fill.
    assert_eq!(r.status, 206);
    assert_eq!(r.body, body[10..20]);
    assert_eq!(
        r.header("cache-status"),
        Some("relay; fwd=uri-miss; fwd-status=200; stored")
    );
    let seen = origin.received("/page");
    assert_eq!(seen.len(), 1, "{seen:?}");
    let seen = &seen[0];
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.get("user-agent"), Some("test-agent/1.0"));
    assert_eq!(seen.get("via"), Some("1.1 relay"));
    // The address relay saw, after the chain the client's request carried.
    let xff: Vec<&str> = seen
        .fields
        .iter()
        .filter(|(n, _)| n == "x-forwarded-for")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(xff, ["203.0.113.9", "127.0.0.1"]);
    assert_eq!(seen.get("accept"), Some("text/html"));
    assert_eq!(seen.get("accept-language"), Some("fr-CH, fr;q=0.9"));
    assert_eq!(seen.get("cookie"), Some("session=abc; theme=dark"));
    assert_eq!(seen.get("x-custom-trace"), Some("t-42"));
    // Hop-by-hop fields, and the ones Connection names, stay on the client's connection.
    for hop in ["x-hop", "keep-alive", "te"] {
        assert!(!seen.has(hop), "{hop} reached the origin: {seen:?}");
    }
    assert!(
        !seen.get("connection").is_some_and(|v| v.contains("X-Hop")),
        "{seen:?}"
    );
    // relay's own: the origin's Host, a Range of whole chunks from the start (those the
    // client's range reaches: one), identity, no client conditionals.
    assert_eq!(seen.get("host"), Some(origin.addr.to_string().as_str()));
    assert_eq!(
        seen.get("range"),
        Some(format!("bytes=0-{}", CHUNK - 1).as_str())
    );
    assert_eq!(seen.get("accept-encoding"), Some("identity"));
    assert!(!seen.has("if-none-match") && !seen.has("if-modified-since"));
    // Each field once: the client's User-Agent replaced relay's.
    let agents = seen
        .fields
        .iter()
        .filter(|(n, _)| n == "user-agent")
        .count();
    assert_eq!(agents, 1, "{seen:?}");
    // The origin saw the same (its echo reached the client).
    assert_eq!(r.header("echo-x-custom-trace"), Some("t-42"));
    assert_eq!(r.header("echo-x-hop"), None);

    // A second client with other fields is a hit: the first client's fill serves it.
    let r = request(
        &relay,
        "GET /page HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: other-agent/2.0\r\n\
         X-Custom-Trace: t-43\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body);
    assert_eq!(r.header("cache-status"), Some("relay; hit"));
    assert_eq!(r.header("echo-user-agent"), Some("test-agent/1.0"));
    assert_eq!(origin.count("/page"), 1, "the hit reached the origin");
}

#[test]
fn a_client_without_a_user_agent_gets_relays_on_the_fill() {
    let origin = Origin::start();
    origin.put("/plain", echoing(b"plain".to_vec(), "pl"));
    let relay = Relay::start(&proxy_config(&origin));
    let r = request(&relay, "GET /plain HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((r.status, &r.body[..]), (200, &b"plain"[..]));
    let seen = &origin.received("/plain")[0];
    assert_eq!(seen.get("user-agent"), Some("relay"));
}

#[test]
fn every_chunk_fill_forwards_the_fields_of_the_request_that_started_it() {
    let origin = Origin::start();
    let body = pattern(3 * CHUNK + 10, 82);
    origin.put("/big", Object::new(body.clone(), "b"));
    // A read-ahead of two chunks: the head fetch asks for two, the read-ahead's fetch for
    // the other two.
    let relay = Relay::start(&proxy_config_with(&origin, 2 * CHUNK));
    let r = request(
        &relay,
        "GET /big HTTP/1.1\r\nHost: t\r\nX-Custom-Trace: first\r\nCookie: c=1\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(r.body == body, "the body differs from the origin's");
    let seen = origin.received("/big");
    assert_eq!(
        origin.ranges("/big"),
        [
            format!("bytes=0-{}", 2 * CHUNK - 1),
            format!("bytes={}-{}", 2 * CHUNK, body.len() - 1)
        ]
    );
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(s.get("x-custom-trace"), Some("first"), "chunk {i}");
        assert_eq!(s.get("cookie"), Some("c=1"), "chunk {i}");
    }
    // A later client reads it all from memory.
    let r = request(
        &relay,
        "GET /big HTTP/1.1\r\nHost: t\r\nX-Custom-Trace: second\r\n\r\n",
    );
    assert!(r.body == body);
    assert_eq!(r.header("cache-status"), Some("relay; hit"));
    assert_eq!(origin.count("/big"), 2);
}

/// RFC 9111 §3.5: a request with credentials is answered from the cache only by a response
/// that says it may be (`public`, `s-maxage`, `must-revalidate`), and its answer is stored
/// only then; otherwise the answer is its client's alone.
#[test]
fn requests_with_authorization_are_answered_from_the_cache_only_as_the_answer_allows() {
    let origin = Origin::start();
    let body = pattern(5000, 83);
    origin.put("/account", echoing(body.clone(), "acct"));
    let relay = Relay::start(&proxy_config(&origin));
    let authorized = "GET /account HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer token-1\r\n\
                      X-Custom-Trace: auth\r\n\r\n";
    for n in 1..=2 {
        let r = request(&relay, authorized);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, body);
        assert_eq!(r.header("etag"), Some("\"acct\""));
        assert_eq!(r.header("echo-authorization"), Some("Bearer token-1"));
        assert_eq!(r.header("echo-via"), Some("1.1 relay"));
        assert_eq!(r.header("echo-x-forwarded-for"), Some("127.0.0.1"));
        // Each one reached the origin, credentials and all: `max-age` alone does not let
        // the answer serve another request with credentials.
        assert_eq!(origin.count("/account"), n);
        let seen = origin.received("/account");
        let last = seen.last().expect("a request");
        assert_eq!(last.get("authorization"), Some("Bearer token-1"));
        assert_eq!(last.get("x-custom-trace"), Some("auth"));
    }
    // Nothing was stored: a request without credentials is a miss, then a hit.
    let r = request(&relay, "GET /account HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(
        r.header("cache-status"),
        Some("relay; fwd=uri-miss; fwd-status=200; stored")
    );
    assert_eq!(origin.count("/account"), 3);
    let r = request(&relay, "GET /account HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.header("cache-status"), Some("relay; hit"));
    assert_eq!(r.header("echo-authorization"), None);
    // Even now that it is cached, a request with credentials goes to the origin itself.
    let r = request(&relay, authorized);
    assert_eq!(
        r.header("cache-status"),
        Some("relay; fwd=request; fwd-status=200; detail=authorization")
    );
    assert_eq!(r.header("echo-authorization"), Some("Bearer token-1"));
    assert_eq!(origin.count("/account"), 4);
    let seen = origin.received("/account");
    assert!(
        !seen.last().expect("a request").has("range"),
        "a pass-through asks for what the client asked"
    );

    // An answer that says it may serve requests with credentials is stored from one, and
    // answers other clients, with credentials or without.
    let mut shared = Object::new(pattern(3000, 84), "pub");
    shared.cache_control = Some("public, max-age=300".into());
    origin.put("/public", shared);
    let ask = |auth: &str| {
        request(
            &relay,
            &format!("GET /public HTTP/1.1\r\nHost: t\r\n{auth}\r\n"),
        )
    };
    assert_eq!(
        ask("Authorization: Bearer token-1\r\n").body,
        pattern(3000, 84)
    );
    assert_eq!(origin.count("/public"), 1);
    for auth in ["Authorization: Bearer token-2\r\n", ""] {
        let r = ask(auth);
        assert_eq!(r.header("cache-status"), Some("relay; hit"), "{auth}");
        assert_eq!(r.body, pattern(3000, 84));
    }
    assert_eq!(origin.count("/public"), 1);

    // HEAD with credentials: the origin's head, no body, and the connection stays usable.
    let mut c = Client::connect(relay.addr);
    c.send(b"HEAD /account HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer token-1\r\n\r\n");
    let r = c.read_response(true).expect("HEAD response");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("5000"));
    assert_eq!(r.header("etag"), Some("\"acct\""));
    let seen = origin.received("/account");
    assert_eq!(seen.last().map(|s| s.method.as_str()), Some("HEAD"));
    c.send(b"GET /account HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer token-1\r\n\r\n");
    let r = c.read_response(false).expect("GET after HEAD");
    assert_eq!(r.body, body);

    // A range with credentials: the origin's 206 as it is.
    c.send(
        b"GET /account HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer token-1\r\n\
          Range: bytes=100-199\r\n\r\n",
    );
    let r = c.read_response(false).expect("ranged response");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, body[100..200]);
    assert_eq!(r.header("content-range"), Some("bytes 100-199/5000"));
    let seen = origin.received("/account");
    assert_eq!(
        seen.last().and_then(|s| s.get("range")),
        Some("bytes=100-199")
    );
}

#[test]
fn a_fill_started_with_a_vary_value_still_gives_other_clients_their_variant() {
    let origin = Origin::start();
    let mut o = Object::new(b"hello (default)".to_vec(), "lang");
    o.by_language = vec![("fr".into(), b"bonjour".to_vec())];
    origin.put("/greet", o);
    // Slow heads, so the second client joins the first one's fetch.
    origin.behaviour.head_delay_ms.store(300, Ordering::Relaxed);
    let relay = Relay::start(&proxy_config(&origin));
    let addr = relay.addr;
    let french = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.send(b"GET /greet HTTP/1.1\r\nHost: t\r\nAccept-Language: fr\r\n\r\n");
        c.read_response(false).expect("response")
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    let plain = request(&relay, "GET /greet HTTP/1.1\r\nHost: t\r\n\r\n");
    let french = french.join().expect("client thread");
    assert_eq!(french.body, b"bonjour");
    assert_eq!(plain.body, b"hello (default)");
    // The first fetch carried the client's value and was kept as that variant; the base
    // entry was fetched without it.
    let seen = origin.received("/greet");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].get("accept-language"), Some("fr"));
    assert!(!seen[1].has("accept-language"));
    origin.behaviour.head_delay_ms.store(0, Ordering::Relaxed);
    for (lang, want) in [("fr", &b"bonjour"[..]), ("", &b"hello (default)"[..])] {
        let extra = if lang.is_empty() {
            String::new()
        } else {
            format!("Accept-Language: {lang}\r\n")
        };
        let r = request(
            &relay,
            &format!("GET /greet HTTP/1.1\r\nHost: t\r\n{extra}\r\n"),
        );
        assert_eq!(r.body, want, "{lang:?}");
        assert_eq!(r.header("cache-status"), Some("relay; hit"), "{lang:?}");
    }
    assert_eq!(origin.count("/greet"), 2);
}

/// Two clients miss the same object at once, each with its own cookie; the origin answers
/// `private` (a page for one user). The fetch went out with the first client's cookie, so
/// its answer is that client's alone: the other client must get its own, never the first
/// one's (the waiters of one fetch share only what may be stored).
#[test]
fn a_private_answer_reaches_only_the_client_whose_fields_fetched_it() {
    let origin = Origin::start();
    origin.put("/account", private(pattern(3000, 91), "priv"));
    // Both requests arrive while the first fetch waits for its head.
    origin.behaviour.head_delay_ms.store(400, Ordering::Relaxed);
    let relay = Relay::start(&proxy_config(&origin));
    let ask = |cookie: &'static str| {
        let addr = relay.addr;
        std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            let head = format!("GET /account HTTP/1.1\r\nHost: h\r\nCookie: {cookie}\r\n\r\n");
            c.send(head.as_bytes());
            c.read_response(false).expect("response")
        })
    };
    let a = ask("session=alice");
    std::thread::sleep(std::time::Duration::from_millis(100));
    let b = ask("session=bob");
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a.header("echo-cookie"), Some("session=alice"));
    // Fetched for alice, never stored; bob's request asked for itself.
    assert_eq!(
        a.header("cache-status"),
        Some("relay; fwd=uri-miss; fwd-status=200")
    );
    assert_eq!(
        b.header("echo-cookie"),
        Some("session=bob"),
        "bob got alice's page"
    );
    assert_eq!(
        b.header("cache-status"),
        Some("relay; fwd=uri-miss; fwd-status=200; detail=not-shared")
    );
    let seen = origin.received("/account");
    let cookies: Vec<_> = seen.iter().filter_map(|r| r.get("cookie")).collect();
    assert_eq!(cookies.len(), 2, "{seen:?}");
    assert!(cookies.contains(&"session=alice") && cookies.contains(&"session=bob"));
    // Nothing was stored: a third client is fetched for too.
    let c = request(
        &relay,
        "GET /account HTTP/1.1\r\nHost: h\r\nCookie: session=carol\r\n\r\n",
    );
    assert_eq!(c.header("echo-cookie"), Some("session=carol"));
    assert_eq!(origin.count("/account"), 3);
}

/// A response that sets a cookie is not stored (the cookie is for one client), unless the
/// origin names `Set-Cookie` in `private=` or `no-cache=`: then it is stored without it,
/// and only the client whose request fetched it gets the cookie.
#[test]
fn a_response_setting_a_cookie_is_not_shared() {
    let origin = Origin::start();
    let body = pattern(2000, 92);
    let mut o = Object::new(body.clone(), "sc");
    o.cache_control = Some("max-age=60".into());
    o.extra_headers = vec![("Set-Cookie".into(), "session=for-alice".into())];
    origin.put("/login", o);
    let mut o = Object::new(body.clone(), "sc2");
    o.cache_control = Some("max-age=60, private=\"Set-Cookie\"".into());
    o.extra_headers = vec![("Set-Cookie".into(), "session=for-alice".into())];
    origin.put("/home", o);
    let relay = Relay::start(&proxy_config(&origin));
    for _ in 0..2 {
        let r = request(&relay, "GET /login HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(r.body, body);
        assert_eq!(r.header("set-cookie"), Some("session=for-alice"));
    }
    assert_eq!(
        origin.count("/login"),
        2,
        "a Set-Cookie response was served from cache"
    );
    let first = request(&relay, "GET /home HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(first.body, body);
    // The client whose request fetched it gets its cookie; nobody after it does.
    assert_eq!(first.header("set-cookie"), Some("session=for-alice"));
    let second = request(&relay, "GET /home HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(second.body, body);
    assert_eq!(second.header("cache-status"), Some("relay; hit"));
    assert_eq!(
        second.header("set-cookie"),
        None,
        "the named cookie was shared"
    );
    assert_eq!(origin.count("/home"), 1);
}

/// An origin that announces an absurd `Content-Length` (here 1 TiB) and sends the true
/// body: a fill takes exactly the bytes its `Content-Range` names and stops there (the
/// client gets the object, whole and right); a pass-through streams what the origin sends
/// in one window of memory and, when the origin closes short of its word, cuts its client
/// (never a short body passed off as whole); relay keeps serving.
#[test]
fn an_absurd_content_length_from_the_origin_is_never_a_crash() {
    use std::io::{Read, Write};
    let origin = Origin::start();
    let body = pattern(5000, 93);
    origin.put("/big-lie", Object::new(body.clone(), "lie"));
    origin
        .behaviour
        .claim_length
        .store(1 << 40, Ordering::Relaxed);
    let relay = Relay::start(&proxy_config(&origin));
    let fill = request(&relay, "GET /big-lie HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(fill.status, 200);
    assert_eq!(fill.body, body);
    let mut pass = std::net::TcpStream::connect(relay.addr).unwrap();
    pass.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    pass.write_all(b"GET /big-lie HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    pass.read_to_end(&mut got)
        .expect("relay cuts the connection when the origin ends short");
    let at = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    let head = String::from_utf8_lossy(&got[..at]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-length: 1099511627776\r\n"), "{head}");
    assert_eq!(got[at..], body[..], "what the origin sent, and no more");
    // The origin mends its ways: the same relay passes the request through.
    origin.behaviour.claim_length.store(0, Ordering::Relaxed);
    let ok = request(
        &relay,
        "GET /big-lie HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer x\r\n\r\n",
    );
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body, body);
}

/// A private answer spanning several chunks from an origin that ignores Range (the whole
/// body in one response): its client reads every chunk from that one fetch — the chunks
/// are keyed by a version only this fetch has — and a later client gets a fetch of its own.
#[test]
fn a_private_multi_chunk_answer_is_fetched_once_for_its_client_only() {
    let origin = Origin::start();
    let body = pattern(3 * CHUNK + 5000, 94);
    origin.put("/statement.pdf", private(body.clone(), "pm"));
    origin.behaviour.ignore_range.store(true, Ordering::Relaxed);
    let relay = Relay::start(&proxy_config(&origin));
    let ask = |cookie: &str| {
        request(
            &relay,
            &format!("GET /statement.pdf HTTP/1.1\r\nHost: h\r\nCookie: {cookie}\r\n\r\n"),
        )
    };
    let a = ask("session=alice");
    assert_eq!(a.status, 200);
    assert!(a.body == body, "alice's body differs");
    assert_eq!(a.header("echo-cookie"), Some("session=alice"));
    assert_eq!(
        origin.count("/statement.pdf"),
        1,
        "chunks were fetched again"
    );
    let b = ask("session=bob");
    assert!(b.body == body, "bob's body differs");
    assert_eq!(b.header("echo-cookie"), Some("session=bob"));
    assert_eq!(origin.count("/statement.pdf"), 2);
}

/// The same from an origin that honours Range: the head fetch's span (4 chunks) holds the
/// start, kept for its client; the client's read-ahead fetches the rest in runs of 16,
/// asking nothing twice; each client gets its own answer, whole. (A client of such an
/// answer used to wait forever for a chunk past the first.)
#[test]
fn a_private_ranged_answer_is_whole_for_each_client() {
    let origin = Origin::start();
    let body = pattern(40 * CHUNK + 5000, 95);
    origin.put("/statement.pdf", private(body.clone(), "pr"));
    let relay = Relay::start(&proxy_config_with(&origin, 4 * CHUNK));
    for cookie in ["session=alice", "session=bob"] {
        let r = request(
            &relay,
            &format!("GET /statement.pdf HTTP/1.1\r\nHost: h\r\nCookie: {cookie}\r\n\r\n"),
        );
        assert_eq!(r.status, 200);
        assert!(r.body == body, "{cookie}: the body differs");
        assert_eq!(r.header("echo-cookie"), Some(cookie));
    }
    let runs = [
        format!("bytes=0-{}", 4 * CHUNK - 1),
        format!("bytes={}-{}", 4 * CHUNK, 20 * CHUNK - 1),
        format!("bytes={}-{}", 20 * CHUNK, 36 * CHUNK - 1),
        format!("bytes={}-{}", 36 * CHUNK, body.len() - 1),
    ];
    assert_eq!(
        origin.ranges("/statement.pdf"),
        [&runs[..], &runs[..]].concat()
    );
}

/// A private answer without a strong validator, whose one 206 (the head fetch's span)
/// holds all of a body longer than the fetch runs ahead of its client: the body comes from
/// that one answer, paced by its client (no chunk can be asked for again: no validator to
/// combine answers under).
#[test]
fn a_private_answer_in_one_206_without_a_strong_validator_is_whole() {
    let origin = Origin::start();
    let body = pattern(300 * CHUNK + 123, 96);
    let mut o = private(body.clone(), "w");
    o.etag = "W/\"weak\"".into();
    o.last_modified = None;
    origin.put("/weak.bin", o);
    let relay = Relay::start(&proxy_config_with(&origin, 512 * CHUNK));
    let r = request(&relay, "GET /weak.bin HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.body == body, "the body differs");
    assert_eq!(
        origin.count("/weak.bin"),
        1,
        "{:?}",
        origin.ranges("/weak.bin")
    );
}

/// A response that may not be stored keeps every field for its own client, the ones a
/// `no-cache=` names included.
#[test]
fn an_unstored_answer_keeps_its_named_fields_for_its_client() {
    let origin = Origin::start();
    let mut o = Object::new(b"hi".to_vec(), "nc");
    // No freshness at all: not stored.
    o.cache_control = Some("no-cache=\"Set-Cookie\"".into());
    o.last_modified = None;
    o.extra_headers = vec![("Set-Cookie".into(), "session=for-you".into())];
    origin.put("/once", o);
    let relay = Relay::start(&proxy_config(&origin));
    for _ in 0..2 {
        let r = request(&relay, "GET /once HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(r.body, b"hi");
        assert_eq!(r.header("set-cookie"), Some("session=for-you"));
    }
    assert_eq!(origin.count("/once"), 2);
}

/// Passed-through bodies stream through one window of memory each (2 MiB, reserved with the
/// 896 KiB its upstream connection and job hold besides), however long: a 16 MB body passes
/// through a 6 MiB `origin.pass_buffer_bytes` (two windows, not three). Any client can make a
/// GET pass through with `Cache-Control: no-store`, and the budget bounds the windows held: two
/// clients that take their heads and stop reading hold both windows, so a third pass gets
/// 503; the stalled clients then read their bodies whole and right, and passes work again.
/// (All from one address: the per-client share is off here, `fair.rs` tests it.)
#[test]
fn passed_through_bodies_are_bounded_in_memory() {
    use std::io::Read;
    let origin = Origin::start();
    let body = pattern(16 << 20, 95);
    origin.put("/big", Object::new(body.clone(), "big"));
    let config = proxy_config(&origin).replace(
        "[origin]\n",
        "[origin]\npass_buffer_bytes = \"6 MiB\"\npass_buffer_per_client = 0\n",
    );
    let relay = Relay::start(&config);
    let ask = "GET /big HTTP/1.1\r\nHost: h\r\nCache-Control: no-store\r\n\r\n";
    let whole = request(&relay, ask);
    assert_eq!(whole.status, 200);
    assert!(
        whole.body == body,
        "a 16 MB pass through a 6 MiB budget differs"
    );
    // Two clients take their response heads, then stop reading.
    let stall = || {
        let (s, head, got) = relay_tests::client::head_only(relay.addr, ask);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        (s, got)
    };
    let stalled = [stall(), stall()];
    let refused = request(&relay, ask);
    assert_eq!(
        refused.status, 503,
        "a third window fitted in a budget of two"
    );
    // The stalled clients read their whole bodies, right.
    for (mut s, mut got) in stalled {
        let mut buf = vec![0u8; 1 << 16];
        while got.len() < body.len() {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "cut short");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            got[..body.len()] == body[..],
            "a stalled client's body differs"
        );
    }
    // Their windows are given back: a pass works again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let again = loop {
        let r = request(&relay, ask);
        if r.status == 200 || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(again.status, 200);
    assert!(again.body == body);
}

/// A client that leaves before its passed-through response's head arrives never reads the
/// body: the upstream notices nobody will (within about a second of its window filling)
/// and gives the window back to `origin.pass_buffer_bytes`, instead of holding it until
/// the stall limit.
#[test]
fn a_pass_whose_client_left_before_its_head_gives_its_window_back() {
    use std::io::Write;
    let origin = Origin::start();
    let body = pattern(16 << 20, 96);
    origin.put("/big", Object::new(body.clone(), "big"));
    let config =
        proxy_config(&origin).replace("[origin]\n", "[origin]\npass_buffer_bytes = \"4 MiB\"\n");
    let relay = Relay::start(&config);
    let ask = "GET /big HTTP/1.1\r\nHost: h\r\nCache-Control: no-store\r\n\r\n";
    origin.behaviour.head_delay_ms.store(300, Ordering::Relaxed);
    // Two clients ask and leave at once: their two windows fill the 4 MiB budget.
    for _ in 0..2 {
        let mut s = std::net::TcpStream::connect(relay.addr).unwrap();
        s.write_all(ask.as_bytes()).unwrap();
    }
    // The heads arrive at 300 ms; the windows cannot be given back before about 1.3 s.
    std::thread::sleep(std::time::Duration::from_millis(900));
    origin.behaviour.head_delay_ms.store(0, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let deadline = started + std::time::Duration::from_secs(10);
    let mut refused = 0;
    let r = loop {
        let r = request(&relay, ask);
        if r.status == 200 || std::time::Instant::now() > deadline {
            break r;
        }
        refused += usize::from(r.status == 503);
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(refused > 0, "the orphaned passes never held the budget");
    assert_eq!(r.status, 200, "the orphaned windows were not given back");
    assert!(r.body == body);
    eprintln!(
        "orphaned pass windows given back {:?} after the heads arrived",
        started.elapsed() + std::time::Duration::from_millis(600)
    );
}

/// RFC 9111 §4.3.5: a HEAD the origin answers (passed through, here for a request with
/// credentials) invalidates the stored response whose validators it contradicts; one it
/// agrees with stays.
#[test]
fn a_head_answer_that_contradicts_the_stored_response_invalidates_it() {
    let origin = Origin::start();
    origin.put("/doc", Object::new(pattern(2000, 85), "v1"));
    let relay = Relay::start(&proxy_config(&origin));
    let get = "GET /doc HTTP/1.1\r\nHost: t\r\n\r\n";
    assert_eq!(request(&relay, get).body, pattern(2000, 85));
    let head = b"HEAD /doc HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer x\r\n\r\n";
    let mut c = Client::connect(relay.addr);
    c.send(head);
    assert_eq!(c.read_response(true).expect("HEAD").status, 200);
    assert_eq!(origin.count("/doc"), 2);
    assert_eq!(
        request(&relay, get).header("cache-status"),
        Some("relay; hit")
    );
    // The object changes at the origin; a HEAD sees its new validator.
    origin.put("/doc", Object::new(pattern(2000, 86), "v2"));
    c.send(head);
    let r = c.read_response(true).expect("HEAD");
    assert_eq!(r.header("etag"), Some("\"v2\""));
    let r = request(&relay, get);
    assert_eq!(r.body, pattern(2000, 86), "the stored v1 was invalidated");
    assert_eq!(origin.count("/doc"), 4);
}
